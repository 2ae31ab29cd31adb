"""Training past one process: Ray Data shards and Ray Train's XGBoost integration.

Below ``settings.data_parallel_min_rows`` clean rows, training reads its rows into one process
(ray_jobs.challenger -> ray_jobs.tune.train_model), as it always did. From there on no process
ever holds every row:

* **split**: the clean batches are one Ray Dataset; each row gets its split, its out-of-fold fold
  and a sample draw from the hash of its own values (ray_jobs.split.draws), block by block.
* **bounded samples**: the search, the bag choice and the price range's scale model run on a hash
  sample of the training and validation rows (``tune_sample_rows``), the price range is calibrated
  on a sample of the calibration rows and the challenger is evaluated on a sample of the test rows
  (``holdout_sample_rows`` each), the comparable homes are a sample too (``comparables_rows``). The
  driver holds these samples and nothing else: its memory does not grow with the data.
* **the transform**: fitted once on all training + validation rows from sums and counts per
  (encoding, fold, key) that Ray Data adds up (rayestate.features.encoding_stats: a few rows per
  distinct ZIP, city or broker, not per listing); each block then gets its features with
  out-of-fold encodings in a Ray Data task.
* **the final fit**: Ray Train's XGBoostTrainer, ``train_workers`` workers, each reading its shard
  of the feature blocks; XGBoost's collective (Rabit, set up by Ray Train) merges the histogram
  sketches and gradients, so the boosters are the ones a single process would grow on all rows,
  up to the sketch's approximation. The bag's members (chosen size, chosen rounds) are grown one
  after another on the same shards.

The model that comes out is the same kind of PriceModel the one-process path makes, finished by
the same code (interval, serving budget cut, calibration) in ray_jobs.tune.train_model.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from ray_jobs.augment import with_masked_copies
from ray_jobs.split import CALIBRATION_FRACTION, TEST_FRACTION, VALID_FRACTION, draws, row_keys, splits_of
from rayestate.comparables import ComparablesIndex
from rayestate.features import FEATURES, STATS_COLUMNS, FeatureTransform, fit_stats, frame_matrix, log_price
from rayestate.model import FEATURE_TYPES, PriceModel
from rayestate.schema import RAW_COLUMNS
from rayestate.settings import Settings
from rayestate.store import open_store

SPLIT_COLUMN, FOLD_COLUMN, DRAW_COLUMN = "_split", "_fold", "_draw"
LABEL = "log_price"
#: Share of all rows in each split (ray_jobs.split), to turn a wanted sample size into a draw threshold.
SPLIT_SHARES = {
    "test": TEST_FRACTION,
    "valid": VALID_FRACTION,
    "calibration": CALIBRATION_FRACTION,
    "train": 1 - TEST_FRACTION - VALID_FRACTION - CALIBRATION_FRACTION,
}
#: Rows per batch in Ray Data tasks: big enough for vectorised pandas, small enough for many tasks.
BATCH_ROWS = 50_000
#: Rows per batch when taking the transform's sums: larger, so a key's rows meet in fewer batches.
STATS_BATCH_ROWS = 200_000
BOOSTERS_DIR = "boosters"


# --- rows: split, fold, samples --------------------------------------------------------------


def tag_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """Ray Data UDF: the raw columns plus each row's split, out-of-fold fold and sample draw."""
    split, fold, draw = draws(row_keys(batch))
    out = batch[list(RAW_COLUMNS)].copy()
    out[SPLIT_COLUMN] = splits_of(split, (TEST_FRACTION, VALID_FRACTION, CALIBRATION_FRACTION))
    out[FOLD_COLUMN] = fold
    out[DRAW_COLUMN] = draw
    return out


def tagged(dataset):
    """The clean rows with their tags, computed once and kept in the object store (spilled past its size)."""
    return dataset.map_batches(tag_rows, batch_format="pandas", batch_size=BATCH_ROWS).materialize()


def _rows_of(batch: pd.DataFrame, splits: tuple[str, ...], below: float) -> pd.DataFrame:
    """Ray Data UDF: rows of ``splits`` whose sample draw is below ``below``."""
    return batch[batch[SPLIT_COLUMN].isin(splits) & (batch[DRAW_COLUMN] < below)]


def split_rows(rows, splits: tuple[str, ...]):
    """The rows of some splits, as a Ray Dataset (still distributed)."""
    return rows.map_batches(_rows_of, batch_format="pandas", fn_kwargs={"splits": splits, "below": math.inf})


def sample(rows, splits: tuple[str, ...], *, total_rows: int, most: int) -> pd.DataFrame:
    """A hash sample of about ``most`` rows of ``splits`` (never more), as one pandas frame in this process.

    Rows are kept when their sample draw is below most / expected rows, so the sample is the same
    whatever the blocks, and a row sampled for the search is sampled for it in every run.
    """
    expected = total_rows * sum(SPLIT_SHARES[s] for s in splits)
    below = min(1.0, most / max(expected, 1.0)) * 1.02  # a hair over, then cut exactly
    picked = rows.map_batches(_rows_of, batch_format="pandas", fn_kwargs={"splits": splits, "below": below})
    frame = picked.limit(most).to_pandas()
    return frame.drop(columns=[SPLIT_COLUMN, FOLD_COLUMN, DRAW_COLUMN]).reset_index(drop=True)


# --- the transform, fitted from sums -----------------------------------------------------------


def _block_stats(batch: pd.DataFrame) -> pd.DataFrame:
    """Ray Data UDF: the encoding sums of one block's rows, per fold (rayestate.features.encoding_stats)."""
    return fit_stats(batch, folds=batch[FOLD_COLUMN].to_numpy())


def fit_transform_stats(rows) -> pd.DataFrame:
    """encoding_stats of every row of a Ray Dataset, added up by Ray Data (one row per encoding, fold, key, parent)."""
    keys = list(STATS_COLUMNS[:4])
    # Fewer, larger batches give fewer partial sums to shuffle: at 400k resampled rows 0.8M partial
    # rows instead of 1.5M, and 28% less time computing them (the whole step at 2.2M: 59 s -> 48 s).
    per_block = rows.map_batches(_block_stats, batch_format="pandas", batch_size=STATS_BATCH_ROWS)
    totals = per_block.groupby(keys).sum(["sum", "count"]).to_pandas()
    totals = totals.rename(columns={"sum(sum)": "sum", "sum(count)": "count"})
    return totals[list(STATS_COLUMNS)].astype({"fold": "int64", "sum": "float64", "count": "int64"})


@dataclass(frozen=True)
class FittedTransform:
    """The transform on all rows and, per fold, the one fitted without that fold (out-of-fold encodings)."""

    transform: FeatureTransform
    partials: list[FeatureTransform | None]

    @classmethod
    def of(cls, stats: pd.DataFrame) -> FittedTransform:
        return cls(FeatureTransform.from_stats(stats), FeatureTransform.out_of_fold_partials(stats))


def feature_block(batch: pd.DataFrame, fitted: FittedTransform, augment: bool, seed: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: one block's training features (out-of-fold encodings, masked copies) and labels.

    Masked copies (ray_jobs.augment) are added per block, at the block's own missing-size share:
    blocks are random samples of the rows, so the whole gets about the share one process would add.
    """
    transform = fitted.transform
    matrix = transform.out_of_fold_matrix(batch, batch[FOLD_COLUMN].to_numpy(), fitted.partials)
    y = log_price(batch["price"])
    if augment:
        # The block's own seed: the first row's draw (a pure function of that row), so reruns agree.
        block_seed = seed + int(batch[DRAW_COLUMN].iloc[0] * 2**31) if len(batch) else seed
        frame = transform.to_frame({name: matrix[:, j] for j, name in enumerate(FEATURES)})
        frame, y, _ = with_masked_copies(frame, y, batch.reset_index(drop=True), seed=block_seed)
        matrix = frame_matrix(frame)
    out = {name: matrix[:, j].astype("float32") for j, name in enumerate(FEATURES)}
    out[LABEL] = y.astype("float32")
    return out


def feature_rows(rows, fitted: FittedTransform, *, augment: bool, seed: int):
    """The training matrix as a Ray Dataset (float32 feature columns + label), computed block by block."""
    return rows.map_batches(
        feature_block,
        batch_format="pandas",
        batch_size=BATCH_ROWS,
        fn_kwargs={"fitted": fitted, "augment": augment, "seed": seed},
    )


# --- the data-parallel fit ---------------------------------------------------------------------


def _shard_matrix(shard) -> tuple[np.ndarray, np.ndarray]:
    """A worker's shard as one float32 matrix and its labels (about rows / workers rows)."""
    xs, ys = [], []
    for batch in shard.iter_batches(batch_size=BATCH_ROWS, batch_format="numpy"):
        xs.append(np.column_stack([batch[name] for name in FEATURES]))
        ys.append(batch[LABEL])
    if not xs:
        return np.empty((0, len(FEATURES)), dtype="float32"), np.empty(0, dtype="float32")
    return np.concatenate(xs), np.concatenate(ys)


def _train_per_worker(config: dict) -> None:
    """Ray Train loop: grow the bag's boosters on this worker's shard, in XGBoost's collective."""
    import ray.train

    x, y = _shard_matrix(ray.train.get_dataset_shard("train"))
    dtrain = xgb.QuantileDMatrix(
        x, y, feature_names=list(FEATURES), feature_types=FEATURE_TYPES, enable_categorical=True,
        max_bin=config["params"].get("max_bin", 256),
    )  # fmt: skip
    del x
    params, first_seed = config["params"], int(config["params"].get("seed", 0))
    boosters = [
        xgb.train({**params, "seed": first_seed + i}, dtrain, config["rounds"], verbose_eval=False)
        for i in range(config["bag_size"])
    ]
    metrics = {"rows": int(dtrain.num_row()), "rank": ray.train.get_context().get_world_rank()}
    if ray.train.get_context().get_world_rank() == 0:  # every rank holds the same boosters
        with tempfile.TemporaryDirectory() as directory:
            for i, booster in enumerate(boosters):
                booster.save_model(Path(directory, f"booster-{i}.ubj"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    else:
        ray.train.report(metrics)


def train_workers(settings: Settings, rows: int) -> int:
    """How many Ray Train workers fit ``rows`` training rows: the setting, or one per ``train_rows_per_worker``.

    At least two (the point is more than one process) and at most the CPUs the cluster has for them.
    """
    import ray

    if settings.train_workers:
        return settings.train_workers
    wanted = max(2, math.ceil(rows / settings.train_rows_per_worker))
    cpus = int(ray.cluster_resources().get("CPU", 1) // settings.train_worker_cpus)
    return max(1, min(wanted, cpus))


def fit_boosters(features, settings: Settings, params: dict, rounds: int, bag_size: int, *, workers: int) -> list:
    """The bag's boosters grown data-parallel over a feature Dataset with Ray Train's XGBoostTrainer."""
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    store = open_store(settings)
    cpus = settings.train_worker_cpus
    trainer = XGBoostTrainer(
        _train_per_worker,
        train_loop_config={
            "params": {**params, "nthread": max(1, int(cpus))},
            "rounds": int(rounds),
            "bag_size": int(bag_size),
        },
        datasets={"train": features},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": cpus}, placement_strategy="SPREAD"
        ),
        run_config=ray.train.RunConfig(
            name=f"fit-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}",
            storage_path=store.path("train"),
            storage_filesystem=store.fs,
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the data-parallel fit reported no boosters: {result.error}")
    boosters = []
    with result.checkpoint.as_directory() as directory:
        for i in range(bag_size):
            booster = xgb.Booster()
            booster.load_model(Path(directory, f"booster-{i}.ubj"))
            boosters.append(booster)
    return boosters


@dataclass
class DataParallelFit:
    """The final fit on every training + validation row: ray_jobs.tune.train_model's ``final_fit``."""

    rows: object  # the tagged train + valid rows (a Ray Dataset)
    row_count: int
    comparables: pd.DataFrame
    settings: Settings

    def __call__(self, params: dict, rounds: int, bag_size: int, meta: dict) -> PriceModel:
        from ray_jobs.fit import samples_randomly

        settings = self.settings
        fitted = FittedTransform.of(fit_transform_stats(self.rows))
        # Computed before the trainer starts: its workers then hold the CPUs, and a Ray Data task still
        # waiting for one would wait for ever. The blocks stay in the object store (spilled past its size).
        features = feature_rows(
            self.rows, fitted, augment=settings.augment_missing_sizes, seed=settings.seed
        ).materialize()
        if params.get("objective") == "reg:pseudohubererror":
            params = {**params, "base_score": fitted.transform.target_means.get("price", 0.0)}
        bag_size = bag_size if samples_randomly(params) else 1
        workers = train_workers(settings, self.row_count)
        print(f"[train] data-parallel fit: {self.row_count:,} rows on {workers} Ray Train workers", flush=True)
        boosters = fit_boosters(features, settings, params, rounds, bag_size, workers=workers)
        meta = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "training_rows": self.row_count,
            "rounds": rounds,
            "params": {k: v for k, v in params.items() if k != "nthread"},
            "bag_size": bag_size,
            "data_parallel": {"workers": workers, "worker_cpus": settings.train_worker_cpus},
            **meta,
        }
        comparables = ComparablesIndex.build(self.comparables, max_rows=settings.comparables_rows, seed=settings.seed)
        return PriceModel(boosters=boosters, transform=fitted.transform, meta=meta, comparables=comparables)


# --- what training reads, at scale ---------------------------------------------------------------


@dataclass
class Inputs:
    """What a data-parallel training round reads in this process (bounded samples) and the fit over all rows."""

    train: pd.DataFrame
    valid: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    final_fit: DataParallelFit


def inputs(settings: Settings, dataset, total_rows: int) -> Inputs:
    """Tag the clean rows (a Ray Dataset of ``total_rows`` rows) and draw the samples this process holds."""
    rows = tagged(dataset)
    most_valid = math.ceil(settings.tune_sample_rows * SPLIT_SHARES["valid"] / SPLIT_SHARES["train"])
    fit_rows = split_rows(rows, ("train", "valid"))  # a filter over the tagged blocks, run when read
    return Inputs(
        train=sample(rows, ("train",), total_rows=total_rows, most=settings.tune_sample_rows),
        valid=sample(rows, ("valid",), total_rows=total_rows, most=most_valid),
        calibration=sample(rows, ("calibration",), total_rows=total_rows, most=settings.holdout_sample_rows),
        test=sample(rows, ("test",), total_rows=total_rows, most=settings.holdout_sample_rows),
        final_fit=DataParallelFit(
            rows=fit_rows,
            row_count=fit_rows.count(),
            comparables=sample(rows, ("train", "valid"), total_rows=total_rows, most=settings.comparables_rows),
            settings=settings,
        ),
    )

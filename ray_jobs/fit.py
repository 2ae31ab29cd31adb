"""Fitting the price model: XGBoost parameters, one booster, and the final bag.

The model is XGBoost ``hist`` with native categoricals on log price; missing values are routed
natively. The feature transform is fitted on the training rows only (out-of-fold encodings for
those rows themselves, see rayestate.features). Ray Tune's trials (ray_jobs.tune) and the final
refit both call :func:`train_booster`, so a trial and the served model are the same kind of model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import xgboost as xgb

from ray_jobs.augment import with_masked_copies
from rayestate.comparables import ComparablesIndex
from rayestate.features import FeatureTransform, log_price
from rayestate.model import PriceModel

EARLY_STOPPING_ROUNDS = 50
#: A bigger home never lowers the price: every feature that grows with living area is
#: constrained to raise it (tests/test_model_behaviour.py checks this on the real sample).
MONOTONE_IN_HOUSE_SIZE = {
    "house_size": 1, "sqft_per_bed": 1, "te_zip_ppsf_x_size": 1, "te_city_ppsf_x_size": 1, "te_broker_ppsf_x_size": 1,
}  # fmt: skip
FIXED_PARAMS = {
    "tree_method": "hist", "eval_metric": "mae", "max_bin": 256, "monotone_constraints": MONOTONE_IN_HOUSE_SIZE,
}  # fmt: skip
OBJECTIVES = ("reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror")
#: The first configurations an unconstrained search tries, found by hand on the real sample
#: (validation MdAPE 0.194 for the absolute-error one, 0.204 for squared error).
DEFAULT_CONFIG = {
    "eta": 0.06, "max_depth": 10, "min_child_weight": 20.0, "subsample": 0.8, "colsample_bytree": 0.6,
    "lambda": 1.0, "alpha": 0.01, "max_cat_to_onehot": 4, "objective": "reg:absoluteerror",
}  # fmt: skip
SQUARED_ERROR_CONFIG = {**DEFAULT_CONFIG, "eta": 0.05, "max_depth": 8, "min_child_weight": 5.0,
                        "colsample_bytree": 0.8, "objective": "reg:squarederror"}  # fmt: skip
#: The first configurations a search within the serving budget tries: depth 8 at eta 0.05 and depth 6
#: at eta 0.1, each cut to the rounds the budget affords, were at the top of the measured frontier
#: (validation MdAPE 0.197 on the real sample, within seed noise of each other). With today's features
#: benchmarks/frontier_bench.py gives them 0.1991 and 0.2022; they are starting points for Optuna only.
BUDGET_CONFIGS = [
    {**DEFAULT_CONFIG, "eta": 0.05, "max_depth": 8},
    {**DEFAULT_CONFIG, "eta": 0.1, "max_depth": 6},
]
#: XGBoost's own defaults: the untuned baseline benchmarks compare against.
SAMPLING_PARAMS = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")
XGBOOST_DEFAULTS = {"eta": 0.3, "max_depth": 6, "objective": "reg:squarederror"}


@dataclass(frozen=True)
class TrainingData:
    """Feature frames of one train/valid split; the transform is fitted on train only."""

    transform: FeatureTransform
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_valid: pd.DataFrame
    y_valid: np.ndarray
    #: Up to 1,000 real validation rows as the boosters read them when serving (serving cost is measured on them).
    cost_sample: np.ndarray
    #: For each row of x_valid, the position of its validation row (a masked copy points at its source).
    valid_rows: np.ndarray


def prepare(train_df: pd.DataFrame, valid_df: pd.DataFrame, *, seed: int = 0, augment: bool = True) -> TrainingData:
    """Features of a train/valid split; with ``augment``, both get masked copies when they lack missing sizes.

    Validation gets them too, so early stopping and the search judge how a model prices listings
    without sizes, not only complete ones (see ray_jobs.augment).
    """
    if train_df.empty or valid_df.empty:
        raise ValueError(f"need training and validation rows, got {len(train_df)} and {len(valid_df)}")
    transform, x_train = FeatureTransform.fit_transform(train_df, seed=seed)
    x_valid = transform.transform(valid_df)
    y_train, y_valid = log_price(train_df["price"]), log_price(valid_df["price"])
    valid_rows = np.arange(len(valid_df))
    if augment:
        x_train, y_train, _ = with_masked_copies(x_train, y_train, train_df, seed=seed)
        x_valid, y_valid, sources = with_masked_copies(x_valid, y_valid, valid_df, seed=seed + 1)
        valid_rows = np.concatenate([valid_rows, sources])
    cost_sample = transform.matrix(valid_df.iloc[:1000])
    return TrainingData(transform, x_train, y_train, x_valid, y_valid, cost_sample, valid_rows)


def xgb_params(config: dict, y_train: np.ndarray, *, nthread: int, seed: int) -> dict:
    """Full XGBoost parameters for a search config."""
    params = {**FIXED_PARAMS, **config, "nthread": nthread, "seed": seed}
    if params.get("objective") == "reg:pseudohubererror":
        # Pseudo-Huber's gradient is bounded: starting from 0.5 instead of ~12.7 (log $) never converges.
        params["base_score"] = float(np.median(y_train))
    return params


def train_booster(
    params: dict,
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    rounds: int,
    valid: tuple[pd.DataFrame, np.ndarray] | None = None,
    callbacks: list | None = None,
) -> xgb.Booster:
    """One XGBoost training run; with ``valid``, early stopping keeps the best round."""
    bins = params.get("max_bin", 256)
    dtrain = xgb.QuantileDMatrix(x, y, enable_categorical=True, max_bin=bins)
    evals, early = [], None
    if valid is not None:  # XGBoost refuses a validation matrix binned otherwise, even with ``ref``
        evals = [(xgb.QuantileDMatrix(valid[0], valid[1], enable_categorical=True, ref=dtrain, max_bin=bins), "valid")]
        early = EARLY_STOPPING_ROUNDS
    return xgb.train(
        params, dtrain, rounds, evals=evals, early_stopping_rounds=early, callbacks=callbacks, verbose_eval=False
    )


def refit(
    df: pd.DataFrame,
    params: dict,
    rounds: int,
    *,
    seed: int = 0,
    nthread: int | None = None,
    bag_size: int = 1,
    augment: bool = True,
    comparables_rows: int = 250_000,
    meta: dict | None = None,
) -> PriceModel:
    """Final model on all of ``df`` (train + valid) with the chosen parameters and round count.

    The transform is refitted on the same rows (out-of-fold encodings for training), so the
    served transform has seen every non-test row. ``bag_size`` boosters differ only in their
    seed (row and column sampling); the model averages them (see PriceModel). ``augment`` adds
    masked copies when the rows lack missing sizes (ray_jobs.augment). The model keeps up to
    ``comparables_rows`` of these rows as its comparable homes (rayestate.comparables).
    """
    transform, x = FeatureTransform.fit_transform(df, seed=seed)
    params = {**params, "nthread": nthread or params.get("nthread", 1)}
    if params.get("objective") == "reg:pseudohubererror":
        params["base_score"] = float(np.median(log_price(df["price"])))
    y = log_price(df["price"])
    copies = 0
    if augment:
        x, y, sources = with_masked_copies(x, y, df, seed=seed)
        copies = len(sources)
    if not samples_randomly(params):
        bag_size = 1  # without row/column sampling every seed grows the same trees
    first_seed = int(params.get("seed", seed))
    boosters = [train_booster({**params, "seed": first_seed + i}, x, y, rounds=rounds) for i in range(bag_size)]
    meta = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_rows": len(df),
        "rounds": rounds,
        "params": {k: v for k, v in params.items() if k != "nthread"},
        "bag_size": bag_size,
        "masked_copies": copies,
        **(meta or {}),
    }
    comparables = ComparablesIndex.build(df, max_rows=comparables_rows, seed=seed)
    return PriceModel(boosters=boosters, transform=transform, meta=meta, comparables=comparables)


def samples_randomly(params: dict) -> bool:
    """Whether the params sample rows or columns (only then do boosters with other seeds differ)."""
    return any(float(params.get(name, 1.0)) < 1.0 for name in SAMPLING_PARAMS)

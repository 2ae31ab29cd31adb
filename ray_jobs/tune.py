"""Hyperparameter search for the price model: Ray Tune + Optuna + ASHA.

Trials fit boosters with ray_jobs.fit, the same code as the final model. The feature transform is
fitted once, on the training fold only, and the resulting feature frames go to the object
store once (``tune.with_parameters``); every trial reads the same objects. Each trial reports
its validation error every few rounds, so ASHA can stop hopeless trials early, and logs every
round's metric to its own MLflow run nested under the pipeline's run.

The validation metric is the mean absolute error in log space: the same per-row loss the
promotion rule compares (ray_jobs.decide), and close to the headline MdAPE. The training
objective (squared error, pseudo-Huber or absolute error) is a search dimension, so validation
decides it. Optuna's first suggestion is a hand-picked default, so even a one-trial budget
gives a sane model.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import xgboost as xgb

from ray_jobs import serving_cost, stages
from ray_jobs.calibrate import calibrate, with_interval
from ray_jobs.fit import (
    BUDGET_CONFIGS,
    DEFAULT_CONFIG,
    OBJECTIVES,
    SQUARED_ERROR_CONFIG,
    XGBOOST_DEFAULTS,
    TrainingData,
    prepare,
    refit,
    samples_randomly,
    train_booster,
    xgb_params,
)
from ray_jobs.serving_cost import ServingCost
from rayestate.model import PriceModel
from rayestate.settings import Settings
from rayestate.store import open_store

METRIC = "best_valid_mae"
ROUND_METRIC = "valid_mae_log"
MAX_ROUNDS = 3000
REPORT_EVERY = 10
#: ASHA's first cut. Absolute-error trials start slowly (they overtake later): cutting at 100
#: rounds killed every one of them on the real sample.
GRACE_ROUNDS = 300


def search_space(budget: Budget) -> tuple[dict, list[dict]]:
    """The hyperparameter space and the first points Optuna tries, for a search with or without a budget.

    Within a serving budget the frontier on the real sample is flat (benchmarks/frontier_bench.py,
    validation rows, two seeds per lever): depth 5-10 cut to the rounds the budget affords, leaf
    limits (lossguide, 32-256 leaves) and a bag of two all land at MdAPE 0.198-0.202. Depth 10 (~245
    affordable rounds) was level with depth 8, not better (0.1981 vs 0.1991, inside the seed
    spread). Earlier runs found eta above 0.12 plateaus 0.006-0.009 MdAPE worse and pseudo-Huber
    clearly worse than absolute error. So the budgeted space spends its trials on depth 5-8, eta
    0.04-0.12, absolute error. Without a budget the space is the wide one.
    """
    from ray import tune

    common = {
        "min_child_weight": tune.loguniform(1.0, 64.0),
        "subsample": tune.uniform(0.5, 1.0),
        "colsample_bytree": tune.uniform(0.4, 1.0),
        "lambda": tune.loguniform(1e-3, 30.0),
        "alpha": tune.loguniform(1e-3, 10.0),
        "max_cat_to_onehot": tune.choice([1, 4, 64]),
    }
    if budget.limited:
        space = {**common, "eta": tune.loguniform(0.04, 0.12), "max_depth": tune.randint(5, 9),
                 "objective": tune.choice(["reg:absoluteerror"])}  # fmt: skip
        return space, BUDGET_CONFIGS
    space = {**common, "eta": tune.loguniform(0.02, 0.3), "max_depth": tune.randint(4, 13),
             "objective": tune.choice(list(OBJECTIVES))}  # fmt: skip
    return space, [DEFAULT_CONFIG, SQUARED_ERROR_CONFIG]


# --- one trial -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowTarget:
    """Where trials log: a nested run per trial under ``parent_run_id``."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


@dataclass(frozen=True)
class Budget:
    """What one row may cost to serve, one thread: exact TreeSHAP ms and prediction µs (inf: no limit)."""

    explain_ms: float = math.inf
    predict_us: float = math.inf

    @classmethod
    def of(cls, settings: Settings) -> Budget:
        """The settings' budget, less a safety margin: a model is chosen to fit it when measured again elsewhere."""
        return cls(settings.explain_budget_ms * BUDGET_MARGIN, settings.predict_budget_us * BUDGET_MARGIN)

    @property
    def limited(self) -> bool:
        return math.isfinite(self.explain_ms) or math.isfinite(self.predict_us)

    def fits(self, cost: ServingCost) -> bool:
        return cost.within(self.explain_ms, self.predict_us)

    def reserving_range(self) -> Budget:
        """The budget left for the price model once the price range's scale model has its share."""
        return replace(self, predict_us=self.predict_us - RANGE_PREDICT_RESERVE_US)

    def affordable_rounds(self, cost: ServingCost, rounds: int) -> float:
        """Rounds the budget affords, projected from what ``rounds`` rounds cost (costs grow ~linearly)."""
        return rounds * min(self.explain_ms / cost.explain_ms_per_row, self.predict_us / cost.predict_us_per_row)


#: Share of the settings' budget a model is chosen within: timings repeat to a few percent, so a model
#: chosen right at the budget could measure over it the next time.
BUDGET_MARGIN = 0.95
#: Prediction µs per row kept for the price range's scale model (~100-200 depth-4 trees: 3-4 µs measured).
RANGE_PREDICT_RESERVE_US = 4.0
#: Rounds at which a trial measures what its booster costs so far.
COST_CHECKPOINTS = (20, 60, 150, 400, 1000, 2000)


class _ReportRounds(xgb.callback.TrainingCallback):
    """Every round's validation MAE to MLflow; every REPORT_EVERY rounds a Tune report (for ASHA).

    The reported metric is the best validation error among the rounds the serving budget affords.
    At COST_CHECKPOINTS the booster's cost so far is measured and the affordable rounds projected
    from it; rounds past them cannot improve the metric, so training stops there.
    """

    def __init__(self, report, log_metrics, budget: Budget, sample):
        self._report, self._log, self._budget, self._sample = report, log_metrics, budget, sample
        self.maes: list[float] = []
        self.affordable = math.inf
        self._pending: list[tuple[int, float]] = []

    def best(self, rounds: float = math.inf) -> tuple[float, int]:
        """(best validation MAE, its round) among the first ``rounds`` rounds (and those the budget affords)."""
        within = self.maes[: int(min(rounds, self.affordable, len(self.maes)))]
        if not within:
            return math.inf, 0
        index = int(np.argmin(within))
        return within[index], index + 1

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        rounds = epoch + 1
        self.maes.append(float(evals_log["valid"]["mae"][-1]))
        self._pending.append((rounds, self.maes[-1]))
        if self._budget.limited and rounds in COST_CHECKPOINTS:
            self.affordable = self._budget.affordable_rounds(serving_cost.measure([model], self._sample), rounds)
        if rounds % REPORT_EVERY == 0:
            self.flush()
        return rounds >= self.affordable

    def flush(self, **extra) -> None:
        """Log the rounds not logged yet and report the latest; ``extra`` forces a report."""
        if not self._pending and not extra:
            return
        if self._pending:
            self._log(self._pending)
            self._pending = []
        best, best_round = self.best()
        rounds = len(self.maes)
        self._report({ROUND_METRIC: self.maes[-1], METRIC: best, "best_round": best_round, "rounds": rounds, **extra})


def _within_budget(
    booster: xgb.Booster, reporter: _ReportRounds, budget: Budget, sample
) -> tuple[float, int, ServingCost]:
    """The trial's answer: best validation MAE and round within the budget, measured, and what it costs."""
    mae, rounds = reporter.best()
    cost = serving_cost.measure([booster], sample, trees=rounds)
    if budget.limited and not budget.fits(cost):  # the projection was optimistic: measure the prefix that fits
        affordable, _ = serving_cost.trees_within(
            [booster[:rounds]], sample, explain_budget_ms=budget.explain_ms, predict_budget_us=budget.predict_us
        )
        mae, rounds = reporter.best(affordable)
        cost = serving_cost.measure([booster], sample, trees=rounds) if rounds else cost
    return mae, rounds, cost


def _trial(
    config: dict,
    *,
    data: TrainingData,
    mlflow_target: MlflowTarget | None,
    nthread: int,
    seed: int,
    max_rounds: int,
    budget: Budget,
) -> None:
    from ray import tune

    client, run_id = None, None
    if mlflow_target is not None:
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client = MlflowClient(tracking_uri=mlflow_target.tracking_uri)
        trial_id = tune.get_context().get_trial_id()
        run = client.create_run(
            mlflow_target.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={MLFLOW_PARENT_RUN_ID: mlflow_target.parent_run_id, "tune_trial_id": trial_id},
        )
        run_id = run.info.run_id
        _log_params(client, run_id, config)

    def log_metrics(points):
        if client is not None:
            _log_round_metrics(client, run_id, points)

    reporter = _ReportRounds(
        lambda m: tune.report({**m, "mlflow_run_id": run_id or ""}), log_metrics, budget, data.cost_sample
    )
    params = xgb_params(config, data.y_train, nthread=nthread, seed=seed)
    booster = train_booster(
        params, data.x_train, data.y_train, rounds=max_rounds, valid=(data.x_valid, data.y_valid), callbacks=[reporter]
    )
    mae, rounds, cost = _within_budget(booster, reporter, budget, data.cost_sample)
    final = {METRIC: mae, "best_round": rounds, **cost.as_metrics()}
    if client is not None:
        client.log_batch(run_id, metrics=[_metric(name, value) for name, value in final.items()])
        client.set_terminated(run_id, "FINISHED")
    reporter.flush(finished=True, **final)


def _log_params(client, run_id: str, config: dict) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(config.items())])


def _log_round_metrics(client, run_id: str, points: list[tuple[int, float]]) -> None:
    client.log_batch(run_id, metrics=[_metric(ROUND_METRIC, value, step) for step, value in points])


def _metric(name: str, value: float, step: int = 0):
    from mlflow.entities import Metric

    return Metric(name, float(value), int(time.time() * 1000), step)


# --- the search ------------------------------------------------------------------------------


@dataclass
class TuneResult:
    """The winning configuration and what the search did."""

    config: dict
    params: dict
    best_rounds: int
    best_valid_mae: float
    num_trials: int
    tune_seconds: float
    trials: list[dict] = field(default_factory=list)
    #: What the chosen trial's booster costs to serve (one booster, its best rounds), and the budget.
    serving_cost: dict[str, float] = field(default_factory=dict)


def _concurrency(settings: Settings) -> tuple[int, int, float]:
    """(trials at once, threads per trial, CPUs each trial reserves), from the CPUs free now.

    Sized from what is free, not the cluster total: a Serve app on the same cluster holds CPUs,
    and a trial that reserves more than is free would wait for ever.
    """
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    whole = max(1, int(free))
    concurrent = min(settings.tune_max_concurrent or whole, settings.tune_num_samples, whole)
    reserve = round(max(free / concurrent, 0.1), 2)
    return concurrent, max(1, int(reserve)), reserve


def tune_model(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    settings: Settings,
    *,
    mlflow_parent_run_id: str | None = None,
    max_rounds: int = MAX_ROUNDS,
    budget: Budget | None = None,
) -> TuneResult:
    """Search hyperparameters on the connected Ray cluster; returns the most accurate config within budget.

    ``budget`` (default: the settings' serving budget; ``Budget()`` for none) caps what a row may
    cost to serve: each trial's metric is its best validation error among the rounds the budget
    affords, measured. With ``mlflow_parent_run_id`` every trial logs a nested run (params,
    per-round ``valid_mae_log``, its serving cost) to ``settings.mlflow_tracking_uri``. Each trial
    boosts up to ``max_rounds`` rounds, stopping early after EARLY_STOPPING_ROUNDS without
    improvement or once the budget affords no more. Raises if no trial produced a result.
    """
    data = prepare(train_df, valid_df, seed=settings.seed, augment=settings.augment_missing_sizes)
    return search(data, settings, mlflow_parent_run_id=mlflow_parent_run_id, max_rounds=max_rounds, budget=budget)


def search(
    data: TrainingData,
    settings: Settings,
    *,
    mlflow_parent_run_id: str | None = None,
    max_rounds: int = MAX_ROUNDS,
    budget: Budget | None = None,
) -> TuneResult:
    """:func:`tune_model` on features already prepared (ray_jobs.fit.prepare)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    budget = Budget.of(settings) if budget is None else budget
    started = time.monotonic()
    concurrent, nthread, reserve = _concurrency(settings)
    target = _mlflow_target(settings, mlflow_parent_run_id)
    results = open_store(settings)
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            data=data,
            mlflow_target=target,
            nthread=nthread,
            seed=settings.seed,
            max_rounds=max_rounds,
            budget=budget,
        ),
        {"cpu": reserve},
    )
    space, first = search_space(budget)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=OptunaSearch(points_to_evaluate=first, seed=settings.seed),
            # Trials end by themselves at max_rounds (and close their MLflow run).
            scheduler=ASHAScheduler(
                time_attr="rounds",
                max_t=max_rounds,
                grace_period=min(GRACE_ROUNDS, max_rounds),
                reduction_factor=3,
                stop_last_trials=False,
            ),
            num_samples=settings.tune_num_samples,
            max_concurrent_trials=concurrent,
            time_budget_s=settings.tune_time_budget_s,
        ),
        # Trial results go to the data store (S3 on a cluster), which every node can reach.
        run_config=tune.RunConfig(
            name=f"tune-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            storage_path=results.path("tune"),
            storage_filesystem=results.fs,
            verbose=1,
        ),
    )
    grid = tuner.fit()
    trials = _trial_summaries(grid)
    if target is not None:
        _close_stopped_runs(target, trials)
    # A finished trial measured its answer within budget; one that ASHA or the time budget stopped only
    # projected it, so finished trials are preferred.
    done = [t for t in trials if t["finished"] and t["best_round"]] or [
        t for t in trials if t[METRIC] is not None and t["best_round"]
    ]
    if not done:
        errors = "; ".join(str(e)[:300] for e in grid.errors) or "no trial reported a metric"
        raise RuntimeError(f"hyperparameter search produced no result ({len(trials)} trials): {errors}")
    best = min(done, key=lambda t: t[METRIC])
    return TuneResult(
        config=best["config"],
        params=xgb_params(best["config"], data.y_train, nthread=nthread, seed=settings.seed),
        best_rounds=int(best["best_round"]),
        best_valid_mae=float(best[METRIC]),
        num_trials=len(trials),
        tune_seconds=time.monotonic() - started,
        trials=trials,
        serving_cost={
            **{k.removeprefix("serving_cost."): v for k, v in best["metrics"].items() if k.startswith("serving_cost.")},
            "explain_budget_ms": budget.explain_ms,
            "predict_budget_us": budget.predict_us,
        },
    )


def _mlflow_target(settings: Settings, parent_run_id: str | None) -> MlflowTarget | None:
    if parent_run_id is None:
        return None
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_run(parent_run_id)
    return MlflowTarget(settings.mlflow_tracking_uri, parent.info.experiment_id, parent_run_id)


def _trial_summaries(grid) -> list[dict]:
    summaries = []
    for result in grid:
        metrics = result.metrics or {}
        summaries.append(
            {
                "config": dict(result.config or {}),
                METRIC: metrics.get(METRIC),
                "best_round": metrics.get("best_round"),
                "rounds": metrics.get("rounds"),
                "finished": bool(metrics.get("finished")),
                "metrics": {k: v for k, v in metrics.items() if k.startswith("serving_cost.")},
                "error": str(result.error)[:300] if result.error else None,
                "mlflow_run_id": metrics.get("mlflow_run_id") or None,
            }
        )
    return summaries


def _close_stopped_runs(target: MlflowTarget, trials: list[dict]) -> None:
    """Trials ASHA (or the time budget) stopped never reach their own set_terminated: close their runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.tracking_uri)
    for trial in trials:
        run_id = trial["mlflow_run_id"]
        if run_id and not trial["finished"] and client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "tune_stopped_early", "true")
            client.set_terminated(run_id, "KILLED" if trial["error"] is None else "FAILED")


def fit_untuned(
    train_df: pd.DataFrame, valid_df: pd.DataFrame, *, config: dict = XGBOOST_DEFAULTS, seed: int = 0, nthread: int = 1
) -> tuple[PriceModel, TuneResult]:
    """A model without search (early stopping only), refitted on train + valid like the tuned one."""
    started = time.monotonic()
    data = prepare(train_df, valid_df, seed=seed)
    params = xgb_params(config, data.y_train, nthread=nthread, seed=seed)
    booster = train_booster(params, data.x_train, data.y_train, rounds=MAX_ROUNDS, valid=(data.x_valid, data.y_valid))
    result = TuneResult(
        config=dict(config),
        params=params,
        best_rounds=booster.best_iteration + 1,
        best_valid_mae=float(booster.best_score),
        num_trials=1,
        tune_seconds=time.monotonic() - started,
    )
    model = refit(
        pd.concat([train_df, valid_df]), params, result.best_rounds, seed=seed, nthread=nthread,
        meta={"valid_mae_log": result.best_valid_mae},
    )  # fmt: skip
    return model, result


# --- the final model -------------------------------------------------------------------------


@dataclass(frozen=True)
class BagChoice:
    """How many boosters the final model averages and how many rounds each keeps (chosen on validation)."""

    size: int
    rounds: int
    valid_mae: float


def choose_bag(
    data: TrainingData, result: TuneResult, budget: Budget, *, max_size: int, nthread: int, seed: int
) -> tuple[BagChoice, list[xgb.Booster]]:
    """The bag size (1..max_size) with the lowest validation error within the serving budget.

    A bag of b boosters (the chosen config, seeds seed..seed+b-1) costs b times one booster's rounds,
    so within a budget its members keep fewer rounds each: whether averaging beats one longer
    booster is measured here, on the validation rows, never on test rows. Also returns the chosen
    bag's boosters (fitted on the training rows only, cut to the chosen rounds): the stage-one model
    whose validation residuals teach the price range (ray_jobs.calibrate).
    """
    params = {**result.params, "nthread": nthread}
    sizes = max_size if samples_randomly(result.params) else 1  # without sampling every seed grows the same trees
    members = [
        train_booster({**params, "seed": seed + i}, data.x_train, data.y_train, rounds=result.best_rounds)
        for i in range(max(1, sizes))
    ]
    best = BagChoice(1, result.best_rounds, result.best_valid_mae)
    dvalid = xgb.DMatrix(data.x_valid, enable_categorical=True)
    for size in range(2, sizes + 1):
        bag = members[:size]
        affordable = result.best_rounds
        if budget.limited:
            affordable, _ = serving_cost.trees_within(
                bag, data.cost_sample, explain_budget_ms=budget.explain_ms, predict_budget_us=budget.predict_us
            )
        rounds, mae = best_prefix(bag, dvalid, data.y_valid, affordable)
        if mae < best.valid_mae:
            best = BagChoice(size, rounds, mae)
    return best, [booster[: best.rounds] for booster in members[: best.size]]


def best_prefix(bag: list[xgb.Booster], dvalid: xgb.DMatrix, y_valid: np.ndarray, rounds: int) -> tuple[int, float]:
    """The prefix of at most ``rounds`` rounds per member whose averaged prediction has the lowest MAE on
    ``y_valid`` (log price), and that MAE; (0, inf) when ``rounds`` < 1. Up to ~40 prefixes are scored."""
    best = (0, math.inf)
    for prefix in sorted({*range(10, rounds + 1, max(10, rounds // 40)), rounds}):
        if prefix < 1:
            continue
        average = np.mean([b.predict(dvalid, iteration_range=(0, prefix)) for b in bag], axis=0)
        mae = float(np.mean(np.abs(average - y_valid)))
        if mae < best[1]:
            best = (prefix, mae)
    return best


def train_model(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    calibration_df: pd.DataFrame,
    settings: Settings,
    *,
    mlflow_parent_run_id: str | None = None,
    budget: Budget | None = None,
    nthread: int | None = None,
    meta: dict | None = None,
    final_fit: Callable[[dict, int, int, dict], PriceModel] | None = None,
) -> tuple[PriceModel, TuneResult, BagChoice]:
    """The pipeline's model: search, bag size on validation, refit on train + valid within budget, price range.

    The final model is fitted on the training and validation rows, cut to the serving budget if
    the refit grew past it (the price range's scale model counts in the prediction budget), and
    its price range calibrated on ``calibration_df``, which no model here was fitted on. Returns
    the model (its meta records the measured serving cost and the budget), the search and the bag
    choice. ``budget`` defaults to the settings' serving budget; ``Budget()`` is none.

    ``final_fit(params, rounds, bag_size, meta)``, when given, replaces the one-process refit: the
    data-parallel path (ray_jobs.data_parallel) passes samples of its rows here for the search, the
    bag choice and the range, and fits the final boosters on every row across Ray Train workers.
    """
    budget = Budget.of(settings) if budget is None else budget
    nthread = nthread or os.cpu_count() or 1
    with stages.stage("tune"):
        data = prepare(train_df, valid_df, seed=settings.seed, augment=settings.augment_missing_sizes)
        result = search(data, settings, mlflow_parent_run_id=mlflow_parent_run_id, budget=budget.reserving_range())
        bag, stage_one = choose_bag(
            data, result, budget.reserving_range(), max_size=settings.bag_size, nthread=nthread, seed=settings.seed
        )
    with stages.stage("fit"):
        meta = {"valid_mae_log": bag.valid_mae, **(meta or {})}
        if final_fit is None:
            model = refit(
                pd.concat([train_df, valid_df]), result.params, bag.rounds, seed=settings.seed, nthread=nthread,
                bag_size=bag.size, augment=settings.augment_missing_sizes, comparables_rows=settings.comparables_rows,
                meta=meta,
            )  # fmt: skip
        else:
            model = final_fit(result.params, bag.rounds, bag.size, meta)
        known = data.transform.known(valid_df)
        valid_known = {name: flags[data.valid_rows] for name, flags in known.items()}
        stage_one_model = PriceModel(stage_one, data.transform)
        model = with_interval(
            model, stage_one_model, data.x_valid, data.y_valid, valid_known, calibration_df, seed=settings.seed,
            nthread=nthread,
        )  # fmt: skip
        model, cost = serving_cost.within_budget(
            model, data.cost_sample, explain_budget_ms=budget.explain_ms, predict_budget_us=budget.predict_us
        )
        if model.meta.get("cut_to_budget_from"):  # a cut model is a different model: calibrate its range again
            model = replace(model, interval=calibrate(model, model.interval.scale, calibration_df))
    model.meta["serving_cost"] = {  # the budget as the settings state it (the search kept a margin below it)
        **asdict(cost), "explain_budget_ms": settings.explain_budget_ms if budget.limited else math.inf,
        "predict_budget_us": settings.predict_budget_us if budget.limited else math.inf,
    }  # fmt: skip
    return model, result, bag

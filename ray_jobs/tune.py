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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import xgboost as xgb

from ray_jobs.fit import (
    DEFAULT_CONFIG,
    OBJECTIVES,
    SQUARED_ERROR_CONFIG,
    XGBOOST_DEFAULTS,
    TrainingData,
    prepare,
    refit,
    train_booster,
    xgb_params,
)
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


def search_space() -> dict:
    from ray import tune

    return {
        "eta": tune.loguniform(0.02, 0.3),
        "max_depth": tune.randint(4, 13),
        "min_child_weight": tune.loguniform(1.0, 64.0),
        "subsample": tune.uniform(0.5, 1.0),
        "colsample_bytree": tune.uniform(0.4, 1.0),
        "lambda": tune.loguniform(1e-3, 30.0),
        "alpha": tune.loguniform(1e-3, 10.0),
        "max_cat_to_onehot": tune.choice([1, 4, 64]),
        "objective": tune.choice(list(OBJECTIVES)),
    }


# --- one trial -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowTarget:
    """Where trials log: a nested run per trial under ``parent_run_id``."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


class _ReportRounds(xgb.callback.TrainingCallback):
    """Every round's validation MAE to MLflow; every REPORT_EVERY rounds a Tune report (for ASHA)."""

    def __init__(self, report, log_metrics):
        self._report, self._log = report, log_metrics
        self.best, self.best_round, self._pending, self._last = math.inf, 0, [], (0, math.inf)

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        mae = float(evals_log["valid"]["mae"][-1])
        if mae < self.best:
            self.best, self.best_round = mae, epoch + 1
        self._pending.append((epoch + 1, mae))
        if (epoch + 1) % REPORT_EVERY == 0:
            self.flush()
        return False

    def flush(self, **extra) -> None:
        """Log the rounds not logged yet and report the latest; ``extra`` forces a report."""
        if not self._pending and not extra:
            return
        if self._pending:
            self._log(self._pending)
            self._last, self._pending = self._pending[-1], []
        rounds, mae = self._last
        self._report({ROUND_METRIC: mae, METRIC: self.best, "best_round": self.best_round, "rounds": rounds, **extra})


def _trial(
    config: dict, *, data: TrainingData, mlflow_target: MlflowTarget | None, nthread: int, seed: int, max_rounds: int
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

    reporter = _ReportRounds(lambda m: tune.report({**m, "mlflow_run_id": run_id or ""}), log_metrics)
    params = xgb_params(config, data.y_train, nthread=nthread, seed=seed)
    train_booster(
        params, data.x_train, data.y_train, rounds=max_rounds, valid=(data.x_valid, data.y_valid), callbacks=[reporter]
    )
    if client is not None:
        client.log_metric(run_id, METRIC, reporter.best)
        client.log_metric(run_id, "best_round", reporter.best_round)
        client.set_terminated(run_id, "FINISHED")
    reporter.flush(finished=True)


def _log_params(client, run_id: str, config: dict) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(config.items())])


def _log_round_metrics(client, run_id: str, points: list[tuple[int, float]]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(ROUND_METRIC, value, now, step) for step, value in points])


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
) -> TuneResult:
    """Search hyperparameters on the connected Ray cluster; returns the best config and rounds.

    With ``mlflow_parent_run_id`` every trial logs a nested run (params, per-round
    ``valid_mae_log``) to ``settings.mlflow_tracking_uri``. Each trial boosts up to ``max_rounds``
    rounds, stopping early after EARLY_STOPPING_ROUNDS without improvement. Raises if no trial
    produced a result.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    started = time.monotonic()
    data = prepare(train_df, valid_df, seed=settings.seed, augment=settings.augment_missing_sizes)
    concurrent, nthread, reserve = _concurrency(settings)
    target = _mlflow_target(settings, mlflow_parent_run_id)
    results = open_store(settings)
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, data=data, mlflow_target=target, nthread=nthread, seed=settings.seed, max_rounds=max_rounds
        ),
        {"cpu": reserve},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=OptunaSearch(points_to_evaluate=[DEFAULT_CONFIG, SQUARED_ERROR_CONFIG], seed=settings.seed),
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
    done = [t for t in trials if t[METRIC] is not None]
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

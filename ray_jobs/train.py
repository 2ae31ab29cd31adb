"""One training round of the pipeline: data -> split -> tune -> refit -> evaluate -> register -> decide.

Each step is a plain function in its own module; this only wires them in order and makes the
round resumable: if the registry already holds a version for this run key, a re-run reuses it
(finishing an interrupted registration) instead of training and registering a second one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ray_jobs import registry, store
from ray_jobs.evaluate import compare, evaluate
from ray_jobs.split import split_frame
from ray_jobs.tune import refit, tune_model
from rayestate.mlflow_model import load_model_version
from rayestate.model import PriceModel
from rayestate.settings import Settings


@dataclass
class TrainingOutcome:
    outcome: str  # first_model | promoted | rejected
    reason: str
    version: str
    metrics: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)


def training_batches(records: dict, settings: Settings) -> list[str]:
    """The batches to train on (oldest first): all, or the last ``training_window_batches``."""
    ids = list(records)
    return ids[-settings.training_window_batches :] if settings.training_window_batches else ids


def _champion_model(client: MlflowClient, settings: Settings, champion: registry.ChampionInfo):
    """The champion's model, or None (with why) when this code cannot load it (e.g. old features)."""
    try:
        return load_model_version(client, settings.model_name, champion.version).model, ""
    except ValueError as exc:
        return None, f"champion v{champion.version} cannot be evaluated by this code ({exc})"


def train_and_decide(
    client: MlflowClient,
    settings: Settings,
    run_key: str,
    records: dict,
    champion: registry.ChampionInfo | None,
) -> TrainingOutcome:
    """Train a challenger on the clean batches, register it, and promote or reject it.

    Runs inside :func:`registry.pipeline_run` (trials nest under that run). A version already
    registered under ``run_key`` is reused: decided -> its decision is re-applied without any
    training; undecided (a crash after registration) -> it is evaluated and decided now.
    """
    with registry.unavailable_as_error(settings, "looking up the run's model version"):
        existing = registry.find_version(client, settings, run_key)
    if existing is not None and registry.recorded_decision(existing) is not None:
        return _finish_recorded(client, settings, existing)

    batches = training_batches(records, settings)
    splits = split_frame(store.read_frame(settings, "clean", batches))
    print(
        f"[train] {len(splits.train):,} train / {len(splits.valid):,} valid / {len(splits.test):,} test rows",
        flush=True,
    )
    model = None  # a version registered by a crashed run is decided on as it is, not retrained
    if existing is None:
        with registry.unavailable_as_error(settings, "tuning (every trial logs to MLflow)"):
            result = tune_model(
                splits.train, splits.valid, settings, mlflow_parent_run_id=mlflow.active_run().info.run_id
            )
        with registry.unavailable_as_error(settings, "logging the search results"):
            mlflow.log_params({f"best.{k}": v for k, v in result.config.items()} | {"best.rounds": result.best_rounds})
            mlflow.log_metrics(
                {
                    "tune_seconds": result.tune_seconds,
                    "tune_trials": result.num_trials,
                    "best_valid_mae_log": result.best_valid_mae,
                }
            )
        model = refit(
            pd.concat([splits.train, splits.valid]),
            result,
            seed=settings.seed,
            nthread=os.cpu_count(),
            bag_size=settings.bag_size,
        )
        model.meta["training_batches"] = batches
    return register_and_decide(
        client, settings, model, splits.test, run_key=run_key, training_batches=batches, champion=champion
    )


def register_and_decide(
    client: MlflowClient,
    settings: Settings,
    model: PriceModel | None,
    test: pd.DataFrame,
    *,
    run_key: str,
    training_batches: list[str],
    champion: registry.ChampionInfo | None,
) -> TrainingOutcome:
    """Evaluate, register (once per run key), compare with the champion, record the decision.

    If ``run_key`` already has a version, that registered model is the one evaluated and
    decided on (``model`` is ignored and may be None), so the decision always matches the
    version it is recorded on.
    """
    with registry.unavailable_as_error(settings, "looking up the run's model version"):
        version = registry.find_version(client, settings, run_key)
        if version is not None:
            if registry.recorded_decision(version) is not None:
                return _finish_recorded(client, settings, version)
            model = load_model_version(client, settings.model_name, str(version.version)).model
    if model is None:
        raise ValueError(f"no model given and no version registered under run key {run_key}")
    metrics = evaluate(model, test)
    print(f"[train] test MdAPE {metrics['mdape']:.3f}, R² (log) {metrics['r2_log']:.3f}", flush=True)
    if version is None:
        with registry.unavailable_as_error(settings, "registering the model"):
            version = registry.register_model(
                client, settings, model, run_key=run_key, input_example=test.drop(columns="price").head(5),
                metrics=metrics, training_batches=training_batches,
            )  # fmt: skip
    outcome, reason, numbers = _decide(client, settings, champion, model, test)
    with registry.unavailable_as_error(settings, f"recording the decision on version {version.version}"):
        registry.record_decision(client, settings, version, outcome, reason, numbers)
    print(f"[train] v{version.version}: {outcome} — {reason}", flush=True)
    return TrainingOutcome(outcome, reason, str(version.version), metrics, numbers)


def _finish_recorded(client: MlflowClient, settings: Settings, version) -> TrainingOutcome:
    recorded = registry.recorded_decision(version)
    with registry.unavailable_as_error(settings, f"finishing version {version.version}"):
        registry.record_decision(
            client, settings, version, recorded["outcome"], recorded["reason"], recorded["numbers"]
        )
    print(f"[train] v{version.version} was already decided ({recorded['outcome']}): nothing to train", flush=True)
    return TrainingOutcome(
        recorded["outcome"], recorded["reason"], str(version.version), recorded["metrics"], recorded["numbers"]
    )


def _decide(client, settings, champion, challenger, test: pd.DataFrame) -> tuple[str, str, dict]:
    if champion is None:
        return "first_model", "no champion yet: the first model becomes champion", {}
    with registry.unavailable_as_error(settings, f"loading champion version {champion.version}"):
        champion_model, why_not = _champion_model(client, settings, champion)
    if champion_model is None:
        return "promoted", why_not, {}
    decision = compare(champion_model, challenger, test, settings)
    with registry.unavailable_as_error(settings, "logging the comparison"):
        mlflow.log_metrics({f"decision.{k}": v for k, v in decision.numbers.items()})
    return ("promoted" if decision.promote else "rejected"), decision.reason, decision.numbers

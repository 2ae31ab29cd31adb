"""Train a challenger and decide on it: split -> tune -> refit -> evaluate -> register -> decide.

Each step is a plain function in its own module; this only wires them in order and makes the
round resumable: if the registry already holds a version for this run key, a re-run reuses it
(finishing an interrupted registration) instead of training and registering a second one.

A champion that this code cannot load is never replaced blindly: the round fails before it
trains anything (nothing registered half-way) and says how to proceed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ray_jobs import data_parallel, register, stages
from ray_jobs.data_parallel import DataParallelFit
from ray_jobs.decide import compare
from ray_jobs.evaluate import evaluate
from ray_jobs.split import Splits, split_frame
from ray_jobs.tune import train_model
from rayestate import model_card, registry, store
from rayestate.model import PriceModel
from rayestate.model_io import load_model_version
from rayestate.registry import VersionRecord
from rayestate.settings import Settings


class ChampionUnreadable(RuntimeError):
    """The current champion cannot be loaded, so no challenger can be compared with it."""


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


def read_splits(settings: Settings, batches: list[str], rows: int) -> tuple[Splits, DataParallelFit | None]:
    """The four splits this process trains, calibrates and evaluates on, and the data-parallel fit if any.

    Below ``data_parallel_min_rows`` clean rows: every row, read into this process (no final_fit).
    From there on (ray_jobs.data_parallel): bounded hash samples of each split, and a final fit that
    reads every training and validation row as Ray Data shards on Ray Train workers.
    """
    if rows < settings.data_parallel_min_rows:
        return split_frame(store.read_frame(settings, "clean", batches)), None
    drawn = data_parallel.inputs(settings, store.read_dataset(settings, "clean", batches), rows)
    return Splits(drawn.train, drawn.valid, drawn.test, drawn.calibration), drawn.final_fit


def load_champion(client: MlflowClient, settings: Settings, champion: VersionRecord | None) -> PriceModel | None:
    """The champion's model (None when there is no champion); ChampionUnreadable if it cannot be loaded."""
    if champion is None:
        return None
    with register.unavailable_as_error(settings, f"loading champion version {champion.version}"):
        try:
            return load_model_version(client, settings.model_name, champion.version).model
        except (ValueError, OSError, KeyError) as exc:
            raise ChampionUnreadable(
                f"champion v{champion.version} of {settings.model_name!r} cannot be loaded by this code "
                f"({type(exc).__name__}: {exc}), so no challenger can be compared with it. Nothing was "
                f"trained or registered. Point the {settings.model_alias!r} alias at a version this code "
                "can load, or remove it to let the next run register a first model."
            ) from exc


def train_and_decide(
    client: MlflowClient,
    settings: Settings,
    run_key: str,
    records: dict,
    champion: VersionRecord | None,
) -> TrainingOutcome:
    """Train a challenger on the clean batches, register it, and promote or reject it.

    Runs inside :func:`register.pipeline_run` (trials nest under that run). A version already
    registered under ``run_key`` is reused: decided -> its decision is re-applied without any
    training; undecided (a crash after registration) -> it is evaluated and decided now.
    """
    with register.unavailable_as_error(settings, "looking up the run's model version"):
        existing = registry.find_version(client, settings, run_key)
    if existing is not None and existing.decided:
        return _finish_recorded(client, settings, existing)
    champion_model = load_champion(client, settings, champion)  # before hours of training, not after

    batches = training_batches(records, settings)
    rows = sum(records[b].rows for b in batches)
    with stages.stage("split"):
        splits, final_fit = read_splits(settings, batches, rows)
    how = "data-parallel, samples of" if final_fit else "one process,"
    print(
        f"[train] {rows:,} clean rows ({how} {len(splits.train):,} train / {len(splits.valid):,} valid / "
        f"{len(splits.test):,} test / {len(splits.calibration):,} calibration rows)",
        flush=True,
    )
    model = None  # a version registered by a crashed run is decided on as it is, not retrained
    if existing is None:
        with register.unavailable_as_error(settings, "tuning (every trial logs to MLflow)"):
            model, result, bag = train_model(
                splits.train, splits.valid, splits.calibration, settings,
                mlflow_parent_run_id=mlflow.active_run().info.run_id, meta={"training_batches": batches},
                final_fit=final_fit,
            )  # fmt: skip
        cost = model.meta["serving_cost"]
        with register.unavailable_as_error(settings, "logging the search results"):
            mlflow.log_params(
                {f"best.{k}": v for k, v in result.config.items()}
                | {"best.rounds": bag.rounds, "bag_size": bag.size}
                | {f"budget.{k}": cost[k] for k in ("explain_budget_ms", "predict_budget_us")}
            )
            mlflow.log_metrics(
                {
                    "tune_seconds": result.tune_seconds,
                    "tune_trials": result.num_trials,
                    "best_valid_mae_log": bag.valid_mae,
                    **{f"serving_cost.{k}": v for k, v in cost.items() if "budget" not in k},
                }
            )
    return register_and_decide(
        client, settings, model, splits.test, run_key=run_key, training_batches=batches, champion_model=champion_model
    )


def register_and_decide(
    client: MlflowClient,
    settings: Settings,
    model: PriceModel | None,
    test: pd.DataFrame,
    *,
    run_key: str,
    training_batches: list[str],
    champion_model: PriceModel | None,
) -> TrainingOutcome:
    """Evaluate, register (once per run key), compare with the champion, record the decision.

    If ``run_key`` already has a version, that registered model is the one evaluated and
    decided on (``model`` is ignored and may be None), so the decision always matches the
    version it is recorded on. ``champion_model`` is None when there is no champion.
    """
    with register.unavailable_as_error(settings, "looking up the run's model version"):
        version = registry.find_version(client, settings, run_key)
        if version is not None:
            if version.decided:
                return _finish_recorded(client, settings, version)
            model = load_model_version(client, settings.model_name, version.version).model
    if model is None:
        raise ValueError(f"no model given and no version registered under run key {run_key}")
    with stages.stage("evaluate"):
        metrics = evaluate(model, test, coverage=settings.interval_coverage)
    print(f"[train] test MdAPE {metrics['mdape']:.3f}, R² (log) {metrics['r2_log']:.3f}", flush=True)
    if version is None:
        with register.unavailable_as_error(settings, "registering the model"), stages.stage("register"):
            version = register.register_model(
                client, settings, model, run_key=run_key, metrics=metrics, training_batches=training_batches
            )
    with stages.stage("evaluate"):  # the comparison with the champion on the same test rows
        outcome, reason, numbers = _decide(settings, champion_model, model, test)
    with (
        register.unavailable_as_error(settings, f"recording the decision on version {version.version}"),
        stages.stage("register"),
    ):
        decided = registry.record_decision(client, settings, version.version, outcome, reason, numbers)
        model_card.publish(client, decided, model_name=settings.model_name)
    print(f"[train] v{version.version}: {outcome} — {reason}", flush=True)
    return TrainingOutcome(outcome, reason, version.version, metrics, numbers)


def _finish_recorded(client: MlflowClient, settings: Settings, version: VersionRecord) -> TrainingOutcome:
    with register.unavailable_as_error(settings, f"finishing version {version.version}"):
        registry.record_decision(client, settings, version.version, version.decision, version.reason, version.numbers)
    print(f"[train] v{version.version} was already decided ({version.decision}): nothing to train", flush=True)
    return TrainingOutcome(version.decision, version.reason or "", version.version, version.metrics, version.numbers)


def _decide(
    settings: Settings, champion: PriceModel | None, challenger: PriceModel, test: pd.DataFrame
) -> tuple[str, str, dict]:
    if champion is None:
        return "first_model", "no champion yet: the first model becomes champion", {}
    decision = compare(champion, challenger, test, settings)
    with register.unavailable_as_error(settings, "logging the comparison"):
        mlflow.log_metrics({f"decision.{k}": v for k, v in decision.numbers.items()})
    return ("promoted" if decision.promote else "rejected"), decision.reason, decision.numbers

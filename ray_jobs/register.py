"""The pipeline's side of MLflow: its run, logging what it did, and registering a challenger.

What a version records and how a decision is written is the registry contract
(:mod:`rayestate.registry`); this module is the pipeline's use of it. Idempotency: a version
carries the pipeline run key (a hash of its batch ids), and registration first looks the key up,
so a re-executed run never creates a second version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rayestate import registry
from rayestate.model import PriceModel
from rayestate.model_io import log_price_model
from rayestate.registry import INCOMPLETE, MlflowUnavailable, Tag, VersionRecord
from rayestate.settings import Settings


@contextmanager
def unavailable_as_error(settings: Settings, doing: str) -> Iterator[None]:
    """Turn a failure while the server is down into MlflowUnavailable naming the URI and the step.

    Any exception is checked (Tune wraps trial errors in its own types); if the server still
    answers, the original exception propagates unchanged.
    """
    try:
        yield
    except Exception as exc:
        uri = settings.mlflow_tracking_uri
        if not uri.startswith(("http://", "https://")):
            raise
        try:
            registry.check_health(uri)
        except httpx.HTTPError:
            raise MlflowUnavailable(
                f"MLflow tracking server at {uri} became unreachable while {doing}; re-run the pipeline "
                "once it is back: it resumes from the registry instead of registering twice"
            ) from exc
        raise


@contextmanager
def pipeline_run(
    client: MlflowClient, settings: Settings, run_key: str, batches: list[str], records: dict | None = None
) -> Iterator[mlflow.ActiveRun]:
    """The pipeline's MLflow run (the active run inside the block; trials nest under it).

    Points the process-global tracking URI at the settings' server for the block (fluent APIs
    such as log_model need it) and restores it afterwards. The global registry URI is left
    unset on purpose: unset, every client follows its own tracking URI.
    """
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        with unavailable_as_error(settings, "starting the pipeline run"):
            experiment = mlflow.set_experiment(settings.mlflow_experiment)
        rows = sum(records[b].rows for b in batches) if records else None
        tags = {Tag.RUN_KEY: run_key, "batches": json.dumps(batches)}
        with unavailable_as_error(settings, "starting the pipeline run"):
            run = mlflow.start_run(run_name=f"pipeline-{run_key}", tags=tags, experiment_id=experiment.experiment_id)
            if rows is not None:
                mlflow.log_param("new_rows", rows)
        try:
            yield run
        except BaseException:
            with suppress(Exception):  # server gone: the run stays RUNNING; the original error matters
                mlflow.end_run("FAILED")
            raise
        with unavailable_as_error(settings, "closing the pipeline run"):
            mlflow.end_run("FINISHED")
    finally:
        mlflow.set_tracking_uri(previous)


def log_outcome(outcome: str, reason: str) -> None:
    mlflow.set_tags({"outcome": outcome, "outcome_reason": reason[:5000]})


def log_drift(report) -> None:
    """Drift summary on the active run: flat metrics plus the whole report as JSON."""
    mlflow.set_tag("drift_verdict", report.verdict)
    mlflow.log_metrics(report.metrics())
    mlflow.log_dict(report.to_dict(), "drift_report.json")


# --- registering -----------------------------------------------------------------------------


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description="Ray Estate home price model (log price, XGBoost)")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_model(
    client: MlflowClient,
    settings: Settings,
    model: PriceModel,
    *,
    run_key: str,
    metrics: dict[str, float],
    training_batches: list[str],
) -> VersionRecord:
    """Log the model (with its transform and signature) in the active run and register it.

    Returns the version already registered under ``run_key`` if there is one. A new version
    starts ``registration=incomplete``; :func:`rayestate.registry.record_decision` completes it.
    If creating the version fails half-way, the half-made version is deleted before the error
    propagates.
    """
    existing = registry.find_version(client, settings, run_key)
    if existing is not None:
        return existing
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_model needs the pipeline's active MLflow run (see pipeline_run)")
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    info = log_price_model(model)
    _ensure_registered_model(client, settings.model_name)
    tags = {Tag.RUN_KEY: run_key, Tag.REGISTRATION: INCOMPLETE, Tag.BATCHES: json.dumps(training_batches),
            Tag.METRICS: json.dumps(metrics), Tag.SERVING_COST: json.dumps(model.meta.get("serving_cost", {}))}  # fmt: skip
    version = client.create_model_version(
        settings.model_name, info.model_uri, run_id=run.info.run_id, tags=tags, model_id=info.model_id
    )
    if version.status != "READY":
        with suppress(MlflowException):
            client.delete_model_version(settings.model_name, version.version)
        raise RuntimeError(f"model version {version.version} ended {version.status}: {version.status_message}")
    return VersionRecord.of(version)

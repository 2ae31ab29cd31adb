"""The MLflow side of a pipeline run: its run, model versions, aliases and decisions.

Aliases, not stages: ``challenger`` points at the newest candidate, ``settings.model_alias``
(``champion``) at what Serve loads. Every decision (first_model / promoted / rejected, the
reason and the numbers) is written as tags on the model version, so the registry itself is
the promotion history (:func:`promotion_history`), readable by the Serve API and the UI.

Idempotency: a version carries the pipeline run key (a hash of its batch ids). Registration
first looks the key up, so a re-executed run never creates a second version. A version is
tagged ``registration=incomplete`` at creation and ``complete`` only after its decision and
aliases are in place; a re-run finishes an incomplete one. Decision tags are written before
any alias moves, so a run that crashed mid-promotion re-applies the same decision rather than
comparing the new champion with itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from rayestate.mlflow_model import log_price_model
from rayestate.model import PriceModel
from rayestate.settings import Settings

CHALLENGER_ALIAS = "challenger"
RUN_KEY_TAG = "pipeline_run_key"
REGISTRATION_TAG = "registration"
INCOMPLETE, COMPLETE = "incomplete", "complete"
DECISION_TAG, REASON_TAG, NUMBERS_TAG, METRICS_TAG = "decision", "reason", "decision_numbers", "metrics"
DECIDED_AT_TAG, BATCHES_TAG = "decided_at", "training_batches"
OUTCOMES = ("first_model", "promoted", "rejected")
#: MLflow's own HTTP retries default to 7 with exponential backoff (minutes when the server is down).
MLFLOW_RETRY_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}  # fmt: skip


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached."""


# --- connection ------------------------------------------------------------------------------


@retry(
    retry=retry_if_exception_type(httpx.HTTPError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=2),
    reraise=True,
)
def _health(uri: str) -> None:
    httpx.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()


def connect(settings: Settings) -> MlflowClient:
    """A client for the tracking server, after checking it answers (a few short retries).

    Raises MlflowUnavailable naming the URI, within seconds, instead of MLflow's own long
    retry loop. Also shortens MLflow's HTTP retries for this process (unless set already).
    """
    uri = settings.mlflow_tracking_uri
    for key, value in MLFLOW_RETRY_ENV.items():
        os.environ.setdefault(key, value)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if uri.startswith(("http://", "https://")):
            _health(uri)
        else:
            client.search_experiments(max_results=1)
    except (httpx.HTTPError, MlflowException, OSError) as exc:
        raise MlflowUnavailable(
            f"MLflow tracking server at {uri} is unreachable ({type(exc).__name__}: {exc}); "
            "start it or set RAYESTATE_MLFLOW_TRACKING_URI"
        ) from exc
    return client


# --- the pipeline's run ----------------------------------------------------------------------


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
            _health(uri)
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
        tags = {RUN_KEY_TAG: run_key, "batches": json.dumps(batches)}
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


# --- versions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChampionInfo:
    version: str
    run_id: str | None
    training_batches: list[str]
    tags: dict[str, str]


def champion_info(client: MlflowClient, settings: Settings) -> ChampionInfo | None:
    """The version the serving alias points at, or None when there is no champion yet."""
    try:
        version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    tags = dict(version.tags or {})
    return ChampionInfo(str(version.version), version.run_id, json.loads(tags.get(BATCHES_TAG, "[]")), tags)


def find_version(client: MlflowClient, settings: Settings, run_key: str) -> ModelVersion | None:
    """The version a run with this key registered before (complete or not), if any."""
    versions = client.search_model_versions(f"name = '{settings.model_name}' and tags.{RUN_KEY_TAG} = '{run_key}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


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
    input_example: pd.DataFrame,
    metrics: dict[str, float],
    training_batches: list[str],
) -> ModelVersion:
    """Log the model (with its transform, signature, example) in the active run and register it.

    Returns the version already registered under ``run_key`` if there is one. A new version
    starts ``registration=incomplete``; :func:`record_decision` completes it. If creating the
    version fails half-way, the half-made version is deleted before the error propagates.
    """
    existing = find_version(client, settings, run_key)
    if existing is not None:
        return existing
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_model needs the pipeline's active MLflow run (see pipeline_run)")
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    info = log_price_model(model, input_example)
    _ensure_registered_model(client, settings.model_name)
    tags = {RUN_KEY_TAG: run_key, REGISTRATION_TAG: INCOMPLETE, BATCHES_TAG: json.dumps(training_batches),
            METRICS_TAG: json.dumps(metrics)}  # fmt: skip
    version = client.create_model_version(
        settings.model_name, info.model_uri, run_id=run.info.run_id, tags=tags, model_id=info.model_id
    )
    if version.status != "READY":
        _delete_quietly(client, settings.model_name, version.version)
        raise RuntimeError(f"model version {version.version} ended {version.status}: {version.status_message}")
    return version


def _delete_quietly(client: MlflowClient, name: str, version: str) -> None:
    with suppress(MlflowException):
        client.delete_model_version(name, version)


def recorded_decision(version: ModelVersion) -> dict | None:
    """The decision tagged on a version, or None if none was recorded yet."""
    tags = version.tags or {}
    if DECISION_TAG not in tags:
        return None
    return {
        "outcome": tags[DECISION_TAG],
        "reason": tags.get(REASON_TAG, ""),
        "numbers": json.loads(tags.get(NUMBERS_TAG, "{}")),
        "metrics": json.loads(tags.get(METRICS_TAG, "{}")),
    }


def record_decision(
    client: MlflowClient, settings: Settings, version: ModelVersion, outcome: str, reason: str, numbers: dict
) -> None:
    """Tag the decision, then move aliases, then mark the registration complete (in that order)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    name, number = settings.model_name, str(version.version)
    if recorded_decision(version) is None:
        tags = {DECISION_TAG: outcome, REASON_TAG: reason[:5000], NUMBERS_TAG: json.dumps(numbers),
                DECIDED_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        for key, value in tags.items():
            client.set_model_version_tag(name, number, key, value)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, number)
    if outcome in ("first_model", "promoted"):
        client.set_registered_model_alias(name, settings.model_alias, number)
    client.set_model_version_tag(name, number, REGISTRATION_TAG, COMPLETE)


def is_complete(version: ModelVersion) -> bool:
    return (version.tags or {}).get(REGISTRATION_TAG) == COMPLETE


def promotion_history(settings: Settings, *, client: MlflowClient | None = None, limit: int = 100) -> list[dict]:
    """Every decided version, newest first: version, decision, reason, numbers, metrics, aliases."""
    client = client or MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    try:
        aliases_of = client.get_registered_model(settings.model_name).aliases or {}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for alias, number in aliases_of.items():
        by_version.setdefault(str(number), []).append(alias)
    history = []
    newest_first = client.search_model_versions(
        f"name = '{settings.model_name}'", max_results=limit, order_by=["version_number DESC"]
    )
    for version in newest_first:
        decision = recorded_decision(version)
        if decision is None:
            continue
        tags = version.tags or {}
        history.append(
            {
                "version": str(version.version),
                "run_id": version.run_id,
                "run_key": tags.get(RUN_KEY_TAG),
                "decided_at": tags.get(DECIDED_AT_TAG),
                "registration": tags.get(REGISTRATION_TAG),
                "training_batches": json.loads(tags.get(BATCHES_TAG, "[]")),
                "aliases": sorted(by_version.get(str(version.version), [])),
                "decision": decision["outcome"],
                "reason": decision["reason"],
                "numbers": decision["numbers"],
                "metrics": decision["metrics"],
            }
        )
    return sorted(history, key=lambda h: -int(h["version"]))

"""The registry contract: what each model version records, and the one way to read and decide on it.

Aliases, not stages: ``challenger`` points at the newest candidate, ``settings.model_alias``
(``champion``) at what Serve loads. Every decision (first_model / promoted / rejected, its reason
and the numbers behind it) is written as tags on the model version, so the registry itself is
the promotion history. The pipeline writes these tags (:func:`record_decision`); the Serve app's
``GET /model``, the CLI and the live jobs read them back as :class:`VersionRecord`.

Crash safety: a version is tagged ``registration=incomplete`` when it is created and
``complete`` only after its decision and aliases are in place. Decision tags are written before
any alias moves, so a run that crashed mid-promotion re-applies the same decision instead of
comparing the new champion with itself.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Literal

import httpx
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, Field
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from rayestate.settings import Settings

CHALLENGER_ALIAS = "challenger"
Outcome = Literal["first_model", "promoted", "rejected"]
OUTCOMES: tuple[str, ...] = Outcome.__args__
INCOMPLETE, COMPLETE = "incomplete", "complete"


class Tag:
    """Model-version tag names (public: other tools read them in MLflow)."""

    RUN_KEY = "pipeline_run_key"
    REGISTRATION = "registration"
    BATCHES = "training_batches"
    METRICS = "metrics"
    DECISION = "decision"
    REASON = "reason"
    NUMBERS = "decision_numbers"
    DECIDED_AT = "decided_at"
    SERVING_COST = "serving_cost"


#: MLflow's own HTTP retries default to 7 with exponential backoff (minutes when the server is down).
MLFLOW_RETRY_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}  # fmt: skip


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached."""


class VersionRecord(BaseModel):
    """One registered model version as the registry records it."""

    version: str
    run_id: str | None = None
    created_at: str | None = Field(None, description="When the version was registered (UTC, ISO 8601)")
    aliases: list[str] = Field(default_factory=list)
    run_key: str | None = Field(None, description="The pipeline run (hash of its batch ids) that registered it")
    registration: str | None = Field(None, description="'complete' once its decision and aliases are in place")
    training_batches: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out test metrics")
    serving_cost: dict[str, float] = Field(
        default_factory=dict,
        description="Measured TreeSHAP ms and prediction µs per row (one thread), trees, and the budget it was chosen in",
    )
    decision: Outcome | None = Field(None, description="None until the pipeline decided on it")
    reason: str | None = None
    numbers: dict[str, float] = Field(default_factory=dict, description="The comparison behind the decision")
    decided_at: str | None = None

    @classmethod
    def of(cls, version: ModelVersion, aliases: list[str] | None = None) -> VersionRecord:
        tags = version.tags or {}
        created = version.creation_timestamp
        return cls(
            version=str(version.version),
            run_id=version.run_id,
            created_at=datetime.fromtimestamp(created / 1000, UTC).isoformat() if created else None,
            aliases=sorted(aliases or []),
            run_key=tags.get(Tag.RUN_KEY),
            registration=tags.get(Tag.REGISTRATION),
            training_batches=json.loads(tags.get(Tag.BATCHES, "[]")),
            metrics=json.loads(tags.get(Tag.METRICS, "{}")),
            serving_cost=json.loads(tags.get(Tag.SERVING_COST, "{}")),
            decision=tags.get(Tag.DECISION),
            reason=tags.get(Tag.REASON),
            numbers=json.loads(tags.get(Tag.NUMBERS, "{}")),
            decided_at=tags.get(Tag.DECIDED_AT),
        )

    @property
    def decided(self) -> bool:
        return self.decision is not None

    @property
    def complete(self) -> bool:
        return self.registration == COMPLETE


# --- connecting ----------------------------------------------------------------------------------


@retry(
    retry=retry_if_exception_type(httpx.HTTPError),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=2),
    reraise=True,
)
def check_health(uri: str) -> None:
    """Raise httpx.HTTPError unless the tracking server answers /health (a few short retries)."""
    httpx.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()


def connect(settings: Settings) -> MlflowClient:
    """A client for the tracking server, after checking it answers.

    Raises MlflowUnavailable naming the URI, within seconds, instead of MLflow's own long
    retry loop. Also shortens MLflow's HTTP retries for this process (unless set already).
    """
    uri = settings.mlflow_tracking_uri
    for key, value in MLFLOW_RETRY_ENV.items():
        os.environ.setdefault(key, value)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if uri.startswith(("http://", "https://")):
            check_health(uri)
        else:
            client.search_experiments(max_results=1)
    except (httpx.HTTPError, MlflowException, OSError) as exc:
        raise MlflowUnavailable(
            f"MLflow tracking server at {uri} is unreachable ({type(exc).__name__}: {exc}); "
            "start it or set RAYESTATE_MLFLOW_TRACKING_URI"
        ) from exc
    return client


# --- reading ---------------------------------------------------------------------------------------


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def aliases_by_version(client: MlflowClient, name: str) -> dict[str, list[str]]:
    """version -> its aliases ({} when the model is not registered yet)."""
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException as exc:
        if _missing(exc):
            return {}
        raise
    by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    return by_version


def version_by_alias(client: MlflowClient, settings: Settings, alias: str | None = None) -> VersionRecord | None:
    """The version an alias (default: the serving alias) points at, or None when it points nowhere."""
    alias = alias or settings.model_alias
    try:
        version = client.get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if _missing(exc):
            return None
        raise
    return VersionRecord.of(version, aliases_by_version(client, settings.model_name).get(str(version.version)))


def champion(client: MlflowClient, settings: Settings) -> VersionRecord | None:
    """The version Serve loads (``settings.model_alias``), or None when there is no champion yet."""
    return version_by_alias(client, settings)


def find_version(client: MlflowClient, settings: Settings, run_key: str) -> VersionRecord | None:
    """The version a pipeline run with this key registered before (complete or not), if any."""
    versions = client.search_model_versions(f"name = '{settings.model_name}' and tags.{Tag.RUN_KEY} = '{run_key}'")
    if not versions:
        return None
    first = min(versions, key=lambda v: int(v.version))
    return VersionRecord.of(first, aliases_by_version(client, settings.model_name).get(str(first.version)))


def versions(
    client: MlflowClient, settings: Settings, *, limit: int = 100, decided_only: bool = False
) -> list[VersionRecord]:
    """Registered versions, newest first (only those with a decision, if ``decided_only``)."""
    aliases = aliases_by_version(client, settings.model_name)
    found = client.search_model_versions(
        f"name = '{settings.model_name}'", max_results=limit, order_by=["version_number DESC"]
    )
    records = [VersionRecord.of(v, aliases.get(str(v.version))) for v in found]
    records.sort(key=lambda r: -int(r.version))
    return [r for r in records if r.decided] if decided_only else records


def promotion_history(client: MlflowClient, settings: Settings, *, limit: int = 100) -> list[VersionRecord]:
    """Every decided version, newest first: the promotion history."""
    return versions(client, settings, limit=limit, decided_only=True)


# --- deciding --------------------------------------------------------------------------------------


def record_decision(
    client: MlflowClient, settings: Settings, version: str, outcome: str, reason: str, numbers: dict
) -> VersionRecord:
    """Tag the decision, then move aliases, then mark the registration complete (in that order).

    A version that already carries a decision keeps it (a re-run re-applies, never re-decides).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    name, number = settings.model_name, str(version)
    if not VersionRecord.of(client.get_model_version(name, number)).decided:
        tags = {Tag.DECISION: outcome, Tag.REASON: reason[:5000], Tag.NUMBERS: json.dumps(numbers),
                Tag.DECIDED_AT: datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        for key, value in tags.items():
            client.set_model_version_tag(name, number, key, value)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, number)
    if outcome in ("first_model", "promoted"):
        client.set_registered_model_alias(name, settings.model_alias, number)
    client.set_model_version_tag(name, number, Tag.REGISTRATION, COMPLETE)
    return VersionRecord.of(client.get_model_version(name, number), aliases_by_version(client, name).get(number))

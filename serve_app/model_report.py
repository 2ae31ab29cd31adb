"""What ``GET /model`` reports (:class:`rayestate.api.ModelReport`), read from the registry and the store.

The champion and every version's decision come from the registry contract
(:mod:`rayestate.registry`); the pipeline's runs and drift reports from the store
(:mod:`rayestate.history`). So the UI needs only the API.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from rayestate import history, model_card, registry
from rayestate.api import ChampionDetails, FeatureLabel, ModelReport, ReplicaStatus
from rayestate.features import FEATURE_LABELS, FEATURES
from rayestate.schema import STATES, STATUSES
from rayestate.settings import Settings

HISTORY_LIMIT = 50
DRIFT_LIMIT = 10


def _note(what: str, exc: Exception) -> str:
    return f"could not read {what}: {type(exc).__name__}: {exc}"[:300]


def champion_details(client: MlflowClient, settings: Settings) -> ChampionDetails | None:
    """The champion's registry record, with its training run's parameters, metrics and end time."""
    record = registry.champion(client, settings)
    if record is None:
        return None
    run = client.get_run(record.run_id) if record.run_id else None
    ended = run.info.end_time if run else None
    return ChampionDetails(
        **record.model_dump(),
        trained_at=datetime.fromtimestamp(ended / 1000, UTC).isoformat() if ended else None,
        params=dict(sorted(run.data.params.items())) if run else {},
        run_metrics={k: v for k, v in sorted((run.data.metrics if run else {}).items()) if math.isfinite(v)},
        card=model_card.read(client, record),
    )


def model_report(settings: Settings, served: dict | None = None) -> ModelReport:
    """The whole report; raises if the registry cannot be read (the caller says so in its answer)."""
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    report = ModelReport(
        model_name=settings.model_name,
        model_alias=settings.model_alias,
        registry_available=True,
        champion=champion_details(client, settings),
        served=ReplicaStatus(**served) if served else None,
        promotion_history=registry.versions(client, settings, limit=HISTORY_LIMIT),
        categories={"state": list(STATES), "status": list(STATUSES)},
        features=[FeatureLabel(name=f, label=FEATURE_LABELS.get(f, f)) for f in FEATURES],
    )
    try:
        report.drift_reports = history.drift_reports(settings, DRIFT_LIMIT)
    except Exception as exc:
        report.drift_note = _note("the drift reports", exc)
    try:
        report.pipeline_runs = history.pipeline_runs(settings, DRIFT_LIMIT)
    except Exception as exc:
        report.pipeline_runs_note = _note("the pipeline runs", exc)
    try:
        report.live_quality = history.live_quality(settings)
    except Exception as exc:
        report.live_quality = {"note": _note("the live quality report", exc)}
    return report


def unavailable_report(settings: Settings, served: dict | None, exc: Exception) -> ModelReport:
    """What /model answers when the registry cannot be read: what is served, and why nothing else."""
    return ModelReport(
        model_name=settings.model_name,
        model_alias=settings.model_alias,
        registry_available=False,
        registry_error=f"{type(exc).__name__}: {exc}"[:300],
        served=ReplicaStatus(**served) if served else None,
    )

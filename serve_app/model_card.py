"""What ``GET /model`` reports: the champion, how it got there, and the latest drift reports.

Read from the MLflow registry (alias, version tags, run metrics) so the UI needs only the API.
Promotion history is whatever tags the registry job wrote on each model version (decision,
reason, metrics, ...), read generically so new tags show up without a code change here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from rayestate.features import FEATURE_LABELS, FEATURES
from rayestate.schema import STATES, STATUSES
from rayestate.settings import Settings

HISTORY_LIMIT = 50
DRIFT_LIMIT = 10


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def _plain(value):
    """JSON-safe copy of whatever a helper returned (dataclasses, numpy, NaN become plain values)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    text = json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return json.loads(text, parse_constant=lambda _: None)


def _finite_metrics(metrics: dict) -> dict:
    return {k: v for k, v in sorted(metrics.items()) if isinstance(v, int | float) and math.isfinite(v)}


def _maybe_json(text):
    if isinstance(text, str) and text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def drift_reports(settings: Settings, limit: int = DRIFT_LIMIT) -> tuple[list, str | None]:
    """Latest drift reports from the drift job's store, or [] and a note saying why not."""
    try:
        from ray_jobs.drift import load_drift_history
    except ImportError:
        return [], "drift reports are not available: ray_jobs.drift is not installed yet"
    try:
        return [_plain(report) for report in load_drift_history(settings, limit)], None
    except Exception as exc:
        return [], f"could not read drift reports: {type(exc).__name__}: {exc}"[:300]


def pipeline_runs(settings: Settings, limit: int = DRIFT_LIMIT) -> tuple[list, str | None]:
    """The pipeline's finished runs (its ledger), newest first, or [] and a note saying why not."""
    try:
        from ray_jobs.pipeline import pipeline_history

        return pipeline_history(settings, limit), None
    except Exception as exc:
        return [], f"could not read the pipeline runs: {type(exc).__name__}: {exc}"[:300]


def model_card(settings: Settings, served: dict | None = None) -> dict:
    """The champion's registry record, run metrics, promotion history and drift reports."""
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    name, alias = settings.model_name, settings.model_alias
    champion = client.get_model_version_by_alias(name, alias)
    run = client.get_run(champion.run_id) if champion.run_id else None
    params = run.data.params if run else {}
    run_tags = {k: v for k, v in (run.data.tags if run else {}).items() if not k.startswith("mlflow.")}
    meta = (served or {}).get("meta") or {}
    trained_at = (
        run_tags.get("trained_at") or params.get("trained_at") or meta.get("trained_at")
        or _iso(run.info.end_time if run else None)
    )  # fmt: skip
    batches = (
        (champion.tags or {}).get("training_batches") or run_tags.get("training_batches")
        or params.get("training_batches") or meta.get("training_batches")
    )  # fmt: skip
    versions = client.search_model_versions(f"name = '{name}'", max_results=HISTORY_LIMIT)
    aliases: dict[str, list[str]] = {}
    for alias_name, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias_name)
    history = [
        {
            "version": str(v.version),
            "created_at": _iso(v.creation_timestamp),
            "run_id": v.run_id,
            "aliases": sorted(aliases.get(str(v.version), [])),
            "tags": {k: _maybe_json(t) for k, t in sorted((v.tags or {}).items())},
        }
        for v in sorted(versions, key=lambda v: -int(v.version))
    ]
    drift, drift_note = drift_reports(settings)
    runs, runs_note = pipeline_runs(settings)
    return {
        "model_name": name,
        "model_alias": alias,
        "registry_available": True,
        "champion": {
            "version": str(champion.version),
            "run_id": champion.run_id,
            "registered_at": _iso(champion.creation_timestamp),
            "trained_at": trained_at,
            "training_batches": _maybe_json(batches),
            "metrics": _finite_metrics(run.data.metrics if run else {}),
            "params": dict(sorted(params.items())),
            "tags": {k: _maybe_json(t) for k, t in sorted((champion.tags or {}).items())},
            "run_tags": dict(sorted(run_tags.items())),
        },
        "served": served,
        "promotion_history": history,
        "drift_reports": drift,
        "drift_note": drift_note,
        "pipeline_runs": runs,
        "pipeline_runs_note": runs_note,
        "categories": {"state": list(STATES), "status": list(STATUSES)},
        "features": [{"name": f, "label": FEATURE_LABELS.get(f, f)} for f in FEATURES],
    }

"""What the pipeline has done, kept in the data store: its ledger of finished runs and its drift reports.

The pipeline (``ray_jobs``) writes both; the Serve app's ``GET /model`` and the live-drift job
read them. They are plain JSON documents, each published atomically by :mod:`rayestate.store`,
so a reader never sees half a document and a re-run replaces its own entry:

    <store>/pipeline/ledger/<run key>.json    one finished run (its batches, outcome, reason, ...)
    <store>/drift/<report id>.json            one drift report (a batch id, or live-<UTC time>)
    <store>/live_quality/latest.json          live accuracy per model version (and <UTC time>.json copies)
"""

from __future__ import annotations

import re

from rayestate import store
from rayestate.settings import Settings

LEDGER = "pipeline/ledger"
DRIFT_DIR = "drift"
LIVE_QUALITY_DIR = "live_quality"
_REPORT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


# --- the pipeline's ledger ----------------------------------------------------------------------


def record_run(settings: Settings, entry: dict) -> str:
    """Publish a finished run (``entry`` has ``run_key`` and ``batches``); its batches stop being pending."""
    return store.put_json(settings, f"{LEDGER}/{entry['run_key']}.json", entry)


def decided_batches(settings: Settings) -> set[str]:
    """Every batch a finished run has decided on."""
    return {batch for entry in store.list_json(settings, LEDGER) for batch in entry["batches"]}


def pipeline_runs(settings: Settings, limit: int = 50) -> list[dict]:
    """Finished runs, newest first."""
    entries = store.list_json(settings, LEDGER)
    return sorted(entries, key=lambda e: e.get("finished_at", ""), reverse=True)[:limit]


# --- drift reports ---------------------------------------------------------------------------------


def save_drift_report(settings: Settings, report_id: str, report: dict) -> str:
    """Publish a drift report (as ``DriftReport.to_dict()`` gives it) under its id; returns its path."""
    if not _REPORT_ID.fullmatch(report_id):
        raise ValueError(f"report id {report_id!r} is not a safe file name (letters, digits, '.', '_', '-')")
    return store.put_json(settings, f"{DRIFT_DIR}/{report_id}.json", {**report, "batch_id": report_id})


def drift_reports(settings: Settings, limit: int = 20) -> list[dict]:
    """The newest ``limit`` reports, newest first (an empty list before the first one)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    reports = store.list_json(settings, DRIFT_DIR)
    reports.sort(key=lambda r: (r.get("created_at", ""), r.get("batch_id") or ""), reverse=True)
    return reports[:limit]


# --- live quality ------------------------------------------------------------------------------------


def save_live_quality(settings: Settings, report: dict) -> str:
    """Publish a live quality report (ray_jobs.live_quality) as the latest, and keep a dated copy."""
    stamp = report["generated_at"].replace(":", "").replace("+0000", "Z")
    store.put_json(settings, f"{LIVE_QUALITY_DIR}/{stamp}.json", report)
    return store.put_json(settings, f"{LIVE_QUALITY_DIR}/latest.json", report)


def live_quality(settings: Settings) -> dict | None:
    """The latest live quality report, or None before the first."""
    return store.get_json(settings, f"{LIVE_QUALITY_DIR}/latest.json")

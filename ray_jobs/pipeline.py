"""One pipeline run: ingest -> clean -> drift -> decide -> (tune -> evaluate -> register -> promote) -> record.

Run it as ``python -m ray_jobs.pipeline`` — locally, through ``ray job submit``, or from a
KubeRay RayJob/RayCronJob. Resumable by construction:

* every fetched batch is published to the raw store before anything else happens, and cleaning
  is a no-op for a batch already cleaned;
* the batches a run decides on are the *pending* ones: clean batches that no finished run has
  recorded in the ledger (``<store>/pipeline/ledger/``). A run killed at any step leaves its
  batches pending, so the re-run picks them up without fetching them again;
* a run is keyed by its pending batch ids; the registry finds a version already registered
  under that key instead of registering a second one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ray_jobs import drift, live_quality, register, stages
from ray_jobs.challenger import train_and_decide
from ray_jobs.clean import clean_batch
from ray_jobs.decide import should_retrain
from ray_jobs.ingest import ingest_batch
from ray_jobs.outcomes import record_outcomes
from ray_jobs.pipeline_metrics import record_pipeline_metrics
from ray_jobs.quarantine import fetch_batch_or_quarantine
from ray_jobs.source import read_file_batches
from rayestate import history, registry, store
from rayestate.settings import Settings, load_settings


@dataclass
class PipelineResult:
    """What one run did; also the ledger entry and the job's last line of output."""

    run_key: str
    outcome: str  # no_new_data | skipped | first_model | promoted | rejected
    reason: str
    batches: list[str] = field(default_factory=list)
    new_rows: int = 0
    rows_ingested: int = 0
    drift_verdict: str | None = None
    model_version: str | None = None
    mlflow_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    finished_at: str = ""
    #: The live quality report of this run (not kept in the ledger: it is published on its own).
    live: dict | None = field(default=None, repr=False)


# --- stages ----------------------------------------------------------------------------------


def ingest_new_batches(settings: Settings, max_batches: int) -> list[store.RawRecord]:
    """Fetch up to max_batches new batches, publish them raw, clean them; returns their raw records.

    A malformed data-API answer is quarantined (ray_jobs.quarantine) and stops the run with a
    clear error; the raw store never sees it.
    """
    ingested = []
    batches = _new_batches(settings, max_batches)
    while True:
        with stages.stage("ingest"):  # fetching (over HTTP) and publishing the raw batch
            batch = next(batches, None)
            if batch is None:
                break
            record = ingest_batch(settings, batch)
        with stages.stage("clean"):
            clean_batch(settings, record.batch_id)
        ingested.append(record)
        print(f"[pipeline] batch {record.batch_id}: {record.rows:,} raw rows ingested and cleaned", flush=True)
    return ingested


def _new_batches(settings: Settings, max_batches: int):
    if settings.source_path is not None:
        done = {r.batch_id for r in store.list_records(settings, "raw")}
        fresh = (b for b in read_file_batches(settings.source_path, settings.file_batch_rows) if b.batch_id not in done)
        for _, batch in zip(range(max_batches), fresh, strict=False):
            yield batch
        return
    for _ in range(max_batches):
        batch = fetch_batch_or_quarantine(settings)
        if batch is None:
            print("[pipeline] data API has no new batch", flush=True)
            return
        yield batch


def pending_batches(settings: Settings) -> list[str]:
    """Clean batches that no finished run has decided on yet, oldest first."""
    decided = history.decided_batches(settings)
    return [r.batch_id for r in store.list_records(settings, "clean") if r.batch_id not in decided]


def run_key_of(batch_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(batch_ids)).encode()).hexdigest()[:16]


def record_result(settings: Settings, result: PipelineResult) -> None:
    """Close the run: its batches stop being pending."""
    result.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    history.record_run(settings, {k: v for k, v in asdict(result).items() if k != "live"})


# --- the run ---------------------------------------------------------------------------------


def run_pipeline(settings: Settings, *, max_batches: int | None = None) -> PipelineResult:
    """One full run; see the module docstring. Raises on real failures (the job then fails)."""
    stages.reset()
    connect_ray(settings)
    client = registry.connect(settings)  # fails fast, naming the URI, when MLflow is unreachable
    rows_ingested = sum(r.rows for r in ingest_new_batches(settings, max_batches or settings.max_batches_per_run))
    pending = pending_batches(settings)
    matched = sum(record_outcomes(settings, batch) for batch in pending)  # sold homes we priced earlier
    live = live_quality.live_quality(settings, client=client)
    live_quality.publish(settings, live, client=client)
    print(f"[pipeline] live quality: {matched} sold home(s) matched in new batches, {live['matched_homes']} in all",
          flush=True)  # fmt: skip
    if not pending:
        return PipelineResult(
            run_key="-", outcome="no_new_data", reason="no new batch since the last run", rows_ingested=rows_ingested,
            live=live,
        )  # fmt: skip

    run_key = run_key_of(pending)
    records = {r.batch_id: r for r in store.list_records(settings, "clean")}
    new_rows = sum(records[b].rows for b in pending)
    champion = registry.champion(client, settings)
    trained_on = set(champion.training_batches) if champion else set()
    rows_since_training = sum(r.rows for b, r in records.items() if b not in trained_on)

    report = None
    if champion and trained_on:
        print(f"[pipeline] drift: {len(pending)} new batch(es) vs the champion's {len(trained_on)}", flush=True)
        with stages.stage("drift"):
            report = drift.drift_report(
                store.read_dataset(settings, "clean", sorted(trained_on & records.keys())),
                store.read_dataset(settings, "clean", pending),
                settings,
            )
            drift.save_drift_report(settings, pending[-1], report)
        print(f"[pipeline] drift verdict: {report.verdict} — {report.reason}", flush=True)
    retrain, reason = should_retrain(
        champion is not None, report, rows_since_training, settings,
        live_degraded=live_quality.degraded(live, champion, settings),
    )  # fmt: skip

    result = PipelineResult(
        run_key=run_key, outcome="skipped", reason=reason, batches=pending, new_rows=new_rows,
        rows_ingested=rows_ingested, drift_verdict=report.verdict if report else None, live=live,
    )  # fmt: skip
    with register.pipeline_run(client, settings, run_key, pending, records) as run:
        result.mlflow_run_id = run.info.run_id
        if report is not None:
            register.log_drift(report)
        if retrain:
            print(f"[pipeline] retraining: {reason}", flush=True)
            decision = train_and_decide(client, settings, run_key, records, champion)
            result.outcome, result.reason = decision.outcome, decision.reason
            result.model_version, result.metrics = decision.version, decision.metrics
        else:
            print(f"[pipeline] {reason}", flush=True)
        register.log_outcome(result.outcome, result.reason)
    record_result(settings, result)
    return result


def source_label(settings: Settings) -> str:
    """The metrics' source tag: "file" or "api"."""
    return "file" if settings.source_path is not None else "api"


def connect_ray(settings: Settings) -> None:
    """Join the cluster (inside a Ray Job, RAY_ADDRESS points at it); reuse an existing connection."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if not ray.is_initialized():
        ray.init(address=settings.ray_address, log_to_driver=True)


def alive_nodes() -> int | None:
    """Alive nodes of the cluster this run joined (None when it never joined one)."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive")) if ray.is_initialized() else None


# --- command line ----------------------------------------------------------------------------

#: CLI flag -> Settings field; every flag is optional and overrides the RAYESTATE_* env value.
FLAGS = {
    "--source-url": ("data_api_url", str),
    "--group": ("group_number", int),
    "--day": ("day", str),
    "--source-path": ("source_path", str),
    "--max-batches": ("max_batches_per_run", int),
    "--tune-samples": ("tune_num_samples", int),
    "--tune-time-budget": ("tune_time_budget_s", float),
    "--tune-concurrency": ("tune_max_concurrent", int),
    "--retrain-min-new-rows": ("retrain_min_new_rows", int),
    "--drift-effect-threshold": ("drift_effect_threshold", float),
    "--drift-alpha": ("drift_alpha", float),
    "--bootstrap-samples": ("bootstrap_samples", int),
    "--promotion-min-improvement": ("promotion_min_improvement", float),
}


def parse_args(argv: list[str] | None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.pipeline", description=__doc__.splitlines()[0])
    for flag, (name, kind) in FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, help=Settings.model_fields[name].description)
    return vars(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    try:
        settings = load_settings(**parse_args(argv))
    except ValueError as exc:
        print(f"pipeline: invalid settings: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_pipeline(settings)
    except Exception as exc:
        print(f"pipeline: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    record_pipeline_metrics(result, rows_ingested=result.rows_ingested, source=source_label(settings))
    summary = {
        **{k: v for k, v in asdict(result).items() if k != "live"},
        "seconds": round(time.monotonic() - started, 1),
        "stages": stages.seconds(),  # wall seconds per stage (benchmarks/scale_bench.py reads them)
        "nodes": alive_nodes(),
    }
    print(f"[pipeline] {result.outcome}: {result.reason}", flush=True)
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

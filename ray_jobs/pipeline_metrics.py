"""The pipeline's key figures as Ray metrics: rows ingested, drift verdicts, promotion decisions,
and live quality per model version (gauges: live MdAPE, matched sold homes, range coverage).

A pipeline run is a short-lived driver, and Ray exports a process's metrics every few seconds,
so a counter incremented just before the job exits could be lost. The counters therefore live in
one small detached actor per cluster (no CPU), which keeps exporting after the job has ended:
Prometheus sees them on the node's metrics port as ``ray_rayestate_*`` like the Serve metrics
(kuberay/monitoring/ scrapes them; the Grafana dashboard plots them). On a RayJob cluster that
is deleted after the run, the last scrape before deletion is what Prometheus keeps.
"""

from __future__ import annotations

import ray

ACTOR_NAME = "rayestate-pipeline-metrics"
NAMESPACE = "rayestate"
DECISIONS = ("first_model", "promoted", "rejected")
#: Live-quality figures (a version's entry in ray_jobs.live_quality's report) -> gauge name, description.
LIVE_GAUGES = {
    "mdape": (
        "rayestate_live_mdape",
        "Live MdAPE by model version: median |served - sold| / sold over the sold homes matched to what it served.",
    ),
    "matched_homes": ("rayestate_live_matched_homes", "Sold homes matched to the prices a model version served."),
    "range_coverage": (
        "rayestate_live_range_coverage",
        "Share of matched sold prices inside the price range the model version served.",
    ),
}


@ray.remote(num_cpus=0, max_restarts=-1)
class PipelineMetrics:
    def __init__(self):
        from ray.util.metrics import Counter, Gauge

        self.rows = Counter(
            "rayestate_rows_ingested_total",
            description="Raw rows the pipeline ingested, by data source.",
            tag_keys=("source",),
        )
        self.drift = Counter(
            "rayestate_drift_verdicts_total",
            description="Drift checks of new batches against the champion's training data, by verdict.",
            tag_keys=("verdict",),
        )
        self.decisions = Counter(
            "rayestate_promotions_total",
            description="Challenger decisions: first_model, promoted or rejected.",
            tag_keys=("decision",),
        )
        self.runs = Counter(
            "rayestate_pipeline_runs_total",
            description="Finished pipeline runs by outcome (no_new_data, skipped, first_model, promoted, rejected).",
            tag_keys=("outcome",),
        )
        self.live = {
            figure: Gauge(name, description=description, tag_keys=("model_version",))
            for figure, (name, description) in LIVE_GAUGES.items()
        }

    def record(self, outcome: str, rows: int, source: str, verdict: str | None) -> None:
        self.runs.inc(tags={"outcome": outcome})
        if rows:
            self.rows.inc(rows, tags={"source": source})
        if verdict:
            self.drift.inc(tags={"verdict": verdict})
        if outcome in DECISIONS:
            self.decisions.inc(tags={"decision": outcome})

    def set_live_quality(self, versions: dict[str, dict]) -> None:
        """Set each version's live figures from a live-quality report's ``versions`` (None: left as is)."""
        for version, figures in versions.items():
            for figure, gauge in self.live.items():
                if figures.get(figure) is not None:
                    gauge.set(float(figures[figure]), tags={"model_version": str(version)})


def metrics_actor():
    """The cluster's metrics actor (created on first use; needs a connected Ray)."""
    return PipelineMetrics.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()


def record_pipeline_metrics(result, *, rows_ingested: int, source: str = "api", timeout_s: float = 30.0) -> None:
    """Count one finished run (a PipelineResult) and set the live-quality gauges from its report
    (``result.live``, when it has one). Best effort: metrics never fail a run."""
    try:
        actor = metrics_actor()
        calls = [actor.record.remote(result.outcome, int(rows_ingested), source, result.drift_verdict)]
        live = getattr(result, "live", None)
        if live and live.get("versions"):
            calls.append(actor.set_live_quality.remote(live["versions"]))
        ray.get(calls, timeout=timeout_s)
    except Exception as exc:
        print(f"[pipeline] metrics not recorded: {type(exc).__name__}: {exc}", flush=True)

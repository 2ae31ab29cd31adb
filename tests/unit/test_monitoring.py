"""The Grafana dashboard plots exactly the metrics the code defines (that they reach Ray's Prometheus
endpoint is tested in integration/test_monitoring.py)."""

from __future__ import annotations

import json
import re

from rayestate.localstack import REPO

DASHBOARD = REPO / "kuberay/monitoring/rayestate-dashboard.json"
METRIC_SOURCES = [REPO / "serve_app/metrics.py", REPO / "ray_jobs/pipeline_metrics.py"]


def defined_metrics() -> set[str]:
    return {name for path in METRIC_SOURCES for name in re.findall(r'"(rayestate_\w+)"', path.read_text())}


def dashboard_metrics() -> set[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = " ".join(target["expr"] for panel in panels for target in panel.get("targets", []))
    return {m.removeprefix("ray_").removesuffix("_bucket") for m in re.findall(r"\bray_rayestate_\w+", exprs)}


def test_the_dashboard_plots_only_metrics_the_code_defines():
    defined = defined_metrics()
    assert {"rayestate_rows_ingested_total", "rayestate_drift_verdicts_total", "rayestate_promotions_total"} <= defined
    plotted = dashboard_metrics()
    assert plotted - defined == set(), "the dashboard plots metrics nothing exports"
    unplotted = defined - plotted - {"rayestate_pipeline_runs_total"}
    assert not unplotted, f"metrics without a panel: {unplotted}"

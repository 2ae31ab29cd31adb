"""Monitoring: the pipeline's metrics reach Ray's Prometheus endpoint, and the Grafana dashboard
plots exactly the metrics the code defines (the Serve request metrics are in test_serve_api.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.support.servers import FaultProxy

REPO = Path(__file__).resolve().parents[1]
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


def metric_value(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_pipeline_figures_are_exported_as_ray_metrics(ray_cluster):
    from ray_jobs.pipeline_metrics import record_pipeline_metrics

    port = ray_cluster.address_info["metrics_export_port"]
    source = f"test-{time.monotonic_ns()}"  # a label no other test uses
    record_pipeline_metrics(
        SimpleNamespace(outcome="promoted", drift_verdict="drift"), rows_ingested=1234, source=source
    )
    record_pipeline_metrics(SimpleNamespace(outcome="skipped", drift_verdict=None), rows_ingested=66, source=source)
    rows = scrape_until(port, "ray_rayestate_rows_ingested_total", 1300, source=source)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert rows == 1300
    assert (metric_value(text, "ray_rayestate_promotions_total", decision="promoted") or 0) >= 1
    assert (metric_value(text, "ray_rayestate_drift_verdicts_total", verdict="drift") or 0) >= 1
    assert (metric_value(text, "ray_rayestate_pipeline_runs_total", outcome="skipped") or 0) >= 1


def scrape_until(port: int, name: str, want: float, timeout_s: float = 120.0, **labels) -> float | None:
    """Poll Ray's Prometheus endpoint until ``name{labels}`` reaches ``want`` (Ray exports every few s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = metric_value(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text, name, **labels)
        if (value or 0) >= want or time.monotonic() > deadline:
            return value
        time.sleep(2)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_pipeline_entry_point_counts_its_run(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    """`python -m ray_jobs.pipeline`'s main() records the run's outcome; here the data API (a loopback
    stand-in answering the course API's 'exhausted' 400) has nothing new."""
    from ray_jobs import pipeline
    from rayestate.devstack.data_api import EXHAUSTED_DETAIL

    port = ray_cluster.address_info["metrics_export_port"]
    before = metric_value(
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text,
        "ray_rayestate_pipeline_runs_total", outcome="no_new_data",
    ) or 0  # fmt: skip
    exhausted = (400, json.dumps({"detail": EXHAUSTED_DETAIL}).encode())
    monkeypatch.setenv("RAYESTATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAYESTATE_MLFLOW_TRACKING_URI", mlflow_server)
    with FaultProxy(None, [exhausted]) as api:
        assert pipeline.main(["--source-url", api.url]) == 0
    after = scrape_until(port, "ray_rayestate_pipeline_runs_total", before + 1, outcome="no_new_data")
    assert after == before + 1

"""The pipeline's metrics reach Ray's Prometheus endpoint, counted exactly (the Serve request metrics
are in test_serve_api.py; the dashboard check is in unit/test_monitoring.py).

The counters are shared by the whole session (one detached actor per cluster), so each test
measures them before and after its own action, between barriers (tests.support.metrics), and
asserts the exact increase; labels only this test uses make the rows count unambiguous.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest

from tests.support.metrics import DRIFT, ROWS, RUNS, metric_value, settle_pipeline_metrics
from tests.support.servers import FaultProxy

PROMOTIONS = "ray_rayestate_promotions_total"


def counts(text: str) -> dict[str, float]:
    """The counters this file's actions move, from one scrape."""
    return {
        "promoted": metric_value(text, PROMOTIONS, decision="promoted"),
        "drift": metric_value(text, DRIFT, verdict="drift"),
        "runs promoted": metric_value(text, RUNS, outcome="promoted"),
        "runs skipped": metric_value(text, RUNS, outcome="skipped"),
        "runs no_new_data": metric_value(text, RUNS, outcome="no_new_data"),
    }


@pytest.mark.timeout(300)
def test_pipeline_figures_are_exported_as_ray_metrics(ray_cluster):
    from ray_jobs.pipeline_metrics import record_pipeline_metrics

    port = ray_cluster.address_info["metrics_export_port"]
    source = f"test-{uuid.uuid4().hex[:12]}"  # a label no other test uses
    before = settle_pipeline_metrics(port)
    record_pipeline_metrics(
        SimpleNamespace(outcome="promoted", drift_verdict="drift"), rows_ingested=1234, source=source
    )
    record_pipeline_metrics(SimpleNamespace(outcome="skipped", drift_verdict=None), rows_ingested=66, source=source)
    after = settle_pipeline_metrics(port)

    assert metric_value(before, ROWS, source=source) == 0
    assert metric_value(after, ROWS, source=source) == 1234 + 66
    change = {name: value - counts(before)[name] for name, value in counts(after).items()}
    # one promoted run (a decision, with a drift verdict), one skipped run (no decision, no verdict)
    assert change == {"promoted": 1, "drift": 1, "runs promoted": 1, "runs skipped": 1, "runs no_new_data": 0}


@pytest.mark.timeout(300)
def test_the_pipeline_entry_point_counts_its_run(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    """`python -m ray_jobs.pipeline`'s main() records the run's outcome; here the data API (a loopback
    stand-in answering the course API's 'exhausted' 400) has nothing new."""
    from ray_jobs import pipeline
    from rayestate.devstack.data_api import EXHAUSTED_DETAIL

    port = ray_cluster.address_info["metrics_export_port"]
    exhausted = (400, json.dumps({"detail": EXHAUSTED_DETAIL}).encode())
    monkeypatch.setenv("RAYESTATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAYESTATE_MLFLOW_TRACKING_URI", mlflow_server)
    before = counts(settle_pipeline_metrics(port))
    with FaultProxy(None, [exhausted]) as api:
        assert pipeline.main(["--source-url", api.url]) == 0
    after = counts(settle_pipeline_metrics(port))
    assert {name: value - before[name] for name, value in after.items()} == {
        "promoted": 0, "drift": 0, "runs promoted": 0, "runs skipped": 0, "runs no_new_data": 1,
    }  # fmt: skip

"""Monitoring on one box: a real Prometheus (Debian's binary) scrapes the session's Ray cluster through
the service-discovery file Ray writes, and the product's metrics, read back from Prometheus's HTTP API
(``/api/v1/query``), rise by exactly what this test's traffic caused.

The session cluster is shared, and Ray pushes a process's metrics to its node's exporter only every
10 s, so a baseline is taken once the figures have stopped moving (earlier tests' traffic has all
arrived); then the test's own requests and pipeline figures must add exactly their counts, and still
do one export period later (nothing counted twice).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from rayestate import localstack, services
from rayestate.localstack import RAY_SD_FILE, PrometheusServer
from rayestate.settings import Settings
from tests.support.parts import missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

README = Path(__file__).resolve().parents[2] / "README.md"
SCRAPE_S = 2.0
RAY_EXPORT_S = 10.0  # Ray's metrics_report_interval_ms: how often a process pushes its metrics
LISTING = {"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500, "state": "Texas", "city": "Austin"}


@pytest.fixture(scope="module")
def prometheus(request, tmp_path_factory):
    """Prometheus scraping the session cluster through the SD file in that cluster's own session dir.

    (``make up`` points at ``<temp dir>/session_latest/``; the test cluster's temp dir may hold other
    engineers' sessions too, so the test names its session dir.)
    """
    if not shutil.which("prometheus"):  # before the cluster starts: a skip costs nothing
        missing("prometheus", "Debian's prometheus is not installed (`make test` installs it as root)")
    ray_cluster = request.getfixturevalue("ray_cluster")
    sd_file = Path(ray_cluster.address_info["session_dir"]) / RAY_SD_FILE
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), sd_file, scrape_interval_s=SCRAPE_S) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(prometheus, request):
    """The session cluster, asked for after ``prometheus`` (pytest sets session fixtures up first, so a
    test naming ``ray_cluster`` would start it even when Prometheus is missing and the test skips)."""
    return request.getfixturevalue("ray_cluster")


def value(prometheus: PrometheusServer, promql: str) -> float:
    """One number: the sum of the query's series (0 when there is none yet)."""
    return sum(float(series["value"][1]) for series in prometheus.query(promql))


def read(prometheus: PrometheusServer, queries: dict[str, str]) -> dict[str, float]:
    return {name: value(prometheus, promql) for name, promql in queries.items()}


def settled(prometheus, queries: dict[str, str], *, timeout_s: float = 240.0) -> dict[str, float]:
    """The figures once none has changed for an export period and a few scrapes."""
    quiet_s = RAY_EXPORT_S + 3 * SCRAPE_S
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while True:
        now = read(prometheus, queries)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
        assert time.monotonic() < deadline, f"the figures never settled: {now}"
        time.sleep(SCRAPE_S)


def reached(prometheus, queries: dict[str, str], want: dict[str, float], *, timeout_s: float = 120.0) -> dict:
    """Poll until every figure is at least what is wanted (or the time is up); returns the figures."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = read(prometheus, queries)
        if all(now[name] >= want[name] - 1e-9 for name in want) or time.monotonic() > deadline:
            return now
        time.sleep(SCRAPE_S)


def assert_exactly(prometheus, queries: dict[str, str], want: dict[str, float]) -> dict[str, float]:
    """The figures reach ``want`` exactly, and are still exactly that one export period later."""
    got = reached(prometheus, queries, want)
    assert got == pytest.approx(want), f"read back {got}, wanted {want}"
    time.sleep(RAY_EXPORT_S + 2 * SCRAPE_S)
    again = read(prometheus, queries)
    assert again == pytest.approx(want), f"an export period later {again}, wanted {want}"
    return got


# --- make up's Prometheus service (no process started) -----------------------------------------------


def test_make_up_runs_prometheus_on_loopback_scraping_rays_sd_file(tmp_path):
    settings = Settings(state_dir=tmp_path / "state", prometheus_port=19090)
    names = [service.name for service in services.services(settings)]
    assert names[:2] == ["ray", "prometheus"], "Prometheus starts after the Ray head, which writes its SD file"
    service = services.services(settings)[1]
    assert service.url == "http://127.0.0.1:19090"
    assert "--web.listen-address=127.0.0.1:19090" in service.argv
    assert f"--storage.tsdb.path={settings.state_dir / 'prometheus' / 'data'}" in service.argv
    if shutil.which("prometheus"):
        service.prepare()
        config = yaml.safe_load((settings.state_dir / "prometheus" / "prometheus.yml").read_text())
        ray_job = next(job for job in config["scrape_configs"] if job["job_name"] == "ray")
        sd_file = services.ray_temp_dir() / "session_latest" / RAY_SD_FILE
        assert ray_job["file_sd_configs"][0]["files"] == [str(sd_file)]
    # The Ray head (and so its dashboard) is told where Prometheus is.
    assert localstack.ray_env(settings)["RAY_PROMETHEUS_HOST"] == "http://127.0.0.1:19090"


# --- a real Prometheus and the session cluster ------------------------------------------------------


def test_prometheus_finds_the_cluster_through_rays_service_discovery_file(prometheus, cluster):
    sd_file = Path(cluster.address_info["session_dir"]) / RAY_SD_FILE
    port = cluster.address_info["metrics_export_port"]
    deadline, listed = time.monotonic() + 60, []
    while time.monotonic() < deadline:  # the dashboard rewrites it every 5 s
        listed = json.loads(sd_file.read_text())[0]["targets"] if sd_file.exists() else []
        if any(target.endswith(f":{port}") for target in listed):
            break
        time.sleep(1)
    assert any(target.endswith(f":{port}") for target in listed), f"the node's metrics port {port} is not in {listed}"
    # Scraped on loopback, whatever address Ray lists (Linux: the node's routable one).
    node = f"127.0.0.1:{port}"
    assert reached(prometheus, {"up": f'up{{job="ray",instance="{node}"}}'}, {"up": 1}) == {"up": 1}
    scraped = {target["scrapeUrl"] for target in targets(prometheus)}
    assert all(url.startswith("http://127.0.0.1:") for url in scraped), scraped


def targets(prometheus: PrometheusServer) -> list[dict]:
    """Prometheus's active targets (``/api/v1/targets``)."""
    return httpx.get(f"{prometheus.uri}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]


def test_serving_traffic_reads_back_exactly(prometheus, request):
    serve_app_url = request.getfixturevalue("serve_app_url")  # after prometheus (see cluster)
    with httpx.Client(base_url=serve_app_url, timeout=60) as api:
        answer = api.post("/predict", json=LISTING)  # the version label of what is served
        assert answer.status_code == 200, answer.text
        version = answer.json()["model_version"]
        queries = {
            "ok": f'sum(ray_rayestate_requests_total{{endpoint="/predict",status="200",model_version="{version}"}})',
            "invalid": 'sum(ray_rayestate_requests_total{endpoint="/predict",status="422"})',
            "timed": f'sum(ray_rayestate_request_latency_ms_count{{endpoint="/predict",model_version="{version}"}})',
            "rejected": 'sum(ray_rayestate_rejected_inputs_total{endpoint="/predict",reason="greater_than_equal"})',
            "batch": f'sum(ray_rayestate_requests_total{{endpoint="/predict/batch",status="200",model_version="{version}"}})',
            "bad_rows": 'sum(ray_rayestate_rejected_inputs_total{endpoint="/predict/batch",reason="invalid_row"})',
            # One /predict at a time: each is a model call of its own (serve_app/batching.py).
            "calls": 'sum(ray_rayestate_batch_size_count{computation="price_batch"})',
            "calls_of_one": 'sum(ray_rayestate_batch_size_bucket{computation="price_batch",le=~"1|1.0"})',
        }
        before = settled(prometheus, queries)
        valid, invalid = 7, 3
        for i in range(valid):
            assert api.post("/predict", json={**LISTING, "house_size": 1200 + 100 * i}).status_code == 200
        for _ in range(invalid):
            assert api.post("/predict", json={**LISTING, "bed": -1}).status_code == 422
        batch = api.post(
            "/predict/batch", json={"listings": [LISTING, {**LISTING, "bed": -1}, {**LISTING, "bath": -2}]}
        )
        assert batch.status_code == 200 and len(batch.json()["errors"]) == 2, batch.text
    caused = {
        "ok": valid, "invalid": invalid, "timed": valid, "rejected": invalid, "batch": 1, "bad_rows": 2,
        "calls": valid, "calls_of_one": valid,
    }  # fmt: skip
    want = {name: before[name] + caused[name] for name in queries}
    got = assert_exactly(prometheus, queries, want)
    print(f"\nPrometheus read back (before -> after): { {k: (before[k], got[k]) for k in queries} }")

    p95 = value(
        prometheus,
        'histogram_quantile(0.95, sum by (le) (rate(ray_rayestate_request_latency_ms_bucket{endpoint="/predict"}[2m])))',
    )
    assert 0 < p95 <= 5000 and math.isfinite(p95), p95
    print(f"p95 /predict latency: {p95:.1f} ms")


def test_pipeline_figures_and_live_quality_read_back_exactly(prometheus, cluster):
    from ray_jobs.pipeline_metrics import record_pipeline_metrics

    tag = f"prom-test-{uuid.uuid4().hex[:8]}"  # a source and a model version no other test uses
    queries = {
        "rows": f'sum(ray_rayestate_rows_ingested_total{{source="{tag}"}})',
        "promoted": 'sum(ray_rayestate_promotions_total{decision="promoted"})',
        "drift": 'sum(ray_rayestate_drift_verdicts_total{verdict="drift"})',
        "no_drift": 'sum(ray_rayestate_drift_verdicts_total{verdict="no_drift"})',
        "runs_skipped": 'sum(ray_rayestate_pipeline_runs_total{outcome="skipped"})',
        "live_mdape": f'ray_rayestate_live_mdape{{model_version="{tag}"}}',
        "live_matched": f'ray_rayestate_live_matched_homes{{model_version="{tag}"}}',
        "live_coverage": f'ray_rayestate_live_range_coverage{{model_version="{tag}"}}',
    }
    before = settled(prometheus, queries)
    live = {"versions": {tag: {"mdape": 0.125, "matched_homes": 42, "range_coverage": 0.8, "bias": 0.01}}}
    record_pipeline_metrics(
        SimpleNamespace(outcome="promoted", drift_verdict="drift", live=live), rows_ingested=1234, source=tag
    )
    record_pipeline_metrics(
        SimpleNamespace(outcome="skipped", drift_verdict="no_drift", live=None), rows_ingested=66, source=tag
    )
    caused = {"rows": 1300, "promoted": 1, "drift": 1, "no_drift": 1, "runs_skipped": 1}
    want = {name: before[name] + caused.get(name, 0) for name in queries}
    want.update(live_mdape=0.125, live_matched=42, live_coverage=0.8)
    got = assert_exactly(prometheus, queries, want)
    print(f"\nPrometheus read back (before -> after): { {k: (before[k], got[k]) for k in queries} }")


def readme_queries() -> list[str]:
    """The PromQL examples in the README's Monitoring section (its ```promql block)."""
    section = README.read_text().split("### Monitoring", 1)[1]
    block = re.search(r"```promql\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readmes_queries_run_on_prometheus(prometheus):
    queries = readme_queries()
    metrics = {m for q in queries for m in re.findall(r"\bray_rayestate_\w+", q)}
    for name in ("requests_total", "request_latency_ms_bucket", "rejected_inputs_total", "model_reloads_total",
                 "batch_size_bucket", "rows_ingested_total", "drift_verdicts_total", "promotions_total",
                 "live_mdape"):  # fmt: skip
        assert f"ray_rayestate_{name}" in metrics, f"the README has no query for {name}"
    for promql in queries:
        prometheus.query(promql)  # raises on a query Prometheus cannot parse or run

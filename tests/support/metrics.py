"""Reading Ray's Prometheus endpoint in tests, and measuring exactly what one test added to a counter.

The pipeline's counters live in one detached actor per cluster (ray_jobs.pipeline_metrics) that the
whole test session shares, and Ray exports them every few seconds. So "the counter is >= 1" proves
nothing (another test may have counted), and "before" read straight away may still miss counts made
just before. :func:`settle_pipeline_metrics` is a barrier: it records a run with an outcome, a source
and a verdict no one else uses and waits until all three are exported. The actor handles calls in
order, so every count made before the barrier is then visible too; a difference between two
barriers is exactly what happened between them.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import httpx

RUNS = "ray_rayestate_pipeline_runs_total"
ROWS = "ray_rayestate_rows_ingested_total"
DRIFT = "ray_rayestate_drift_verdicts_total"


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of every ``name{...}`` series carrying ``labels`` (0 if none); Ray adds its own labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _poll(port: int, series: dict[str, dict], want: float, timeout_s: float) -> str:
    """Poll until every ``name{labels}`` in ``series`` reaches ``want``; returns that scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = scrape(port)
        short = {name: metric_value(text, name, **labels) for name, labels in series.items()}
        short = {name: value for name, value in short.items() if value < want}
        if not short:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"{short} stayed below {want} for {timeout_s:.0f}s ({series})")
        time.sleep(1)


def settle_pipeline_metrics(port: int, timeout_s: float = 120.0) -> str:
    """Barrier (see the module docstring): returns a scrape holding every pipeline count made so far.

    The marker run moves a series of each counter a test reads (runs, rows, drift verdicts), and
    the barrier waits until all three are exported: a counter's new label set may reach the
    endpoint one export later than another counter's.
    """
    from ray_jobs.pipeline_metrics import record_pipeline_metrics

    marker = f"barrier-{uuid.uuid4().hex[:12]}"
    record_pipeline_metrics(SimpleNamespace(outcome=marker, drift_verdict=marker), rows_ingested=1, source=marker)
    return _poll(port, {RUNS: {"outcome": marker}, ROWS: {"source": marker}, DRIFT: {"verdict": marker}}, 1, timeout_s)

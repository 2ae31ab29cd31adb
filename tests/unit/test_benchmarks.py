"""Every benchmark script imports: a renamed helper must fail here, not an hour into a benchmark run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from rayestate.localstack import REPO

SCRIPTS = sorted(path.stem for path in (REPO / "benchmarks").glob("*.py") if path.stem != "__init__")


def test_there_are_benchmarks():
    assert {"train_bench", "serve_bench", "load_bench", "scale_bench", "drift_bench"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert Path(module.__file__).parent == REPO / "benchmarks"


def _run(rps: float, cpu_ms: float) -> dict:
    return {"rps": rps, "p50_ms": 10.0, "p99_ms": 20.0, "cpu_ms_per_request": cpu_ms, "requests": 100, "failed": 0}


def test_serve_is_compared_with_the_faster_baseline():
    """/explain runs two baselines (a bag on threads, or one booster after another); the faster counts."""
    from benchmarks.serve_bench import compare

    runs = {
        ("explain", 16, "serve"): [_run(100, 20.0), _run(110, 20.0)],
        ("explain", 16, "baseline"): [_run(100, 17.0), _run(100, 17.0)],
        ("explain", 16, "baseline_sequential"): [_run(120, 16.0), _run(130, 16.0)],
        ("predict", 16, "serve"): [_run(900, 1.5)],
        ("predict", 16, "baseline"): [_run(1000, 1.2)],
    }
    explain = compare(runs, "explain", 16)
    assert explain["baseline_explain_bag"] == "sequential"
    assert explain["baseline"]["rps"] == 125.0 and set(explain["baselines"]) == {"threads", "sequential"}
    assert explain["ratio"] == round(105 / 125, 3) and explain["extra_cpu_ms_per_request"] == 4.0
    runs[("explain", 16, "baseline")] = [_run(140, 15.0)]
    assert compare(runs, "explain", 16)["baseline_explain_bag"] == "threads"
    predict = compare(runs, "predict", 16)  # one baseline measured: it is the one compared with
    assert predict["baseline_explain_bag"] == "threads" and predict["ratio"] == 0.9

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

"""Wall seconds per pipeline stage, for the run's JSON summary (benchmarks/scale_bench.py reads them).

The stages are timed where they run, however deep in the call chain (cleaning inside ingestion,
the search and the final fit inside training), so they add up into one table per run without
passing a timer through every function. One pipeline run per process at a time: the run starts
with :func:`reset` and ends with :func:`seconds`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

#: The stages in pipeline order (a stage that did not run is absent from a run's table).
STAGES = ("ingest", "clean", "drift", "split", "tune", "fit", "evaluate", "register")

_seconds: dict[str, float] = {}


def reset() -> None:
    _seconds.clear()


@contextmanager
def stage(name: str):
    """Add the wall seconds of the block to ``name``'s total (a stage entered twice adds up)."""
    if name not in STAGES:
        raise ValueError(f"unknown pipeline stage {name!r}; one of {', '.join(STAGES)}")
    started = time.monotonic()
    try:
        yield
    finally:
        _seconds[name] = _seconds.get(name, 0.0) + time.monotonic() - started


def seconds() -> dict[str, float]:
    """Seconds per stage so far, in pipeline order, rounded to 0.1 s."""
    return {name: round(_seconds[name], 1) for name in STAGES if name in _seconds}

"""Live quality per model version: how good the served prices turned out once the homes sold.

    python -m ray_jobs.live_quality        # prints one JSON object; the pipeline runs it every run

From the outcomes (ray_jobs.outcomes: sale prices joined to what was served), per model version:
MdAPE, the median signed error (bias: positive when the model priced above the sale), the coverage
of the served price range, each with a percentile bootstrap 95% interval, the number of matched
homes, the same figures per calendar month in which the sales came in, and the version's offline
test figures beside them. The report is published to ``<store>/live_quality/latest.json`` (the
Serve app's /model reads it) and ``.../<UTC time>.json`` (rayestate.history).

The retrain decision (ray_jobs.decide) reads it: when the champion's live MdAPE is worse than its
offline MdAPE by more than ``live_mdape_margin`` beyond the bootstrap interval, on at least
``live_min_matched`` homes, the next run retrains and says why.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from scipy import stats

from ray_jobs.outcomes import read_outcomes, relative_errors
from rayestate import history, model_card, registry
from rayestate.settings import Settings, load_settings

CONFIDENCE = 0.95


def _interval(values: np.ndarray, statistic, *, samples: int, seed: int) -> list[float | None]:
    """[low, high] percentile bootstrap interval of ``statistic``; [None, None] with fewer than 2 values."""
    if len(values) < 2 or np.all(values == values[0]):
        value = float(statistic(values)) if len(values) else None
        return [value, value]
    ci = stats.bootstrap(
        (values,), statistic, n_resamples=samples, confidence_level=CONFIDENCE, method="percentile",
        vectorized=True, rng=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    return [float(ci.low), float(ci.high)]


def figures(outcomes: pd.DataFrame, *, samples: int, seed: int) -> dict:
    """MdAPE, bias and range coverage (with bootstrap intervals) of a set of outcomes."""
    errors = relative_errors(outcomes)
    median_abs = lambda v, axis=-1: np.median(np.abs(v), axis=axis)  # noqa: E731
    median = lambda v, axis=-1: np.median(v, axis=axis)  # noqa: E731
    low, high = outcomes["served_low"].to_numpy("float64"), outcomes["served_high"].to_numpy("float64")
    ranged = ~np.isnan(low) & ~np.isnan(high)
    sold = outcomes["sold_price"].to_numpy("float64")
    inside = ((low <= sold) & (sold <= high))[ranged].astype("float64")
    mean = lambda v, axis=-1: np.mean(v, axis=axis)  # noqa: E731
    return {
        "matched_homes": len(outcomes),
        "mdape": float(median_abs(errors)) if len(errors) else None,
        "mdape_ci": _interval(errors, median_abs, samples=samples, seed=seed),
        "bias": float(median(errors)) if len(errors) else None,
        "bias_ci": _interval(errors, median, samples=samples, seed=seed),
        "range_coverage": float(inside.mean()) if len(inside) else None,
        "range_coverage_ci": _interval(inside, mean, samples=samples, seed=seed),
        "homes_with_range": int(ranged.sum()),
        "median_days_to_outcome": float(outcomes["days_to_outcome"].median()) if len(outcomes) else None,
    }


def live_quality(settings: Settings, *, client=None) -> dict:
    """The report: per model version its live figures (overall and per month) beside its offline ones."""
    outcomes = read_outcomes(settings)
    offline = {}
    if client is not None:
        offline = {record.version: record for record in registry.versions(client, settings)}
    versions = {}
    for version, rows in outcomes.groupby("model_version", sort=True):
        by_month = {
            str(month): figures(part, samples=settings.bootstrap_samples, seed=settings.seed)
            for month, part in rows.groupby(pd.to_datetime(rows["learned_at"], utc=True).dt.strftime("%Y-%m"))
        }
        record = offline.get(str(version))
        versions[str(version)] = {
            **figures(rows, samples=settings.bootstrap_samples, seed=settings.seed),
            "by_month": by_month,
            "offline_mdape": record.metrics.get("mdape") if record else None,
            "offline_range_coverage": record.metrics.get("interval_coverage") if record else None,
        }
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "matched_homes": len(outcomes),
        "confidence": CONFIDENCE,
        "versions": versions,
    }


def publish(settings: Settings, report: dict, *, client=None) -> None:
    """The latest report for /model, a copy in the history (rayestate.history), and with ``client``
    the model card of every version with live figures, brought up to date."""
    history.save_live_quality(settings, report)
    if client is None:
        return
    records = {record.version: record for record in registry.versions(client, settings)}
    for version, live in report["versions"].items():
        if version in records:
            model_card.publish(client, records[version], model_name=settings.model_name, live=live)


def degraded(report: dict | None, champion: registry.VersionRecord | None, settings: Settings) -> str | None:
    """Why the champion's live accuracy is worse than its offline accuracy beyond noise, or None if it is not."""
    if report is None or champion is None:
        return None
    live = report["versions"].get(champion.version)
    offline = champion.metrics.get("mdape")
    if not live or offline is None or live["matched_homes"] < settings.live_min_matched:
        return None
    low = live["mdape_ci"][0]
    if low is not None and math.isfinite(low) and low > offline + settings.live_mdape_margin:
        return (
            f"live accuracy degraded: live MdAPE {live['mdape']:.3f} (95% CI {low:.3f}-{live['mdape_ci'][1]:.3f}) "
            f"on {live['matched_homes']} sold homes vs {offline:.3f} offline (margin {settings.live_mdape_margin:g})"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.live_quality", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        settings = load_settings()
        client = registry.connect(settings)
        report = live_quality(settings, client=client)
        publish(settings, report, client=client)
    except Exception as exc:
        print(f"live quality: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

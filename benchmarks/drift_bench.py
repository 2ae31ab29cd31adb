"""How well does the drift decision separate noise from real shifts on the real 100k-row sample?

Prints ONE JSON object. Same-distribution pairs are disjoint random draws from the sample (so no
drift by construction); slices are the course data API's shifted batches rebuilt from the sample
(plus the real API batch when present); the subtle shift multiplies house_size by 1.1. The same
draws are judged by the original design's rule (scipy ks_2samp p < 0.05 on any of five columns),
which is the baseline. Repetitions use the pandas path; speed is measured on both paths.

    .venv/bin/python benchmarks/drift_bench.py [--pairs 200] [--subtle-draws 50] [--skip-ray]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "token")  # token auth stays on; read when Ray is imported
sys.path.insert(0, str(REPO))

from ray_jobs.drift import DriftReport, drift_report  # noqa: E402
from ray_jobs.drift import _decide as decide  # noqa: E402
from rayestate.settings import Settings  # noqa: E402

SHARED = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared")) / "data"
ORIGINAL_COLUMNS = ("bed", "bath", "acre_lot", "house_size", "price")
SLICES = {
    "price_le_300k": lambda df: df["price"] <= 300_000,
    "price_le_300k_house_ge_1500": lambda df: (df["price"] <= 300_000) & (df["house_size"] >= 1_500),
    "price_le_300k_house_lt_1500": lambda df: (df["price"] <= 300_000) & (df["house_size"] < 1_500),
    "price_300k_to_500k": lambda df: (df["price"] > 300_000) & (df["price"] <= 500_000),
    "massachusetts": lambda df: df["state"] == "Massachusetts",
}
SWEEP = (0.01, 0.02, 0.03, 0.05, 0.1)


def original_rule(reference: pd.DataFrame, current: pd.DataFrame) -> bool:
    """The original design: drift if scipy's KS test gives p < 0.05 on any of five columns."""
    return any(stats.ks_2samp(reference[c].dropna(), current[c].dropna()).pvalue < 0.05 for c in ORIGINAL_COLUMNS)


def decides_drift(report: DriftReport, settings: Settings) -> bool:
    """The report's decision re-made under other settings (the tests and p-values are unchanged)."""
    checks = copy.deepcopy(report.features)
    decide(checks, settings)
    return any(check.verdict == "drift" for check in checks)


def median_psi(result: dict, feature: str) -> float:
    """Median PSI of one numeric feature over a set of reports."""
    values = [
        f.effect_size for r in result["reports"] for f in r.features if (f.feature, f.kind) == (feature, "numeric")
    ]
    return round(statistics.median(values), 4)


def split(df: pd.DataFrame, sizes: tuple[int, int], rng: np.random.Generator):
    order = rng.permutation(len(df))
    return df.iloc[order[: sizes[0]]], df.iloc[order[sizes[0] : sizes[0] + sizes[1]]]


def judge(pairs, settings: Settings) -> dict:
    """Run both rules on (reference, current) pairs; keep the reports for the threshold sweep."""
    reports, original = [], []
    for reference, current in pairs:
        reports.append(drift_report(reference, current, settings))
        original.append(original_rule(reference, current))
    return {"reports": reports, "original": original}


def rate(flags) -> float:
    return round(float(np.mean(flags)), 4)


def seconds(run, repeats: int = 3) -> float:
    run()  # warm-up: imports, Ray workers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def ray_seconds(sample_path: Path, settings: Settings) -> dict[str, float]:
    """Ray Data path on 100k vs 100k, and the bare cost of reading both sides through Ray Data."""
    import ray
    import ray.data

    with contextlib.redirect_stdout(sys.stderr):  # Ray's own notices must not break the one-JSON output
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            path = str(sample_path)
            return {
                "ray_data": seconds(
                    lambda: drift_report(ray.data.read_parquet(path), ray.data.read_parquet(path), settings)
                ),
                "ray_data_read_both_sides_only": seconds(
                    lambda: ray.data.read_parquet(path).union(ray.data.read_parquet(path)).to_pandas()
                ),
            }
        finally:
            ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="same-distribution pairs per batch-size setting")
    parser.add_argument("--subtle-draws", type=int, default=50)
    parser.add_argument("--slice-draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-ray", action="store_true", help="skip the Ray Data timing")
    args = parser.parse_args()

    sample_path = SHARED / "realtor" / "realtor.parquet"
    df = pd.read_parquet(sample_path)
    settings = Settings(state_dir=Path(tempfile.mkdtemp(prefix="drift-bench-")))
    rng = np.random.default_rng(args.seed)

    shuffled = df.sample(frac=1.0, replace=True, random_state=args.seed)
    # The machine is shared: the load average says how much the timings below were contended.
    timing = {"load_average_1m": round(os.getloadavg()[0], 1), "cpus": os.cpu_count()}
    timing["pandas"] = seconds(lambda: drift_report(df, shuffled, settings))
    timing.update({} if args.skip_ray else ray_seconds(sample_path, settings))
    original_seconds = seconds(lambda: original_rule(df, shuffled))

    null = {
        f"{a // 1000}k_vs_{b // 1000}k": judge([split(df, (a, b), rng) for _ in range(args.pairs)], settings)
        for a, b in ((20_000, 20_000), (50_000, 20_000), (50_000, 2_000))
    }

    slices = {name: df[mask(df)] for name, mask in SLICES.items()}
    api_batch = SHARED / "api" / "batch_group1_tuesday_3.csv"
    if api_batch.is_file():
        slices["api_batch_group1_tuesday_3"] = pd.read_csv(api_batch).drop(
            columns=["group_number", "day", "batch_number"]
        )
    sliced = {}
    for name, rows in slices.items():
        pairs = []
        for _ in range(args.slice_draws):
            reference, _ = split(df, (50_000, 0), rng)
            pairs.append((reference, rows.sample(min(len(rows), 20_000), random_state=int(rng.integers(2**31)))))
        sliced[name] = judge(pairs, settings)

    def scaled_house_size(sizes, factor, draws):
        for _ in range(draws):
            reference, current = split(df, sizes, rng)
            yield reference, current.assign(house_size=current["house_size"] * factor)

    subtle = {
        f"{a // 1000}k_vs_{b // 1000}k": judge(scaled_house_size((a, b), 1.1, args.subtle_draws), settings)
        for a, b in ((20_000, 20_000), (50_000, 20_000), (50_000, 2_000))
    }
    # Statistically real but too small to act on: the case the effect-size threshold exists for.
    negligible = judge(scaled_house_size((50_000, 50_000), 1.03, args.subtle_draws // 2), settings)

    def ours(result, threshold=settings.drift_effect_threshold):
        changed = settings.model_copy(update={"drift_effect_threshold": threshold})
        return [decides_drift(r, changed) for r in result["reports"]]

    all_slices = [flag for result in sliced.values() for flag in ours(result)]
    out = {
        "sample": str(sample_path),
        "rows": len(df),
        "rule": {
            "drift_alpha": settings.drift_alpha,
            "drift_effect_threshold": settings.drift_effect_threshold,
            "drift_missing_threshold": settings.drift_missing_threshold,
            "drift_min_rows": settings.drift_min_rows,
        },
        "false_alarm_rate": max(rate(ours(r)) for r in null.values()),
        "false_alarm_by_batch_size": {k: rate(ours(r)) for k, r in null.items()},
        "pairs_per_batch_size": args.pairs,
        "slice_detection_rate": rate(all_slices),
        "slice_detection_by_slice": {k: rate(ours(r)) for k, r in sliced.items()},
        "slice_rows": {k: min(len(v), 20_000) for k, v in slices.items()},
        "slice_reference_rows": 50_000,
        "slice_draws": args.slice_draws,
        "subtle_detection_rate": rate(ours(subtle["20k_vs_20k"])),
        "subtle_detection_by_batch_size": {k: rate(ours(r)) for k, r in subtle.items()},
        "subtle_median_psi_house_size": {k: median_psi(r, "house_size") for k, r in subtle.items()},
        "subtle_draws": args.subtle_draws,
        "negligible_shift_flag_rate": rate(ours(negligible)),  # house_size x1.03, 50k vs 50k
        "negligible_median_psi_house_size": median_psi(negligible, "house_size"),
        "seconds_per_100k": timing,
        "original_rule": {
            "false_alarm_rate": max(rate(r["original"]) for r in null.values()),
            "false_alarm_by_batch_size": {k: rate(r["original"]) for k, r in null.items()},
            "slice_detection_rate": rate([f for r in sliced.values() for f in r["original"]]),
            "subtle_detection_rate": rate(subtle["20k_vs_20k"]["original"]),
            "negligible_shift_flag_rate": rate(negligible["original"]),
            "seconds_per_100k": original_seconds,
        },
        "psi_threshold_sweep": [
            {
                "drift_effect_threshold": t,
                "false_alarm_rate": max(rate(ours(r, t)) for r in null.values()),
                "slice_detection_rate": rate([f for r in sliced.values() for f in ours(r, t)]),
                "subtle_detection_rate": rate(ours(subtle["20k_vs_20k"], t)),
                "negligible_shift_flag_rate": rate(ours(negligible, t)),
            }
            for t in SWEEP
        ],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

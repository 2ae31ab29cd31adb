"""How well does the drift decision separate noise from real shifts on the real 100k-row sample?

Prints ONE JSON object, and exits 1 when a target is missed (false alarms <= 0.05 on every null,
detection >= 0.9 on every shift type at batches of >= 2k rows), so the benchmark can fail.

Same-distribution pairs are disjoint random draws from the sample (so no drift by construction);
slices are the course data API's shifted batches rebuilt from the sample (plus the real API batch
when present); the subtle shift multiplies house_size by 1.1. On top of those figures:

* shift types the effect threshold was not tuned on (see SHIFTS: a status mix change, a
  missing-share change, a lot-size shift, the largest state removed), each at batch sizes
  BATCH_SIZES against a REFERENCE_ROWS reference, as the champion's training data would be;
* realistic nulls (random_batch, sales_windows): disjoint random batches at the same sizes, and
  disjoint random batches of sold listings from one period of sale dates; plus the same sold
  listings in sale-date order (``consecutive_sales``), which this data shows are NOT a null (its
  weekly state mix moves, and the sale year turns), so they are reported beside the nulls, not
  counted as false alarms.

The same draws are judged by the original design's rule (scipy ks_2samp p < 0.05 on any of five
columns), which is the baseline. Repetitions use the pandas path; speed is measured on both paths.
``--seed`` picks the draws. Development runs (checking the shift definitions and whether the rule
needed a change) used other seeds (101, 102) than the reported one (7), whose draws chose nothing.

    .venv/bin/python benchmarks/drift_bench.py [--pairs 200] [--subtle-draws 50] [--shift-draws 50]
        [--null-pairs 100] [--seed 7] [--skip-ray]
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
ALPHA_SWEEP = (0.001, 0.01, 0.05, 0.1)
#: Current batch sizes: 500 is a small day of the data API (the test runs from drift_min_rows = 200 on),
#: 2,000 the smallest batch the detection target applies to, 20,000 a large batch (as the API's slices).
BATCH_SIZES = (500, 2_000, 20_000)
#: The champion's training data: 60k of the 100k rows, which leaves a disjoint 40k pool that holds
#: enough sold (~14.6k) and non-Florida (~35.5k) rows for every shift at 20k rows without resampling.
REFERENCE_ROWS = 60_000
TARGET_FALSE_ALARM, TARGET_DETECTION = 0.05, 0.9
#: Sold listings ordered by sale date (prev_sold_date is the sale date for status "sold"): the sample's
#: sales run 2021-10-18 .. 2022-05-06; the first three and last three weeks are crawl edges (one week 62%
#: Massachusetts, the last ones none, 357 sales in May), so only sales in SALES_PERIOD are used.
SALES_PERIOD = ("2021-11-08", "2022-04-17")
SALES_REFERENCE_ROWS = 10_000  # ~7 weeks of sales in the sample: a champion trained on recent sales
SALES_BATCH_SIZES = (500, 2_000)  # 31k sales in the period cannot hold a 10k reference + 20k batch many ways


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


# --- shift types the threshold was not tuned on; each makes an n-row batch from the pool ----------


def _rows(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.choice(len(frame), n, replace=False)]


def status_mix(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Sold share moved from the sample's 36.6% to 55%: 0.55 n sold rows and 0.45 n others (for_sale and
    ready_to_build in their pool proportions), drawn without replacement from the pool. A feed that starts
    sending more closed sales (or a season of closings) looks like this; sold rows carry a sale date, so
    prev_sold_date's missing share and year move with it."""
    sold = pool["status"] == "sold"
    k = round(0.55 * n)
    return pd.concat([_rows(pool[sold], k, rng), _rows(pool[~sold], n - k, rng)])


def missing_house_size(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """house_size blanked on an extra 10 points of rows: a random n-row batch, then house_size set to
    missing on 0.10 n of its rows that had it (25.5% -> ~35.5% missing), as when one source stops sending
    living area. The rest of the batch is untouched."""
    batch = _rows(pool, n, rng).copy()
    present = np.flatnonzero(batch["house_size"].notna().to_numpy())
    blank = rng.choice(present, round(0.10 * n), replace=False)
    batch.iloc[blank, batch.columns.get_loc("house_size")] = np.nan
    return batch


def lot_size(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """acre_lot x1.25 on a random n-row batch: the median lot 0.26 -> 0.33 acres (about Florida's median,
    0.23, against Massachusetts', 0.32), the kind of change a feed makes when it reports gross instead of
    net lot area; the model would read it as bigger lots at the same price. Most lots lie between 0.1 and
    0.3 acres on a 0.01 grid, so x1.25 moves much of the mass across the reference's quantile edges."""
    batch = _rows(pool, n, rng)
    return batch.assign(acre_lot=batch["acre_lot"] * 1.25)


def no_florida(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """The largest state (Florida, 11.3% of rows) absent: a random n-row batch of the pool's other rows,
    as when one state's feed fails. Florida rather than California because Florida's prices and sizes are
    close to the national ones (median $319k vs $325k), so only the state and ZIP checks can see it."""
    return _rows(pool[pool["state"] != "Florida"], n, rng)


def random_batch(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Null: a random n-row batch of the pool, disjoint from the reference (the data's row order is
    random, so consecutive n-row chunks of the file are the same thing)."""
    return _rows(pool, n, rng)


SHIFTS = {"status_mix": status_mix, "missing_house_size": missing_house_size, "lot_size": lot_size}
SHIFTS["no_florida"] = no_florida
#: The check each shift is meant to trip, (kind, feature): reported beside the overall detection.
EXPECTED_CHECK = {
    "status_mix": ("categorical", "status"),
    "missing_house_size": ("missing", "house_size"),
    "lot_size": ("numeric", "acre_lot"),
    "no_florida": ("categorical", "state"),
}


def sales_in_order(df: pd.DataFrame) -> pd.DataFrame:
    """Sold listings in SALES_PERIOD by sale date (stable: ties keep the data's random row order)."""
    sold = df[df["status"] == "sold"]
    date = pd.to_datetime(sold["prev_sold_date"], errors="coerce", format="%Y-%m-%d")
    inside = (date >= SALES_PERIOD[0]) & (date <= SALES_PERIOD[1])
    return sold[inside].iloc[np.argsort(date[inside].to_numpy(), kind="stable")]


def sales_windows(sales: pd.DataFrame, n: int, count: int, rng: np.random.Generator):
    """(same-period pair, consecutive pair) per window of SALES_REFERENCE_ROWS + n consecutive sales.

    Same period: the window split at random (reference, current disjoint; a null by construction, on
    one period's sold listings only). Consecutive: the same window split in time order, the n latest
    sales against the ones before them, as a pipeline sees the next batch after its champion's data.
    """
    size = SALES_REFERENCE_ROWS + n
    for start in rng.integers(0, len(sales) - size + 1, count):
        window = sales.iloc[start : start + size]
        order = rng.permutation(size)
        yield (
            (window.iloc[order[:SALES_REFERENCE_ROWS]], window.iloc[order[SALES_REFERENCE_ROWS:]]),
            (window.iloc[:SALES_REFERENCE_ROWS], window.iloc[SALES_REFERENCE_ROWS:]),
        )


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


def judge_into(result: dict, reference: pd.DataFrame, current: pd.DataFrame, settings: Settings) -> None:
    """judge() for one pair, appended to ``result`` (so no pair's frames are kept)."""
    result["reports"].append(drift_report(reference, current, settings))
    result["original"].append(original_rule(reference, current))


def empty_results(sizes) -> dict[int, dict]:
    return {n: {"reports": [], "original": []} for n in sizes}


def flagged_checks(result: dict) -> dict[str, float]:
    """Share of reports in which each check (kind:feature) was drift, commonest first."""
    counts: dict[str, int] = {}
    for report in result["reports"]:
        for check in report.drifted:
            counts[f"{check.kind}:{check.feature}"] = counts.get(f"{check.kind}:{check.feature}", 0) + 1
    total = max(len(result["reports"]), 1)
    return {k: round(v / total, 4) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


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
    parser.add_argument("--shift-draws", type=int, default=50, help="draws per shift type and batch size")
    parser.add_argument("--null-pairs", type=int, default=100, help="pairs per realistic null and batch size")
    parser.add_argument("--seed", type=int, default=7, help="development runs used other seeds (101, 102)")
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

    # --- shift types the threshold was not tuned on, realistic nulls (their own random stream) ---------
    draws = np.random.default_rng([args.seed, 16])
    shifted = {name: empty_results(BATCH_SIZES) for name in SHIFTS}
    nulls = {"random_disjoint": empty_results(BATCH_SIZES)}
    for draw in range(max(args.shift_draws, args.null_pairs)):
        order = draws.permutation(len(df))
        reference, pool = df.iloc[order[:REFERENCE_ROWS]], df.iloc[order[REFERENCE_ROWS:]]
        for n in BATCH_SIZES:
            if draw < args.null_pairs:
                judge_into(nulls["random_disjoint"][n], reference, random_batch(pool, n, draws), settings)
            if draw < args.shift_draws:
                for name, make in SHIFTS.items():
                    judge_into(shifted[name][n], reference, make(pool, n, draws), settings)
    sales = sales_in_order(df)
    nulls["same_period_sales"], consecutive = empty_results(SALES_BATCH_SIZES), empty_results(SALES_BATCH_SIZES)
    for n in SALES_BATCH_SIZES:
        for same, following in sales_windows(sales, n, args.null_pairs, draws):
            judge_into(nulls["same_period_sales"][n], *same, settings)
            judge_into(consecutive[n], *following, settings)

    def ours(result, threshold=settings.drift_effect_threshold, alpha=settings.drift_alpha):
        changed = settings.model_copy(update={"drift_effect_threshold": threshold, "drift_alpha": alpha})
        return [decides_drift(r, changed) for r in result["reports"]]

    def against_targets(**rule) -> dict:
        """The new figures under the default rule or another (drift_effect_threshold / drift_alpha)."""
        per_shift = {
            name: {str(n): rate(ours(r, **rule)) for n, r in by_size.items()} for name, by_size in shifted.items()
        }
        by_null = {k: {str(n): rate(ours(r, **rule)) for n, r in by_size.items()} for k, by_size in nulls.items()}
        old = max(rate(ours(r, **rule)) for r in null.values())
        return {
            "per_shift": per_shift,
            "null_false_alarm": by_null,
            "false_alarm_rate": old,
            "max_false_alarm_rate": max([old, *(v for by_size in by_null.values() for v in by_size.values())]),
            "min_detection_rate_2k": min(v for s in per_shift.values() for n, v in s.items() if int(n) >= 2_000),
            "min_detection_rate_500": min(s["500"] for s in per_shift.values()),
        }

    def expected(name: str, result: dict) -> list[bool]:
        return [any((c.kind, c.feature) == EXPECTED_CHECK[name] for c in r.drifted) for r in result["reports"]]

    def median_effect(name: str, result: dict) -> float:
        kind, feature = EXPECTED_CHECK[name]
        found = [c.effect_size for r in result["reports"] for c in r.features if (c.kind, c.feature) == (kind, feature)]
        return round(statistics.median(found), 4)

    def summary(figures: dict) -> dict:
        """A sweep row: the worst null, the worst shift at >= 2k rows, and each shift at 500 rows."""
        return {
            "max_false_alarm_rate": figures["max_false_alarm_rate"],
            "min_detection_rate_2k": figures["min_detection_rate_2k"],
            "detection_500_by_shift": {name: by_size["500"] for name, by_size in figures["per_shift"].items()},
        }

    figures = against_targets()
    per_shift, null_false_alarm = figures["per_shift"], figures["null_false_alarm"]
    false_alarm_rate, max_false_alarm = figures["false_alarm_rate"], figures["max_false_alarm_rate"]
    min_detection_2k = figures["min_detection_rate_2k"]
    missed = [f"false alarms {max_false_alarm} > {TARGET_FALSE_ALARM}"] if max_false_alarm > TARGET_FALSE_ALARM else []
    missed += [
        f"{name} at {n} rows: detection {v} < {TARGET_DETECTION}"
        for name, by_size in per_shift.items()
        for n, v in by_size.items()
        if int(n) >= 2_000 and v < TARGET_DETECTION
    ]
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
        "false_alarm_rate": false_alarm_rate,
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
        "reference_rows": REFERENCE_ROWS,
        "batch_sizes": list(BATCH_SIZES),
        "shift_draws": args.shift_draws,
        "per_shift": per_shift,
        "per_shift_min_over_sizes": {name: min(by_size.values()) for name, by_size in per_shift.items()},
        "min_detection_rate_2k": min_detection_2k,
        "min_detection_rate_500": figures["min_detection_rate_500"],
        "per_shift_expected_check": {
            name: {
                "check": ":".join(EXPECTED_CHECK[name]),
                **{str(n): rate(expected(name, r)) for n, r in by_size.items()},
            }
            for name, by_size in shifted.items()
        },
        "per_shift_median_effect": {
            name: {str(n): median_effect(name, r) for n, r in by_size.items()} for name, by_size in shifted.items()
        },
        "null_false_alarm": null_false_alarm,
        "null_pairs": args.null_pairs,
        "null_reference_rows": {"random_disjoint": REFERENCE_ROWS, "same_period_sales": SALES_REFERENCE_ROWS},
        "max_false_alarm_rate": max_false_alarm,
        "consecutive_sales": {
            "flag_rate": {str(n): rate(ours(r)) for n, r in consecutive.items()},
            "flagged_checks": {str(n): flagged_checks(r) for n, r in consecutive.items()},
            "reference_rows": SALES_REFERENCE_ROWS,
            "period": list(SALES_PERIOD),
            "sales_in_period": len(sales),
        },
        "targets": {
            "false_alarm_max": TARGET_FALSE_ALARM,
            "detection_min_at_2k_and_up": TARGET_DETECTION,
            "met": not missed,
            "missed": missed,
        },
        "seed": args.seed,
        "original_rule": {
            "false_alarm_rate": max(rate(r["original"]) for r in null.values()),
            "false_alarm_by_batch_size": {k: rate(r["original"]) for k, r in null.items()},
            "slice_detection_rate": rate([f for r in sliced.values() for f in r["original"]]),
            "subtle_detection_rate": rate(subtle["20k_vs_20k"]["original"]),
            "negligible_shift_flag_rate": rate(negligible["original"]),
            "seconds_per_100k": original_seconds,
            "per_shift": {
                name: {str(n): rate(r["original"]) for n, r in by_size.items()} for name, by_size in shifted.items()
            },
            "null_false_alarm": {
                k: {str(n): rate(r["original"]) for n, r in by_size.items()} for k, by_size in nulls.items()
            },
            "consecutive_sales_flag_rate": {str(n): rate(r["original"]) for n, r in consecutive.items()},
        },
        "psi_threshold_sweep": [
            {
                "drift_effect_threshold": t,
                "false_alarm_rate": max(rate(ours(r, t)) for r in null.values()),
                "slice_detection_rate": rate([f for r in sliced.values() for f in ours(r, t)]),
                "subtle_detection_rate": rate(ours(subtle["20k_vs_20k"], t)),
                "negligible_shift_flag_rate": rate(ours(negligible, t)),
                **summary(against_targets(threshold=t)),
            }
            for t in SWEEP
        ],
        "alpha_sweep": [
            {
                "drift_alpha": a,
                "false_alarm_rate": max(rate(ours(r, alpha=a)) for r in null.values()),
                "slice_detection_rate": rate([f for r in sliced.values() for f in ours(r, alpha=a)]),
                "subtle_detection_rate": rate(ours(subtle["20k_vs_20k"], alpha=a)),
                "negligible_shift_flag_rate": rate(ours(negligible, alpha=a)),
                **summary(against_targets(alpha=a)),
            }
            for a in ALPHA_SWEEP
        ],
    }
    print(json.dumps(out))
    if missed:
        sys.exit(1)


if __name__ == "__main__":
    main()

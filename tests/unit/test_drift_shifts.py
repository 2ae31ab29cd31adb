"""The drift test on the shift types and nulls benchmarks/drift_bench.py adds (issue 16 §5), on synthetic listings.

The benchmark measures rates on the real sample; these pin single draws of the same shifts, made by
the benchmark's own functions, at 2k rows (the smallest batch the detection target covers) against
a 60k reference, plus what each shift function promises in its docstring.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ray_jobs.drift import drift_report
from rayestate.devstack.synthetic import generate_listings

REPO = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("drift_bench", REPO / "benchmarks" / "drift_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_listings(60_000, seed=1)


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    """Rows the current batches are drawn from: another sample of the same synthetic market."""
    return generate_listings(20_000, seed=2)


def flagged(report) -> set[tuple[str, str]]:
    return {(f.kind, f.feature) for f in report.drifted}


@pytest.mark.parametrize("name", sorted(bench.SHIFTS))
def test_each_shift_type_is_drift_at_2k_rows_on_the_check_it_targets(name, reference, pool, settings):
    current = bench.SHIFTS[name](pool, 2_000, np.random.default_rng(0))
    report = drift_report(reference, current, settings)
    assert report.drift, report.reason
    assert bench.EXPECTED_CHECK[name] in flagged(report), report.reason


@pytest.mark.parametrize("n", [500, 2_000])
def test_a_disjoint_random_batch_is_not_drift(n, reference, pool, settings):
    report = drift_report(reference, bench.random_batch(pool, n, np.random.default_rng(0)), settings)
    assert report.verdict == "no_drift", report.reason


def test_shift_functions_do_what_their_docstrings_say(pool):
    rng, n = np.random.default_rng(1), 2_000
    batches = {name: make(pool, n, rng) for name, make in bench.SHIFTS.items()}
    for name, batch in batches.items():
        assert len(batch) == n and batch.index.is_unique, name
        assert batch.index.isin(pool.index).all(), name  # rows of the pool, not resampled
    assert (batches["status_mix"]["status"] == "sold").sum() == round(0.55 * n)
    assert abs((pool["status"] == "sold").mean() - 0.366) < 0.02  # moved from the data's ~37%
    before = pool.loc[batches["missing_house_size"].index, "house_size"].isna().sum()
    assert batches["missing_house_size"]["house_size"].isna().sum() == before + round(0.10 * n)
    lots = batches["lot_size"]
    pd.testing.assert_series_equal(lots["acre_lot"], pool.loc[lots.index, "acre_lot"] * 1.25)
    assert not (batches["no_florida"]["state"] == "Florida").any()
    assert (pool["state"] == "Florida").mean() > 0.1  # the largest state, as in the real data


def test_sales_windows_split_one_period_at_random_and_in_time_order(pool):
    sales = bench.sales_in_order(generate_listings(80_000, seed=3))
    dates = pd.to_datetime(sales["prev_sold_date"])
    assert (sales["status"] == "sold").all() and dates.is_monotonic_increasing
    assert dates.min() >= pd.Timestamp(bench.SALES_PERIOD[0]) and dates.max() <= pd.Timestamp(bench.SALES_PERIOD[1])
    n = 500
    pairs = list(bench.sales_windows(sales, n, 3, np.random.default_rng(0)))
    assert len(pairs) == 3
    for (same_ref, same_cur), (old, new) in pairs:
        assert (len(same_ref), len(same_cur)) == (len(old), len(new)) == (bench.SALES_REFERENCE_ROWS, n)
        assert not same_ref.index.isin(same_cur.index).any()  # disjoint
        assert set(same_ref.index) | set(same_cur.index) == set(old.index) | set(new.index)  # the same window
        assert pd.to_datetime(old["prev_sold_date"]).max() <= pd.to_datetime(new["prev_sold_date"]).min()

"""Drift stage: the decision on synthetic data, the statistics, persistence on a local store, retraining.

The Ray Data aggregation path and the S3 store are in integration/test_drift.py, the real samples
in data/test_drift.py.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from ray_jobs.decide import should_retrain
from ray_jobs.drift import FeatureDrift, _decide, drift_report, holm, load_drift_history, save_drift_report
from rayestate.schema import SchemaError
from tests.support.drift import flagged, save_two_reports, two_samples


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two independent 100k-row samples of the same synthetic market."""
    return two_samples()


# --- the decision ------------------------------------------------------------------------------


def test_same_distribution_at_100k_rows_is_not_drift(market, settings):
    report = drift_report(*market, settings)
    assert report.verdict == "no_drift", report.reason
    assert report.drifted == []
    assert {f.verdict for f in report.features} == {"no_drift"}
    assert report.n_reference == report.n_current == 100_000


def test_price_band_slice_flags_price(market, settings):
    reference, current = market
    report = drift_report(reference, current[current["price"] <= 300_000], settings)
    assert report.drift
    assert ("numeric", "price") in flagged(report)
    assert "price" in report.reason


def test_one_state_flags_state_and_not_status(market, settings):
    reference, current = market
    report = drift_report(reference, current[current["state"] == "Massachusetts"], settings)
    assert ("categorical", "state") in flagged(report)
    assert ("categorical", "status") not in flagged(report)  # status does not depend on state here
    state = next(f for f in report.features if f.feature == "state")
    assert state.chart["type"] == "shares"
    shares = dict(zip(state.chart["categories"], state.chart["current"], strict=True))
    assert shares["Massachusetts"] == pytest.approx(1.0)


def test_house_size_ten_percent_larger_flags_only_house_size(market, settings):
    reference, current = market
    current = current.iloc[:20_000].assign(house_size=lambda d: d["house_size"] * 1.1)
    report = drift_report(reference.iloc[:20_000], current, settings)
    assert flagged(report) == {("numeric", "house_size")}, report.reason
    house = report.drifted[0]
    assert house.p_adjusted < settings.drift_alpha and house.effect_size >= settings.drift_effect_threshold
    assert house.metrics["ks"] > 0.03 and house.metrics["wasserstein_iqr"] > 0.05


def test_significant_but_small_shift_is_not_drift(market, settings):
    reference, current = market
    report = drift_report(reference, current.assign(house_size=current["house_size"] * 1.03), settings)
    house = next(f for f in report.features if (f.kind, f.feature) == ("numeric", "house_size"))
    assert house.p_adjusted < settings.drift_alpha  # 100k rows: a 3% shift is statistically real...
    assert house.effect_size < settings.drift_effect_threshold  # ...but too small to act on
    assert report.verdict == "no_drift"
    assert "1 significant but small" in report.reason


def test_missing_share_change_is_detected_as_missing_drift(market, settings):
    reference, current = market
    current = current.iloc[:30_000].copy()
    present = current.index[current["bed"].notna()]
    current.loc[present[: len(present) // 4], "bed"] = np.nan  # +~20 points, missing at random
    report = drift_report(reference.iloc[:30_000], current, settings)
    assert flagged(report) == {("missing", "bed")}, report.reason
    check = report.drifted[0]
    assert check.metrics["current_share"] - check.metrics["reference_share"] > 0.15


def test_an_emptied_column_is_missing_drift_not_an_error(market, settings):
    reference, current = market
    report = drift_report(reference.iloc[:5_000], current.iloc[:5_000].assign(house_size=np.nan), settings)
    assert flagged(report) == {("missing", "house_size")}, report.reason
    house = next(f for f in report.features if (f.kind, f.feature) == ("numeric", "house_size"))
    assert (house.verdict, house.n_current) == ("insufficient_data", 0)
    reverse = drift_report(reference.iloc[:5_000].assign(house_size=np.nan), current.iloc[:5_000], settings)
    assert flagged(reverse) == {("missing", "house_size")}, reverse.reason


def test_binned_ks_is_a_close_lower_bound_of_scipys_exact_statistic(market, settings):
    reference, current = market[0].iloc[:20_000], market[1].iloc[:20_000]
    current = current.assign(house_size=current["house_size"] * 1.1)
    report = drift_report(reference, current, settings)
    for check in report.features:
        if check.kind == "numeric" and check.feature in reference:
            exact = stats.ks_2samp(reference[check.feature].dropna(), current[check.feature].dropna())
            assert exact.statistic - 0.005 <= check.statistic <= exact.statistic + 1e-12, check.feature
            assert check.p_value >= exact.pvalue * (1 - 1e-9), check.feature  # conservative


def test_holm_adjusts_as_defined():
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]).tolist() == []


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_matches_its_step_down_definition(p_values):
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    expected = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        expected[i] = running
    assert holm(p_values).tolist() == pytest.approx(expected)


def test_decision_uses_holm_adjusted_not_raw_p_values(settings):
    def check(name, p_value):
        return FeatureDrift(name, "numeric", "ks", 0.5, p_value, 1.0, "psi", math.nan, 10_000, 10_000)

    checks = [check("a", 0.006), check("b", 0.009)]  # both raw p < alpha = 0.01, large effects
    _decide(checks, settings)
    assert [c.p_adjusted for c in checks] == pytest.approx([0.012, 0.012])
    assert [c.verdict for c in checks] == ["no_drift", "no_drift"]


def test_too_few_rows_are_not_tested(market, settings):
    reference, current = market
    report = drift_report(reference, current.iloc[:50], settings)
    assert report.verdict == "no_drift"
    assert {f.verdict for f in report.features} == {"insufficient_data"}
    assert "not tested" in report.reason


def test_bad_input_names_the_problem(market, settings):
    reference, current = market
    with pytest.raises(SchemaError, match=r"current data is missing column.*house_size"):
        drift_report(reference, current.drop(columns=["house_size"]), settings)
    with pytest.raises(ValueError, match="current data has no rows"):
        drift_report(reference, current.iloc[:0], settings)


def test_report_round_trips_through_strict_json_and_gives_mlflow_metrics(market, settings):
    reference, current = market
    report = drift_report(reference.iloc[:20_000], current[current["price"] <= 300_000], settings)
    text = json.dumps(report.to_dict(), allow_nan=False)
    again = type(report).from_dict(json.loads(text))
    assert again.to_dict() == report.to_dict()
    metrics = report.metrics()
    assert metrics["drift.detected"] == 1.0 and metrics["drift.n_drifted"] == len(report.drifted)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert all(re.fullmatch(r"[\w./ -]+", k) for k in metrics)  # MLflow's allowed metric-name characters
    for check in report.drifted:
        if check.kind == "numeric":  # chart data: shares per reference decile, open-ended outer bins
            assert len(check.chart["reference"]) == len(check.chart["edges"]) + 1
            assert sum(check.chart["current"]) == pytest.approx(1.0)


# --- the retrain decision ----------------------------------------------------------------------


def test_should_retrain_reasons(market, settings):
    same = drift_report(market[0].iloc[:5_000], market[1].iloc[:5_000], settings)
    shifted = drift_report(market[0].iloc[:5_000], market[1][market[1]["price"] <= 300_000], settings)
    assert should_retrain(False, same, 0, settings) == (True, "no champion model yet")
    assert should_retrain(True, shifted, 0, settings) == (True, shifted.reason)
    retrain, reason = should_retrain(True, same, settings.retrain_min_new_rows, settings)
    assert retrain and "new rows" in reason
    retrain, reason = should_retrain(True, same, 10, settings)
    assert not retrain and reason.startswith("skipped: no drift")
    assert not should_retrain(True, None, 0, settings)[0]
    with pytest.raises(ValueError, match="new_rows_since_training"):
        should_retrain(True, same, -1, settings)


# --- persistence -------------------------------------------------------------------------------


def test_drift_history_on_a_local_store(market, settings):
    assert load_drift_history(settings) == []
    reports = save_two_reports(settings, market)
    history = load_drift_history(settings, limit=5)
    assert [r.batch_id for r in history] == ["api.g1.Tuesday.b000002", "api.g1.Tuesday.b000001"]
    assert history[0].n_current == 4_000 and history[0].reason == reports["api.g1.Tuesday.b000002"].reason
    assert [r.batch_id for r in load_drift_history(settings, limit=1)] == ["api.g1.Tuesday.b000002"]
    drift_dir = settings.state_dir / "store" / "drift"
    assert sorted(p.name for p in drift_dir.iterdir()) == ["api.g1.Tuesday.b000001.json", "api.g1.Tuesday.b000002.json"]
    save_drift_report(settings, "api.g1.Tuesday.b000001", reports["api.g1.Tuesday.b000001"])  # re-run replaces
    assert len(load_drift_history(settings)) == 2
    with pytest.raises(ValueError, match="not a safe file name"):
        save_drift_report(settings, "../escape", reports["api.g1.Tuesday.b000001"])
    with pytest.raises(ValueError, match="limit"):
        load_drift_history(settings, limit=0)

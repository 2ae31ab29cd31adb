"""Held-out metrics and the paired-bootstrap promotion rule, on real (small) models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ray_jobs.decide import compare, paired_error_difference
from ray_jobs.evaluate import evaluate
from ray_jobs.split import split_frame
from rayestate.settings import Settings
from tests.support.models import make_model, sample_listings


@pytest.fixture(scope="module")
def splits():
    return split_frame(sample_listings(8000, seed=11))


@pytest.fixture(scope="module")
def good(splits):
    return make_model(splits.train)


@pytest.fixture(scope="module")
def useless(splits):
    return make_model(splits.train, shuffled=True)


@pytest.fixture
def rules(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path, bootstrap_samples=500, seed=7)


def test_metrics_are_complete_finite_and_rank_models(splits, good, useless):
    metrics = evaluate(good, splits.test)
    for key in ("rmse", "mae", "r2_dollars", "rmse_log", "mae_log", "r2_log", "mdape"):
        assert math.isfinite(metrics[key]), key
    assert metrics["rows"] == len(splits.test)
    assert 0.3 < metrics["r2_log"] <= 1
    assert evaluate(useless, splits.test)["r2_log"] < 0.1 < metrics["r2_log"]
    assert evaluate(useless, splits.test)["mdape"] > metrics["mdape"]


def test_per_state_mdape_covers_the_largest_states(splits, good):
    metrics = evaluate(good, splits.test, top_states=3)
    largest = splits.test["state"].value_counts().head(3).index
    expected = {"mdape_state_" + s.lower().replace(" ", "_") for s in largest}
    assert {k for k in metrics if k.startswith("mdape_state_")} == expected


def test_rows_without_a_positive_price_are_refused(splits, good):
    broken = splits.test.copy()
    broken.loc[broken.index[:2], "price"] = [0.0, np.nan]
    with pytest.raises(ValueError, match="without a positive price"):
        evaluate(good, broken)


def test_a_better_challenger_is_promoted(splits, good, useless, rules):
    decision = compare(useless, good, splits.test, rules)
    assert decision.promote, decision.reason
    assert decision.numbers["diff_ci_high"] < 0
    assert decision.numbers["challenger_mae_log"] < decision.numbers["champion_mae_log"]


def test_a_worse_challenger_is_rejected_with_its_numbers(splits, good, useless, rules):
    decision = compare(good, useless, splits.test, rules)
    assert not decision.promote
    assert "worse" in decision.reason and decision.numbers["diff_ci_low"] > 0


def test_an_equal_challenger_is_not_promoted(splits, good, rules):
    decision = compare(good, good, splits.test, rules)
    assert not decision.promote
    assert decision.numbers["diff_ci_low"] == decision.numbers["diff_ci_high"] == 0
    assert "no improvement beyond noise" in decision.reason


def test_the_required_margin_is_applied(splits, good, useless, tmp_path):
    strict = Settings(state_dir=tmp_path, bootstrap_samples=500, promotion_min_improvement=5.0)
    decision = compare(useless, good, splits.test, strict)
    assert not decision.promote and "-5" in decision.reason


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    truth = rng.normal(12, 1, 3000)
    champion, challenger = truth + rng.normal(0, 0.5, 3000), truth + rng.normal(0, 0.45, 3000)
    first = paired_error_difference(champion, challenger, truth, samples=300, seed=1)
    assert first == paired_error_difference(champion, challenger, truth, samples=300, seed=1)
    mean, low, high = first
    assert low < mean < high

"""Serving cost as part of choosing the model: measured per row, and kept within the budget."""

from __future__ import annotations

import math

import pytest

from ray_jobs import serving_cost
from ray_jobs.tune import Budget, _ReportRounds
from tests.support.models import make_model, sample_listings


@pytest.fixture(scope="module")
def model_and_sample():
    frame = sample_listings(3000, seed=5)
    model = make_model(frame, rounds=120)
    return model, model.transform.matrix(frame.head(500))


def test_cost_grows_with_the_rounds_kept(model_and_sample):
    model, sample = model_and_sample
    few, many = (serving_cost.measure(model.boosters, sample, trees=n) for n in (10, 120))
    assert (few.trees, many.trees) == (10, 120)
    assert 0 < few.explain_ms_per_row < many.explain_ms_per_row
    assert 0 < few.predict_us_per_row < many.predict_us_per_row


def test_cost_is_measured_on_the_rows_typed_as_the_boosters_were_trained(model_and_sample):
    """The product's boosters are typed as serving types them; a booster with extra columns is measured too."""
    import numpy as np
    import xgboost as xgb

    from rayestate.model import FEATURE_TYPES, FEATURES

    model, sample = model_and_sample
    assert model.boosters[0].feature_names == list(FEATURES)
    assert [t if t == "c" else "float" for t in model.boosters[0].feature_types] == FEATURE_TYPES
    wider = np.column_stack([sample, np.arange(len(sample), dtype="float64")])
    names, types = [*FEATURES, "candidate"], [*FEATURE_TYPES, "float"]
    labels = np.log(np.linspace(1e5, 1e6, len(sample)))
    train = xgb.DMatrix(wider, labels, feature_names=names, feature_types=types, enable_categorical=True)
    booster = xgb.train({"max_depth": 3, "nthread": 1}, train, 20)
    cost = serving_cost.measure([booster], wider)
    assert cost.trees == 20 and cost.explain_ms_per_row > 0 and cost.predict_us_per_row > 0


def test_the_longest_prefix_within_budget_is_measured_within_it(model_and_sample):
    model, sample = model_and_sample
    full = serving_cost.measure(model.boosters, sample)
    budget_ms = full.explain_ms_per_row / 3
    rounds, cost = serving_cost.trees_within(model.boosters, sample, explain_budget_ms=budget_ms, predict_budget_us=1e9)
    assert 0 < rounds < 120 and cost.explain_ms_per_row <= budget_ms and cost.trees == rounds
    assert serving_cost.trees_within(model.boosters, sample, explain_budget_ms=1e-6, predict_budget_us=1e9)[0] == 0
    cut, measured = serving_cost.within_budget(model, sample, explain_budget_ms=budget_ms, predict_budget_us=1e9)
    assert measured.explain_ms_per_row <= budget_ms
    assert all(b.num_boosted_rounds() < 120 for b in cut.boosters) and cut.meta["cut_to_budget_from"] == 120
    same, _ = serving_cost.within_budget(model, sample, explain_budget_ms=1e9, predict_budget_us=1e9)
    assert same is model  # within budget: nothing is cut


def test_a_trial_reports_the_best_error_among_the_rounds_it_can_afford():
    reports = []
    reporter = _ReportRounds(reports.append, lambda points: None, Budget(), None)
    reporter.maes = [0.5, 0.4, 0.3, 0.35, 0.2]
    assert reporter.best() == (0.2, 5)
    reporter.affordable = 3.7  # the budget affords three rounds
    assert reporter.best() == (0.3, 3)
    assert reporter.best(2) == (0.4, 2)
    assert Budget(15, 25).affordable_rounds(serving_cost.ServingCost(30.0, 10.0, 100), 100) == 50
    assert not Budget().limited and math.isinf(Budget().explain_ms)

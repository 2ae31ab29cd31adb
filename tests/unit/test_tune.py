"""Fitting without a search: the untuned baseline with early stopping, and bags of boosters
(the Ray Tune search and a whole training round are in integration/test_tune.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_jobs.fit import XGBOOST_DEFAULTS, refit
from ray_jobs.split import split_frame
from ray_jobs.tune import fit_untuned
from tests.support.models import sample_listings


def test_untuned_baseline_early_stops_and_refits():
    splits = split_frame(sample_listings(3000, seed=41))
    model, result = fit_untuned(splits.train, splits.valid)
    assert 1 <= result.best_rounds < 3000 and model.meta["rounds"] == result.best_rounds
    assert model.boosters[0].num_boosted_rounds() == result.best_rounds
    assert np.isfinite(model.predict(splits.test)).all()


@pytest.fixture(scope="module")
def bag_and_splits():
    """A bag of two boosters (subsampled, two seeds) fitted on synthetic listings, and their split."""
    splits = split_frame(sample_listings(3000, seed=43))
    _, result = fit_untuned(splits.train, splits.valid, config={**XGBOOST_DEFAULTS, "subsample": 0.7})
    return refit(pd.concat([splits.train, splits.valid]), result.params, result.best_rounds, seed=3, bag_size=2), splits


def test_a_bag_averages_its_boosters_explains_exactly_and_round_trips(bag_and_splits, tmp_path):
    from rayestate.model import PriceModel

    bag, splits = bag_and_splits
    _, plain = fit_untuned(splits.train, splits.valid)
    unsampled = refit(pd.concat([splits.train, splits.valid]), plain.params, plain.best_rounds, seed=3, bag_size=2)
    assert len(unsampled.boosters) == 1  # no sampling: seeds change nothing
    assert len(bag.boosters) == 2 and bag.meta["bag_size"] == 2
    members = [PriceModel(boosters=[b], transform=bag.transform) for b in bag.boosters]
    outputs = [m.predict_log(splits.test) for m in members]
    assert not np.allclose(outputs[0], outputs[1])  # different seeds, different trees
    np.testing.assert_allclose(bag.predict_log(splits.test), np.mean(outputs, axis=0), rtol=1e-6)

    rows = splits.test.head(5)
    for explanation, log_price in zip(bag.explain(rows), bag.predict_log(rows), strict=True):
        total = explanation.base_value + sum(explanation.shap.values())
        assert total == pytest.approx(log_price, abs=1e-4)  # additive: SHAP adds up to the model's output
        assert explanation.log_price == pytest.approx(log_price, abs=1e-12)  # which the explanation carries

    loaded = PriceModel.load(bag.save(tmp_path / "bag"))
    assert len(loaded.boosters) == 2
    np.testing.assert_allclose(loaded.predict_log(splits.test), bag.predict_log(splits.test), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one booster"):
        PriceModel(boosters=[], transform=bag.transform)


@pytest.mark.parametrize("rows", [1, 16, 100])
def test_a_bags_explanation_is_its_boosters_treeshap_averaged_in_bag_order(bag_and_splits, rows):
    """One row's boosters are explained concurrently, more rows one booster at a time; either way the
    explanation is the mean of each booster's own pred_contribs, bit for bit."""
    from rayestate.features import FEATURES
    from rayestate.model import feature_dmatrix

    bag, splits = bag_and_splits
    listings = splits.test.head(rows)
    dmatrix = feature_dmatrix(bag.transform.matrix(listings))
    expected = np.mean([b.predict(dmatrix, pred_contribs=True) for b in bag.boosters], axis=0, dtype="float64")
    for _ in range(3):  # threads finish in any order
        explained = bag.explain(listings)
        got = np.array([[*(e.shap[name] for name in FEATURES), e.base_value] for e in explained])
        assert got.tobytes() == expected.tobytes()


def test_a_bag_served_without_threads_explains_one_booster_at_a_time_to_the_same_bits(bag_and_splits, monkeypatch):
    """prepare_for_serving(bag_on_threads=False) (the sequential baseline) never touches the bag's
    thread pool, and its explanation has the threaded one's bits."""
    import copy

    import rayestate.model

    bag, splits = bag_and_splits
    listings = splits.test.head(1)
    threaded = bag.explain(listings)
    sequential = copy.copy(bag).prepare_for_serving(1, bag_on_threads=False)
    assert sequential.bag_on_threads is False and bag.bag_on_threads is True

    def no_threads():
        raise AssertionError("a bag served without threads used the TreeSHAP thread pool")

    monkeypatch.setattr(rayestate.model, "_shap_threads", no_threads)
    assert [e.shap for e in sequential.explain(listings)] == [e.shap for e in threaded]
    with pytest.raises(AssertionError, match="thread pool"):
        bag.explain(listings)  # the threaded bag does use it: the patch is where the threads come from


def test_a_batch_of_listings_is_explained_one_booster_at_a_time_even_on_a_threaded_bag(bag_and_splits, monkeypatch):
    """Several rows are a batch of concurrent requests: the cores are busy already, so a bag served
    on threads explains them one booster after the other (no pool), to the same bits as row by row."""
    import rayestate.model

    bag, splits = bag_and_splits
    assert bag.bag_on_threads is True
    listings = splits.test.head(4)
    one_by_one = [bag.explain(listings.iloc[[i]])[0].shap for i in range(len(listings))]

    def no_threads():
        raise AssertionError("a batch of listings used the TreeSHAP thread pool")

    monkeypatch.setattr(rayestate.model, "_shap_threads", no_threads)
    assert [e.shap for e in bag.explain(listings)] == one_by_one


def test_the_best_prefix_is_the_bags_lowest_validation_error_among_the_rounds_allowed():
    """What the bag choice and the frontier benchmark score a bag by: its best prefix within the budget's rounds."""
    import xgboost as xgb

    from ray_jobs.tune import best_prefix

    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 4))
    y = x[:, 0] + np.sin(3 * x[:, 1]) + rng.normal(scale=0.3, size=600)
    train, valid = xgb.DMatrix(x[:400], y[:400]), xgb.DMatrix(x[400:])
    params = {"eta": 0.3, "max_depth": 6, "subsample": 0.7, "nthread": 1}
    bag = [xgb.train({**params, "seed": seed}, train, 150) for seed in (0, 1)]  # overfits: the best is early

    def mae(prefix):
        return float(
            np.mean(np.abs(np.mean([b.predict(valid, iteration_range=(0, prefix)) for b in bag], 0) - y[400:]))
        )

    prefix, error = best_prefix(bag, valid, y[400:], 120)
    assert 10 <= prefix < 120 and error == mae(prefix)
    assert all(error <= mae(p) for p in range(10, 121, 10))  # up to 400 rounds every 10th is scored
    assert best_prefix(bag, valid, y[400:], 30)[0] <= 30
    assert best_prefix(bag, valid, y[400:], 0) == (0, float("inf"))


def test_a_booster_with_other_bins_early_stops_on_validation_binned_the_same():
    """max_bin is a training parameter like any other: the validation matrix must follow it."""
    from ray_jobs.fit import prepare, train_booster, xgb_params

    splits = split_frame(sample_listings(1500, seed=44))
    data = prepare(splits.train, splits.valid)
    params = xgb_params({**XGBOOST_DEFAULTS, "max_bin": 64}, data.y_train, nthread=1, seed=0)
    booster = train_booster(params, data.x_train, data.y_train, rounds=300, valid=(data.x_valid, data.y_valid))
    assert 1 <= booster.best_iteration < 299
    assert booster.save_config().count('"max_bin":"64"') >= 1

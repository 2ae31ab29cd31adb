"""The explanation in the listing's own fields: every feature in a group, groups exact; comparable homes."""

from __future__ import annotations

import math

import pytest

from rayestate import features
from rayestate.comparables import ComparablesIndex
from rayestate.features import FEATURE_GROUPS, FEATURES, GROUPS, listing_columns
from serve_app.inference import explain_rows
from tests.support.models import make_model, sample_listings


@pytest.fixture(scope="module")
def market():
    return sample_listings(3000, seed=9)


def test_every_feature_has_exactly_one_group_and_pairs_are_explicit(monkeypatch):
    assert set(FEATURE_GROUPS) == set(FEATURES)
    assert set(FEATURE_GROUPS.values()) <= set(GROUPS)
    assert FEATURE_GROUPS["te_zip_ppsf_x_size"] == "location*living_area"
    assert FEATURE_GROUPS["sqft_per_bed"] == "living_area*bedrooms"
    monkeypatch.setitem(features.FEATURE_INPUTS, "new_feature", ())  # a new feature that names no input
    with pytest.raises(KeyError):
        features.feature_group("no_such_feature")
    monkeypatch.setitem(features.FEATURE_INPUTS, "three_way", ("house_size", "bed", "zip_code"))
    with pytest.raises(ValueError, match="two at most"):
        features.feature_group("three_way")


def test_groups_add_up_exactly_and_show_what_was_given(market):
    model = make_model(market, rounds=40)
    rows = market.drop(columns="price").head(50).astype("object").where(market.head(50).notna(), None)
    for listing, answer in zip(rows.to_dict("records"), explain_rows(model, rows.to_dict("records")), strict=True):
        total = answer["base_value"] + math.fsum(g["shap"] for g in answer["groups"])
        assert total == pytest.approx(answer["log_price"], abs=2e-5)
        assert answer["base_price"] + math.fsum(g["dollars"] for g in answer["groups"]) == pytest.approx(
            answer["price"], rel=2e-5
        )
        by_name = {g["group"]: g for g in answer["groups"]}
        assert set(by_name) == set(GROUPS)
        for group in by_name.values():
            assert group["effect_pct"] == pytest.approx(100 * math.expm1(group["shap"]))
        expected = "missing" if listing["house_size"] is None else listing["house_size"]
        assert by_name["living_area"]["inputs"] == {"house_size": expected}


def test_a_training_listing_is_its_own_nearest_comparable(market):
    index = ComparablesIndex.build(market)
    for position in (0, 17, 123):
        row = market.drop(columns="price").iloc[[position]]
        found = index.lookup(listing_columns(row), k=5)
        assert found[0]["distance"] == 0.0 and found[0]["price"] == market["price"].iloc[position]
        assert found[0]["match"] == ("same ZIP" if row["zip_code"].notna().all() else found[0]["match"])
        assert [c["distance"] for c in found if c["match"] == found[0]["match"]] == sorted(
            c["distance"] for c in found if c["match"] == found[0]["match"]
        )
    elsewhere = listing_columns([{"state": "Guam", "bed": 3.0}])
    assert all(c["state"] == "Guam" for c in index.lookup(elsewhere, k=3))

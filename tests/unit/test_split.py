"""The hash split: deterministic, stable as batches accumulate, and leak-free."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from ray_jobs.split import assign_splits, row_keys, split_frame
from rayestate.devstack.synthetic import generate_listings


@pytest.fixture(scope="module")
def listings() -> pd.DataFrame:
    return generate_listings(6000, seed=3)


def test_same_rows_same_splits_in_any_order_or_batch(listings):
    names = pd.Series(assign_splits(listings), index=listings.index)
    shuffled = listings.sample(frac=1.0, random_state=1)
    assert (pd.Series(assign_splits(shuffled), index=shuffled.index) == names.loc[shuffled.index]).all()
    # A row's split does not depend on which batch it arrived in or what else is in the batch.
    first, second = listings.iloc[:2500], listings.iloc[2500:]
    combined = np.concatenate([assign_splits(first), assign_splits(second)])
    assert (combined == names.to_numpy()).all()


def test_splits_partition_the_rows_with_the_configured_fractions(listings):
    splits = split_frame(listings)
    indexes = [set(part.index) for part in splits]
    assert sum(map(len, indexes)) == len(listings)
    assert not (indexes[0] & indexes[1] or indexes[0] & indexes[2] or indexes[1] & indexes[2])
    assert len(splits.test) / len(listings) == pytest.approx(0.1, abs=0.02)
    assert len(splits.valid) / len(listings) == pytest.approx(0.1, abs=0.02)


def test_a_relisted_or_sold_home_stays_in_its_split(listings):
    relisted = listings.copy()
    relisted["price"] = relisted["price"] * 1.07
    relisted["status"] = "sold"
    assert (assign_splits(relisted) == assign_splits(listings)).all()
    # ...and a copy of a test row can never reach training.
    test_rows = split_frame(listings).test
    doubled = pd.concat([listings, test_rows.assign(price=test_rows["price"] + 1)], ignore_index=True)
    train_keys = set(row_keys(split_frame(doubled).train))
    assert not train_keys & set(row_keys(test_rows))


def test_the_key_ignores_how_a_value_was_read():
    row = {"brokered_by": 5.0, "status": "sold", "price": 1.0, "bed": 3.0, "bath": 2.0, "acre_lot": 0.2,
           "street": 11.0, "city": "Tampa", "state": "Florida", "zip_code": 601.0, "house_size": 1500.0,
           "prev_sold_date": None}  # fmt: skip
    as_floats = pd.DataFrame([row])
    as_text = pd.DataFrame([{**row, "zip_code": "601", "bed": 3, "city": " Tampa ", "prev_sold_date": np.nan}])
    assert row_keys(as_floats)[0] == row_keys(as_text)[0]
    assert row_keys(as_floats)[0] != row_keys(as_floats.assign(bed=4.0))[0]


def test_test_set_does_not_depend_on_the_validation_fraction(listings):
    small = split_frame(listings, valid_fraction=0.05).test
    large = split_frame(listings, valid_fraction=0.3).test
    assert small.index.equals(large.index)


@pytest.mark.parametrize("valid, test", [(-0.1, 0.1), (0.5, 0.5), (0.1, 1.0)])
def test_bad_fractions_are_refused(listings, valid, test):
    with pytest.raises(ValueError, match="bad split fractions"):
        assign_splits(listings.head(3), valid_fraction=valid, test_fraction=test)


def test_the_key_is_the_digest_of_the_salted_texts_whatever_the_column_types():
    """The key is part of the data contract: sha256 of the salt and each identity column's text, as written here."""
    rows = pd.DataFrame({
        "brokered_by": [5.0, -0.0, None], "status": ["sold", "for_sale", "sold"], "price": [1.0, 2.0, 3.0],
        "bed": [3.0, 0.0, np.nan], "bath": [2.0, 2.0, 1.5], "acre_lot": [0.2, 0.25, np.nan],
        "street": [11.0, 11.0, 7.0], "city": pd.Series([" Tampa ", None, "Ponce"], dtype="str"),
        "state": pd.Series(["Florida", "Florida", 1], dtype="object"),  # mixed types keep their own text
        "zip_code": [601.0, 601.0, None], "house_size": [1500.0, np.nan, 900.0],
        "prev_sold_date": pd.Series([None, "2020-01-02", 1.0], dtype="object"),
    })  # fmt: skip
    texts = [
        "5.0\x1f3.0\x1f2.0\x1f0.2\x1f11.0\x1fTampa\x1fFlorida\x1f601.0\x1f1500.0\x1f",
        "-0.0\x1f0.0\x1f2.0\x1f0.25\x1f11.0\x1f\x1fFlorida\x1f601.0\x1f\x1f2020-01-02",
        "\x1f\x1f1.5\x1f\x1f7.0\x1fPonce\x1f1\x1f\x1f900.0\x1f1.0",
    ]
    expected = [hashlib.sha256(f"rayestate-split-v1\x1e{text}".encode()).hexdigest() for text in texts]
    assert list(row_keys(rows)) == expected
    assert list(row_keys(rows.iloc[[2, 0]])) == [expected[2], expected[0]]

"""Unit tests of the shared feature transform's edge cases."""

import numpy as np
import pandas as pd

from rayestate.devstack.synthetic import generate_listings
from rayestate.features import FeatureTransform, KeyTable, ListingKeys


def test_overflowing_ratios_become_missing_not_inf():
    # Found by schemathesis: bed=1e-308 is a valid count yet house_size / bed overflows to inf.
    train = generate_listings(2000, seed=3)
    transform = FeatureTransform.fit(train[train["price"] > 1000])
    row = {**train.iloc[0].to_dict(), "bed": 1.1e-308, "house_size": 43560.0, "acre_lot": 1e5}
    features = transform.transform(pd.DataFrame([row]))
    numeric = features.select_dtypes("number")
    assert not np.isinf(numeric.to_numpy()).any()
    assert numeric["sqft_per_bed"].isna().all()


def test_vectorised_lookups_match_plain_dicts():
    # Two encodings over one key, with different key sets: each reads its own value or NaN.
    price = {"02101": 13.1, "33602": 12.4, "": 9.0}
    per_sqft = {"33602": 5.5, "10001": 7.0}
    keys = pd.Series(["33602", None, "99999", "02101", "33602", "", np.nan, "10001"], dtype="object")
    table = KeyTable({"price": price, "per_sqft": per_sqft})
    values = ListingKeys({"zip": keys}).values("zip", table)
    for name, mapping in (("price", price), ("per_sqft", per_sqft)):
        expected = [mapping.get(key, np.nan) if isinstance(key, str) else np.nan for key in keys]
        np.testing.assert_array_equal(values[:, table.columns[name]], expected)
    empty = KeyTable({"price": {}})
    assert np.isnan(ListingKeys({"zip": keys}).values("zip", empty)).all()
    shared = ListingKeys({"zip": keys})  # one batch's keys against two tables: each answers for itself
    assert np.isnan(shared.values("zip", empty)).all() and not np.isnan(shared.values("zip", table)).all()
    nothing = ListingKeys({"zip": pd.Series([None, None], dtype="object")})
    assert nothing.values("zip", table).shape == (2, 2) and np.isnan(nothing.values("zip", table)).all()
    none_at_all = ListingKeys({"zip": pd.Series([], dtype="object")})
    assert none_at_all.values("zip", table).shape == (0, 2)


def test_transform_and_known_agree_with_or_without_shared_keys():
    train = generate_listings(3000, seed=5)
    transform = FeatureTransform.fit(train)
    rows = generate_listings(300, seed=6).assign(zip_code=lambda d: d["zip_code"].where(d.index % 7 > 0, 99999.0))
    keys = ListingKeys.of(rows)
    pd.testing.assert_frame_equal(transform.transform(rows), transform.transform(rows, keys))
    known = transform.known(rows, keys)
    alone = transform.known(rows)
    assert all((alone[name] == known[name]).all() for name in ("state", "zip", "city"))
    assert not known["zip"][rows.index % 7 == 0].any()  # the ZIP no training row had

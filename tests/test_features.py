"""Unit tests of the shared feature transform's edge cases."""

import numpy as np
import pandas as pd

from rayestate.features import FeatureTransform
from rayestate.synthetic import generate_listings


def test_overflowing_ratios_become_missing_not_inf():
    # Found by schemathesis: bed=1e-308 is a valid count yet house_size / bed overflows to inf.
    train = generate_listings(2000, seed=3)
    transform = FeatureTransform.fit(train[train["price"] > 1000])
    row = {**train.iloc[0].to_dict(), "bed": 1.1e-308, "house_size": 43560.0, "acre_lot": 1e5}
    features = transform.transform(pd.DataFrame([row]))
    numeric = features.select_dtypes("number")
    assert not np.isinf(numeric.to_numpy()).any()
    assert numeric["sqft_per_bed"].isna().all()

"""The synthetic market next to the real sample: prices, states and price levels by state."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from rayestate.devstack.synthetic import generate_listings


def test_close_to_the_real_sample(realtor_sample):
    real = pd.read_parquet(realtor_sample)
    sample = generate_listings(200_000, seed=11)  # what unit/test_synthetic.py checks figure by figure
    assert list(real.dtypes.astype(str)) == list(sample.dtypes.astype(str))
    real_price, synthetic_price = (np.log1p(d["price"].dropna()) for d in (real, sample))
    assert stats.ks_2samp(real_price, synthetic_price).statistic < 0.06
    shares = pd.concat([d["state"].value_counts(normalize=True) for d in (real, sample)], axis=1)
    assert np.corrcoef(shares.iloc[:, 0], shares.iloc[:, 1])[0, 1] > 0.99
    medians = pd.concat([d.groupby("state")["price"].median() for d in (real, sample)], axis=1)
    assert np.corrcoef(np.log(medians.iloc[:, 0]), np.log(medians.iloc[:, 1]))[0, 1] > 0.8

"""Small real models for the tests: the pipeline's fitting code on the one synthetic market.

``make_model(..., shuffled=True)`` trains on permuted prices: a model worse than useless, for
tests of the promotion rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_jobs.fit import refit, train_booster, xgb_params
from rayestate.devstack.synthetic import generate_listings
from rayestate.features import FeatureTransform, log_price
from rayestate.model import PriceModel


def sample_listings(n: int, *, seed: int = 0) -> pd.DataFrame:
    """Synthetic listings the cleaning job would keep (a price between $1,000 and $100M)."""
    frame = generate_listings(n, seed=seed)
    return frame[frame["price"].between(1_000, 1e8)].reset_index(drop=True)


def train_sample_model(frame: pd.DataFrame, *, rounds: int = 60, max_depth: int = 5, seed: int = 0) -> PriceModel:
    """The pipeline's fitting code with a small fixed config (no search)."""
    params = xgb_params({"eta": 0.15, "max_depth": max_depth}, log_price(frame["price"]), nthread=1, seed=seed)
    return refit(frame, params, rounds, seed=seed, nthread=1, meta={"training_batches": ["synthetic-sample"]})


def make_model(frame: pd.DataFrame, *, shuffled: bool = False, rounds: int = 40, seed: int = 0) -> PriceModel:
    """XGBoost on log price; ``shuffled`` trains on permuted prices (a model worse than useless)."""
    y = log_price(frame["price"])
    if shuffled:
        y = np.random.default_rng(seed).permutation(y)
    transform, features = FeatureTransform.fit_transform(frame, y, seed=seed)
    params = xgb_params({"eta": 0.2, "max_depth": 5}, y, nthread=1, seed=seed)
    return PriceModel([train_booster(params, features, y, rounds=rounds)], transform, {"shuffled": shuffled})

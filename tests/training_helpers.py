"""Small real models for the training-side tests: a sound one, and one that learned nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_jobs.tune import train_booster, xgb_params
from rayestate.features import FeatureTransform, log_price
from rayestate.model import PriceModel
from rayestate.synthetic import generate_listings


def clean_listings(n: int, *, seed: int) -> pd.DataFrame:
    """Synthetic listings minus the impossible prices the cleaning job would drop."""
    frame = generate_listings(n, seed=seed)
    return frame[frame["price"].between(1_000, 1e8)].reset_index(drop=True)


def make_model(frame: pd.DataFrame, *, shuffled: bool = False, rounds: int = 40, seed: int = 0) -> PriceModel:
    """XGBoost on log price; ``shuffled`` trains on permuted prices (a model worse than useless)."""
    y = log_price(frame["price"])
    if shuffled:
        y = np.random.default_rng(seed).permutation(y)
    transform, features = FeatureTransform.fit_transform(frame, y, seed=seed)
    params = xgb_params({"eta": 0.2, "max_depth": 5}, y, nthread=1, seed=seed)
    return PriceModel([train_booster(params, features, y, rounds=rounds)], transform, {"shuffled": shuffled})

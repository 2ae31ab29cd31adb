"""Small real models for the tests: the pipeline's fitting code on the one synthetic market.

``make_model(..., shuffled=True)`` trains on permuted prices: a model worse than useless, for
tests of the promotion rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_jobs.calibrate import with_interval
from ray_jobs.fit import prepare, refit, train_booster, xgb_params
from ray_jobs.split import Splits
from rayestate.devstack.synthetic import generate_listings
from rayestate.features import FeatureTransform, log_price
from rayestate.model import PriceModel

SAMPLE_CONFIG = {"eta": 0.15, "max_depth": 5}


def sample_listings(n: int, *, seed: int = 0) -> pd.DataFrame:
    """Synthetic listings the cleaning job would keep (a price between $1,000 and $100M)."""
    frame = generate_listings(n, seed=seed)
    return frame[frame["price"].between(1_000, 1e8)].reset_index(drop=True)


def train_sample_model(frame: pd.DataFrame, *, rounds: int = 60, max_depth: int = 5, seed: int = 0) -> PriceModel:
    """The pipeline's fitting code with a small fixed config (no search)."""
    params = xgb_params({**SAMPLE_CONFIG, "max_depth": max_depth}, log_price(frame["price"]), nthread=1, seed=seed)
    return refit(frame, params, rounds, seed=seed, nthread=1, meta={"training_batches": ["synthetic-sample"]})


def with_sample_range(model: PriceModel, splits: Splits, *, rounds: int = 60, seed: int = 0) -> PriceModel:
    """``model`` (fitted on train + valid) with a price range, calibrated as the pipeline does it."""
    data = prepare(splits.train, splits.valid, seed=seed)
    stage_one = PriceModel([train_booster(xgb_params(SAMPLE_CONFIG, data.y_train, nthread=1, seed=seed),
                                          data.x_train, data.y_train, rounds=rounds)], data.transform)  # fmt: skip
    known = {name: flags[data.valid_rows] for name, flags in data.transform.known(splits.valid).items()}
    return with_interval(model, stage_one, data.x_valid, data.y_valid, known, splits.calibration, seed=seed, nthread=1)


def make_model(frame: pd.DataFrame, *, shuffled: bool = False, rounds: int = 40, seed: int = 0) -> PriceModel:
    """XGBoost on log price; ``shuffled`` trains on permuted prices (a model worse than useless)."""
    y = log_price(frame["price"])
    if shuffled:
        y = np.random.default_rng(seed).permutation(y)
    transform, features = FeatureTransform.fit_transform(frame, y, seed=seed)
    params = xgb_params({"eta": 0.2, "max_depth": 5}, y, nthread=1, seed=seed)
    return PriceModel([train_booster(params, features, y, rounds=rounds)], transform, {"shuffled": shuffled})

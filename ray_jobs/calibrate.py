"""Calibration stage: the scale model and the conformal quantiles behind every price range.

1. The scale model learns log |residual| of a model that did not see the rows: the validation
   residuals of the search's boosters trained on the training rows (``stage_one``). Features: the
   price model's own, whether the ZIP and city were seen in training, and the predicted log price.
   XGBoost (squared error, depth 4, eta 0.05, min_child_weight 50), early-stopped on a random 20%
   of those rows: ~100-200 small trees, a few µs per row to predict.
2. The final model (as served: after the bag refit and any cut to the serving budget) predicts the
   calibration rows, which no model was fitted on; the conformal quantile of
   |log price - prediction| / s(x) is kept for every coverage, for seen and unseen ZIPs apart.

These settings are the ones measured on the real sample (validation and calibration rows only);
see rayestate.interval for what they achieve.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import xgboost as xgb

from rayestate.features import FEATURES, frame_matrix, listing_columns, log_price
from rayestate.interval import COVERAGES, EXTRA_INPUTS, GROUPS, PriceInterval, conformal_quantile, scale_inputs
from rayestate.model import FEATURE_TYPES, PriceModel

SCALE_PARAMS = {"tree_method": "hist", "objective": "reg:squarederror", "eta": 0.05, "max_depth": 4,
                "min_child_weight": 50.0, "subsample": 0.8, "colsample_bytree": 0.8, "max_cat_to_onehot": 4}  # fmt: skip
SCALE_EARLY_STOP_SHARE = 0.2
#: Most rounds of the scale model. Its prediction counts in the serving budget: 200 depth-4 trees
#: cost ~5 µs/row (a fifth of the default 25 µs), and on the real sample it stops at ~100. Without
#: the cap, the data-parallel path's 250k-row validation sample kept it growing to 2,000 rounds
#: (50 µs/row), and no price model could fit the budget beside it.
SCALE_MAX_ROUNDS = 200
#: Residuals are floored here before the log (an exact hit would be -inf).
RESIDUAL_FLOOR = 1e-3


def fit_scale(inputs: np.ndarray, residuals: np.ndarray, *, seed: int, nthread: int) -> xgb.Booster:
    """The scale model: log |residual| from scale_inputs(), early-stopped on a random share of the rows, at most SCALE_MAX_ROUNDS."""
    target = np.log(np.abs(residuals) + RESIDUAL_FLOOR)
    held = np.random.default_rng(seed).random(len(target)) < SCALE_EARLY_STOP_SHARE
    names, types = [*FEATURES, *EXTRA_INPUTS], [*FEATURE_TYPES, "float", "float", "float"]
    train = xgb.QuantileDMatrix(inputs[~held], target[~held], feature_names=names, feature_types=types,
                                enable_categorical=True)  # fmt: skip
    stop = xgb.QuantileDMatrix(inputs[held], target[held], feature_names=names, feature_types=types,
                               enable_categorical=True, ref=train)  # fmt: skip
    booster = xgb.train({**SCALE_PARAMS, "seed": seed, "nthread": nthread}, train, SCALE_MAX_ROUNDS,
                        evals=[(stop, "stop")], early_stopping_rounds=50, verbose_eval=False)  # fmt: skip
    return booster[: booster.best_iteration + 1]


def inputs_of(model: PriceModel, matrix: np.ndarray, zip_known: np.ndarray, city_known: np.ndarray):
    """(scale inputs, predicted log price) of feature rows under ``model``."""
    predicted = model.log_price_of(matrix)
    return scale_inputs(matrix, zip_known, city_known, predicted), predicted


def calibrate(model: PriceModel, scale: xgb.Booster, calibration: pd.DataFrame) -> PriceInterval:
    """The conformal quantiles of ``model`` (as it will be served) on rows it was not fitted on.

    A ZIP group with too few rows for the highest coverage (unseen ZIPs in a small batch) is
    calibrated on all rows instead.
    """
    if calibration.empty:
        raise ValueError("no calibration rows: the price range needs rows the model was not fitted on")
    columns = listing_columns(calibration)
    known = model.transform.known(columns)
    inputs, predicted = inputs_of(model, model.transform.matrix(columns), known["zip"], known["city"])
    interval = PriceInterval(scale, {group: {} for group in GROUPS})
    scores = np.abs(log_price(calibration["price"]) - predicted) / interval.scales(inputs)
    enough = 1 / (1 - max(COVERAGES))
    for group, rows in (("zip_seen", known["zip"]), ("zip_unseen", ~known["zip"])):
        chosen = scores[rows] if rows.sum() >= enough else scores
        interval.calibration_rows[group] = int(rows.sum())
        interval.quantiles[group] = {f"{c:.2f}": conformal_quantile(chosen, c) for c in COVERAGES}
    return interval


def with_interval(
    model: PriceModel,
    stage_one: PriceModel,
    valid_features: pd.DataFrame,
    valid_target: np.ndarray,
    valid_known: dict[str, np.ndarray],
    calibration: pd.DataFrame,
    *,
    seed: int,
    nthread: int,
) -> PriceModel:
    """``model`` with its price range.

    ``stage_one`` is a model fitted without the validation rows (the search's boosters on the
    training rows); its residuals on them (``valid_features``, masked copies included, with
    ``valid_known`` ZIP/city flags per row) teach the scale model, and the final ``model`` is
    calibrated on ``calibration`` rows.
    """
    matrix = frame_matrix(valid_features)
    inputs, predicted = inputs_of(stage_one, matrix, valid_known["zip"], valid_known["city"])
    scale = fit_scale(inputs, valid_target - predicted, seed=seed, nthread=nthread)
    return replace(model, interval=calibrate(model, scale, calibration))

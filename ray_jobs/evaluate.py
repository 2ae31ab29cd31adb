"""Held-out evaluation of a price model.

Metrics are reported both in dollars (what users see) and in log space (what the model
optimises; R² on log price is not dominated by a few mansions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayestate.model import PriceModel

TOP_STATES = 5


def positive_prices(df: pd.DataFrame) -> np.ndarray:
    """The rows' prices as floats; a clear error if any is missing or not positive (nothing to score against)."""
    price = pd.to_numeric(df["price"], errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(price) | (price <= 0)
    if bad.any():
        raise ValueError(f"cannot evaluate on rows without a positive price ({int(bad.sum())} of {len(df)})")
    if len(df) == 0:
        raise ValueError("cannot evaluate on an empty frame")
    return price


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    variance = np.var(truth)
    return float(1 - np.mean((truth - predicted) ** 2) / variance) if variance > 0 else float("nan")


def metric_key(state: str) -> str:
    return "mdape_state_" + state.lower().replace(" ", "_")


def evaluate(
    model: PriceModel, df: pd.DataFrame, *, top_states: int = TOP_STATES, coverage: float = 0.8
) -> dict[str, float]:
    """RMSE / MAE / R² in dollars and in log space, MdAPE, MdAPE of the largest states, and the
    price range's coverage and median relative width at ``coverage`` (for a model with a range)."""
    price = positive_prices(df)
    priced = model.price_range(df, coverage=coverage)
    log_true, log_pred = np.log(price), np.log(priced.price)
    predicted = priced.price
    ape = np.abs(predicted - price) / price
    metrics = {
        "rows": float(len(df)),
        "rmse": float(np.sqrt(np.mean((predicted - price) ** 2))),
        "mae": float(np.mean(np.abs(predicted - price))),
        "r2_dollars": _r2(price, predicted),
        "rmse_log": float(np.sqrt(np.mean((log_pred - log_true) ** 2))),
        "mae_log": float(np.mean(np.abs(log_pred - log_true))),
        "r2_log": _r2(log_true, log_pred),
        "mdape": float(np.median(ape)),
    }
    if model.interval is not None:
        metrics["interval_coverage"] = float(np.mean((priced.low <= price) & (price <= priced.high)))
        metrics["interval_median_rel_width"] = float(np.median((priced.high - priced.low) / predicted))
    states = df["state"].astype("object").to_numpy()
    for state in pd.Series(states).value_counts().head(top_states).index:
        metrics[metric_key(state)] = float(np.median(ape[states == state]))
    return metrics

"""Held-out evaluation of a price model, and the champion-vs-challenger decision.

Metrics are reported both in dollars (what users see) and in log space (what the model
optimises; R² on log price is not dominated by a few mansions). The promotion decision is a
paired bootstrap on the same held-out rows: a challenger replaces the champion only when the
whole 95% interval of its per-row error change is below ``-promotion_min_improvement``,
i.e. when the gain is unlikely to be noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from rayestate.model import PriceModel
from rayestate.settings import Settings

TOP_STATES = 5
CONFIDENCE = 0.95


def _targets(df: pd.DataFrame) -> np.ndarray:
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


def evaluate(model: PriceModel, df: pd.DataFrame, *, top_states: int = TOP_STATES) -> dict[str, float]:
    """RMSE / MAE / R² in dollars and in log space, MdAPE, and MdAPE of the largest states."""
    price = _targets(df)
    log_true, log_pred = np.log(price), model.predict_log(df)
    predicted = np.exp(log_pred)
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
    states = df["state"].astype("object").to_numpy()
    for state in pd.Series(states).value_counts().head(top_states).index:
        metrics[metric_key(state)] = float(np.median(ape[states == state]))
    return metrics


@dataclass
class Decision:
    """Whether the challenger replaces the champion, why, and the numbers behind it."""

    promote: bool
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def paired_error_difference(
    champion_log: np.ndarray, challenger_log: np.ndarray, log_true: np.ndarray, *, samples: int, seed: int
) -> tuple[float, float, float]:
    """Mean of (challenger - champion) absolute log error per row, with its bootstrap CI."""
    diff = np.abs(challenger_log - log_true) - np.abs(champion_log - log_true)
    if len(diff) < 2 or np.all(diff == diff[0]):  # no spread to resample: the interval is the point
        value = float(diff.mean()) if len(diff) else 0.0
        return value, value, value
    ci = stats.bootstrap(
        (diff,), np.mean, n_resamples=samples, confidence_level=CONFIDENCE, method="percentile",
        vectorized=True, batch=max(1, 20_000_000 // len(diff)), rng=np.random.default_rng(seed),
    ).confidence_interval  # fmt: skip
    return float(diff.mean()), float(ci.low), float(ci.high)


def compare(champion: PriceModel, challenger: PriceModel, df: pd.DataFrame, settings: Settings) -> Decision:
    """Promote only if the challenger's error is lower by more than noise (paired bootstrap)."""
    log_true = np.log(_targets(df))
    champion_log, challenger_log = champion.predict_log(df), challenger.predict_log(df)
    mean, low, high = paired_error_difference(
        champion_log, challenger_log, log_true, samples=settings.bootstrap_samples, seed=settings.seed
    )
    margin = settings.promotion_min_improvement
    bound = f"-{margin:g}" if margin else "0"
    numbers = {
        "rows": float(len(df)),
        "champion_mae_log": float(np.mean(np.abs(champion_log - log_true))),
        "challenger_mae_log": float(np.mean(np.abs(challenger_log - log_true))),
        "champion_mdape": float(np.median(np.abs(np.expm1(champion_log - log_true)))),
        "challenger_mdape": float(np.median(np.abs(np.expm1(challenger_log - log_true)))),
        "diff_mae_log": mean,
        "diff_ci_low": low,
        "diff_ci_high": high,
        "min_improvement": margin,
        "bootstrap_samples": float(settings.bootstrap_samples),
    }
    interval = f"mean change in absolute log error {mean:+.4f}, {CONFIDENCE:.0%} CI [{low:+.4f}, {high:+.4f}] on {len(df):,} held-out rows"
    if high < -margin:
        return Decision(True, f"challenger is better: {interval}, entirely below {bound}", numbers)
    if low > 0:
        return Decision(False, f"challenger is worse: {interval}", numbers)
    return Decision(
        False, f"no improvement beyond noise: {interval}; promotion needs the upper bound below {bound}", numbers
    )

"""The pipeline's two decisions: is retraining warranted, and does the challenger replace the champion?

Retrain when there is no champion, the champion's prices on homes that later sold are worse than
its offline figure beyond noise (ray_jobs.live_quality), the new data drifted (ray_jobs.drift:
significant *and* large), or enough new rows piled up since the last training. Never on a raw p-value alone: on 100k-row
batches every test is significant.

Promote on a paired bootstrap on the same held-out rows: a challenger replaces the champion only
when the whole 95% interval of its per-row error change is below ``-promotion_min_improvement``,
i.e. when the gain is unlikely to be noise. Never on an absolute threshold that ignores the champion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ray_jobs.drift import DriftReport
from ray_jobs.evaluate import positive_prices
from rayestate.model import PriceModel
from rayestate.settings import Settings

CONFIDENCE = 0.95


# --- retrain? --------------------------------------------------------------------------------------


def should_retrain(
    has_champion: bool,
    report: DriftReport | None,
    new_rows_since_training: int,
    settings: Settings,
    *,
    live_degraded: str | None = None,
) -> tuple[bool, str]:
    """Retrain when there is no champion, its live accuracy degraded, the data drifted, or enough new rows piled up.

    ``live_degraded``: why the champion's prices on sold homes are worse than its offline figure
    beyond noise (ray_jobs.live_quality.degraded), or None.
    """
    if new_rows_since_training < 0:
        raise ValueError(f"new_rows_since_training must be >= 0, got {new_rows_since_training}")
    if not has_champion:
        return True, "no champion model yet"
    if live_degraded:
        return True, live_degraded
    if report is not None and report.drift:
        return True, report.reason
    enough = settings.retrain_min_new_rows
    if new_rows_since_training >= enough:
        return True, f"{new_rows_since_training:,} new rows since the last training (>= {enough:,})"
    drift = report.reason if report is not None else "no drift report"
    return False, f"skipped: {drift}; {new_rows_since_training:,} new rows since the last training (< {enough:,})"


# --- promote? --------------------------------------------------------------------------------------


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
    log_true = np.log(positive_prices(df))
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

"""Attribution drift: has what drives the champion's prices moved between its test rows and live traffic?

Input drift (ray_jobs.drift) asks whether the listings changed; this asks whether the *reasons*
for the prices did. Per explanation group (rayestate.features: location, living area, bedrooms, ...
and pairs), the mean |SHAP| over a bounded sample of the champion's held-out test rows is compared
with the same over a sample of logged live traffic. Each group gets the change (live - reference,
and relative), and Welch's t-test on the per-row |SHAP| values, so a change on a few hundred rows
is not called significant the way one on thousands is; p-values are Holm-corrected over groups.
Explaining is TreeSHAP on up to ``sample_rows`` rows a side, in the live-drift job, never on the
request path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ray_jobs.drift import holm
from rayestate.features import FEATURE_GROUPS, FEATURES, GROUPS, group_label
from rayestate.model import PriceModel

SAMPLE_ROWS = 1_000


def group_shap(model: PriceModel, rows: pd.DataFrame) -> np.ndarray:
    """Per row (raw listings) and group (GROUPS order), the sum of the group's features' SHAP values."""
    matrix = np.array([[e.shap[name] for name in FEATURES] for e in model.explain(rows)]).reshape(len(rows), -1)
    membership = np.array([[FEATURE_GROUPS[name] == group for group in GROUPS] for name in FEATURES], dtype=float)
    return matrix @ membership


def attribution_drift(
    model: PriceModel,
    reference: pd.DataFrame,
    live: pd.DataFrame,
    *,
    alpha: float,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
) -> dict:
    """Mean |SHAP| per group on both sides, the change, and Welch's t-test (Holm-corrected) per group."""
    if reference.empty or live.empty:
        raise ValueError(f"attribution drift needs rows on both sides (reference {len(reference)}, live {len(live)})")
    sides = {}
    for name, rows in (("reference", reference), ("live", live)):
        sample = rows.sample(min(sample_rows, len(rows)), random_state=seed) if len(rows) > sample_rows else rows
        sides[name] = np.abs(group_shap(model, sample))
    ref, cur = sides["reference"], sides["live"]
    p_values = []
    for j in range(len(GROUPS)):
        if np.allclose(ref[:, j], ref[0, j]) and np.allclose(cur[:, j], ref[0, j]):
            p_values.append(1.0)  # no attribution on either side (a group no feature of the model uses)
        else:
            p_values.append(float(stats.ttest_ind(cur[:, j], ref[:, j], equal_var=False).pvalue))
    adjusted = holm(np.nan_to_num(np.array(p_values), nan=1.0))
    groups = []
    for j, group in enumerate(GROUPS):
        before, after = float(ref[:, j].mean()), float(cur[:, j].mean())
        groups.append({
            "group": group, "label": group_label(group), "reference_mean_abs_shap": before,
            "live_mean_abs_shap": after, "change": after - before,
            "relative_change": (after - before) / before if before > 0 else None,
            "p_value": p_values[j], "p_adjusted": float(adjusted[j]), "significant": bool(adjusted[j] < alpha),
        })  # fmt: skip
    groups.sort(key=lambda g: -abs(g["change"]))
    return {"reference_rows": len(ref), "live_rows": len(cur), "alpha": alpha, "groups": groups,
            "significant": [g["group"] for g in groups if g["significant"]]}  # fmt: skip

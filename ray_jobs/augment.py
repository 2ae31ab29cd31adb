"""Masked copies of training rows, so the model learns to price listings that lack sizes.

Real listings lack ``bed``, ``bath``, ``acre_lot`` or ``house_size`` often: 39% of the real sample
lacks at least one, mostly bare land (no bedrooms, bathrooms or living area). The course API serves
complete rows only, so a model trained on its batches never sees a missing size: XGBoost then
routes a missing value down each split's default branch, which training never chose, and prices
such listings from an untrained path. When the training rows lack sizes much less often than real
listings do, this adds copies of randomly chosen rows with fields masked in the real data's
joint patterns (bare land masks three fields at once, not one at a time), until the share of rows
with a missing size matches the real one. Training data that already has missing sizes at about
the real rate (the dataset itself, the stand-in API's random mode) is left as it is.

The copies keep their original row's out-of-fold location encodings and price; every feature
derived from a masked field is missing (rayestate.features.without_fields).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayestate.features import without_fields
from rayestate.schema import SIZE_FIELDS

#: Patterns of missing sizes among real listings with at least one missing (the 100k real sample,
#: ../shared/data/realtor; share of all rows): bare land dominates. Patterns under 0.1% are left out.
REAL_PATTERNS: dict[tuple[str, ...], float] = {
    ("bed", "bath", "house_size"): 0.2002,
    ("acre_lot",): 0.1123,
    ("house_size",): 0.0324,
    ("acre_lot", "house_size"): 0.0123,
    ("bath", "acre_lot"): 0.0116,
    ("bed", "bath", "acre_lot", "house_size"): 0.0054,
    ("bed", "bath"): 0.0051,
    ("bath", "acre_lot", "house_size"): 0.0039,
    ("bath",): 0.0025,
    ("bed", "acre_lot"): 0.0018,
    ("bed",): 0.0014,
}
#: Share of real listings missing at least one size (the patterns above plus the rarest ones).
REAL_MISSING_SHARE = 0.3907
#: Augment when the training rows lack a size less than half as often as real listings.
AUGMENT_BELOW = 0.5


def missing_share(raw: pd.DataFrame) -> float:
    """Share of rows missing at least one size field."""
    return float(raw[list(SIZE_FIELDS)].isna().any(axis=1).mean()) if len(raw) else 0.0


def copies_needed(raw: pd.DataFrame) -> int:
    """How many masked copies bring the rows' missing share up to the real one (0 if it is close enough)."""
    share = missing_share(raw)
    if share >= AUGMENT_BELOW * REAL_MISSING_SHARE:
        return 0
    # k copies, each missing a field, among n + k rows: (n * share + k) / (n + k) = REAL_MISSING_SHARE.
    return round(len(raw) * (REAL_MISSING_SHARE - share) / (1 - REAL_MISSING_SHARE))


def with_masked_copies(
    features: pd.DataFrame, target: np.ndarray, raw: pd.DataFrame, *, seed: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``features`` and ``target`` plus masked copies of complete rows, and each copy's source row position.

    ``raw`` holds the same rows' listing fields (aligned with ``features``).
    """
    count = copies_needed(raw)
    complete = np.flatnonzero(raw[list(SIZE_FIELDS)].notna().all(axis=1).to_numpy())
    if count == 0 or complete.size == 0:
        return features, target, np.empty(0, dtype=np.intp)
    rng = np.random.default_rng(seed)
    rows = rng.choice(complete, size=count, replace=count > complete.size)
    patterns = list(REAL_PATTERNS)
    weights = np.array(list(REAL_PATTERNS.values()))
    chosen = rng.choice(len(patterns), size=count, p=weights / weights.sum())
    missing = pd.DataFrame({field: [field in patterns[c] for c in chosen] for field in SIZE_FIELDS})
    copies = without_fields(features.iloc[rows].reset_index(drop=True), missing)
    combined = pd.concat([features.reset_index(drop=True), copies], ignore_index=True)
    return combined, np.concatenate([np.asarray(target), np.asarray(target)[rows]]), rows

"""The real sample as every benchmark splits it (one definition, so their figures are comparable).

* Train/validation/calibration: rows 0-79,999 of ../shared/data/realtor/realtor.parquet, cleaned by the
  cleaning job's own rules (ray_jobs.clean.clean_table_pandas), then hash-split 75/15/10 (ray_jobs.split).
* Test: rows 80,000-99,999, never trained on, never used to choose a setting. Only rows with an
  impossible price are left out (missing, below the cleaning floor, above its cap); every other row
  is kept as it is (bed 99, missing sizes, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ray_jobs.clean import PRICE_CAP, PRICE_FLOOR, clean_table_pandas
from ray_jobs.split import split_frame

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared")) / "data" / "realtor" / "realtor.parquet"
TRAIN_ROWS = 80_000
VALID_FRACTION = 0.15
CALIBRATION_FRACTION = 0.10


def train_valid(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Clean rows 0-79,999 and split them into train, validation and calibration."""
    clean, _, _ = clean_table_pandas(pa.Table.from_pandas(raw.iloc[:TRAIN_ROWS], preserve_index=False))
    splits = split_frame(
        clean.to_pandas(), valid_fraction=VALID_FRACTION, test_fraction=0.0, calibration_fraction=CALIBRATION_FRACTION
    )
    return splits.train, splits.valid, splits.calibration


def cleaning_removed(raw: pd.DataFrame) -> dict[str, int]:
    """What the cleaning rules removed from rows 0-79,999, per rule."""
    return clean_table_pandas(pa.Table.from_pandas(raw.iloc[:TRAIN_ROWS], preserve_index=False))[1]


def held_out_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Rows 80,000+ minus impossible prices, and the row numbers left out per reason."""
    test = raw.iloc[TRAIN_ROWS:]
    price = test["price"]
    reasons = {
        "price_missing": price.isna(),
        f"price_below_{PRICE_FLOOR:.0f}": price < PRICE_FLOOR,
        f"price_above_{PRICE_CAP:.0f}": price > PRICE_CAP,
    }
    excluded = {name: [int(i) for i in test.index[mask]] for name, mask in reasons.items()}
    keep = ~pd.concat(reasons, axis=1).any(axis=1)
    return test[keep], excluded

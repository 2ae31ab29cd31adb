"""Train / validation / test / calibration split by hashing each listing's identity.

A row's split is a pure function of its own values (never of its position, batch or the
rows around it), so it never changes as batches accumulate: a test row of batch 1 is still a
test row when batch 9 arrives, and no later model is ever trained on it. That is what makes
a champion and a challenger comparable on the same held-out rows.

The hash leaves out ``price`` and ``status`` on purpose: the same home relisted at a new
price, or sold after being for sale, is the same home and must land in the same split.

The calibration rows are held out of the final model's fit: the price range of every prediction
is calibrated on them (ray_jobs.calibrate), and a range calibrated on rows the model was fitted on
would be too narrow. Its bucket comes after test and validation, so adding it left both unchanged.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import pandas as pd

from rayestate.features import OOF_FOLDS
from rayestate.schema import NUMERIC_COLUMNS, RAW_COLUMNS

#: Changing the salt or the fractions reshuffles every split: treat them as part of the data contract.
SPLIT_SALT = "rayestate-split-v1"
VALID_FRACTION = 0.1
TEST_FRACTION = 0.1
CALIBRATION_FRACTION = 0.1
IDENTITY_COLUMNS = tuple(c for c in RAW_COLUMNS if c not in ("price", "status"))
SPLITS = ("train", "valid", "test", "calibration")


class Splits(NamedTuple):
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    calibration: pd.DataFrame


def _canonical(column: pd.Series, numeric: bool) -> np.ndarray:
    """Text form of a column that is the same however the value was read (601, 601.0, '601.0').

    Each distinct value is formatted once (a column of a million rows has a few thousand distinct
    values), which is what makes hashing a block cheap; the texts are those of formatting every value.
    """
    if numeric:
        values = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
        texts = _each_distinct(values, repr)
        texts[(values == 0) & np.signbit(values)] = "-0.0"  # factorize takes -0.0 for 0.0
        return texts
    if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):  # mixed: 1 and 1.0 differ here
        return column.astype("object").map(_text).to_numpy(dtype=object)
    return _each_distinct(column, _text)


def _each_distinct(values, text) -> np.ndarray:
    """``text`` of every value, called once per distinct value; missing values (factorize's -1) are ""."""
    codes, uniques = pd.factorize(values)
    return np.array([text(v) for v in uniques.tolist()] + [""], dtype=object)[codes]


def _text(value) -> str:
    return "" if value is None or value is pd.NA or value != value else str(value).strip()


def row_keys(df: pd.DataFrame) -> np.ndarray:
    """sha256 hex digest of each row's identity columns (missing columns raise KeyError).

    The digest is of ``SPLIT_SALT``, "\\x1e", then the columns' texts joined by "\\x1f": part of the data contract.
    """
    parts = [_canonical(df[c], c in NUMERIC_COLUMNS).tolist() for c in IDENTITY_COLUMNS]
    prefix, sha256 = f"{SPLIT_SALT}\x1e", hashlib.sha256
    digests = [sha256((prefix + "\x1f".join(texts)).encode()).hexdigest() for texts in zip(*parts, strict=True)]
    return np.array(digests, dtype=object)


def assign_splits(
    df: pd.DataFrame,
    *,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    calibration_fraction: float = CALIBRATION_FRACTION,
) -> np.ndarray:
    """'train' / 'valid' / 'test' / 'calibration' per row, from a uniform number derived from the row key.

    Buckets are laid out test first, then valid, then calibration: the test set for given
    fractions never depends on the others, nor the validation set on the calibration fraction.
    """
    fractions = (test_fraction, valid_fraction, calibration_fraction)
    if not all(0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(
            f"bad split fractions: valid={valid_fraction}, test={test_fraction}, calibration={calibration_fraction}"
        )
    return splits_of(draws(row_keys(df))[0], fractions)


def draws(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three independent numbers per row key, each a pure function of the row: (split uniform, fold, sample uniform).

    The split uniform is what :func:`assign_splits` cuts; the out-of-fold fold (0..OOF_FOLDS-1) and the
    sample uniform come from other digits of the same hash, so a data-parallel run can give each row
    its fold and draw bounded samples block by block, with no global row numbers (ray_jobs.data_parallel).
    """
    split = np.array([int(key[:15], 16) for key in keys], dtype="float64") / 16**15
    fold = np.array([int(key[15:23], 16) % OOF_FOLDS for key in keys], dtype="int64")
    sample = np.array([int(key[23:38], 16) for key in keys], dtype="float64") / 16**15
    return split, fold, sample


def splits_of(uniform: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """'train' / 'valid' / 'test' / 'calibration' for split uniforms and (test, valid, calibration) fractions."""
    edges = np.cumsum(fractions)
    return np.select(
        [uniform < edges[0], uniform < edges[1], uniform < edges[2]], ["test", "valid", "calibration"], "train"
    )


def split_frame(
    df: pd.DataFrame,
    *,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    calibration_fraction: float = CALIBRATION_FRACTION,
) -> Splits:
    """The four splits of df (original index and row order kept within each)."""
    names = assign_splits(
        df, valid_fraction=valid_fraction, test_fraction=test_fraction, calibration_fraction=calibration_fraction
    )
    return Splits(*(df[names == name] for name in SPLITS))

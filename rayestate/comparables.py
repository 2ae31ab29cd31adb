"""Comparable homes: the listings in the model's training data most like the one being priced.

What an appraiser shows first. Built at training time from the rows the model was fitted on and
stored with it (``comparables.parquet`` in the model directory, at most ``max_rows`` rows), so the
replicas that serve a model show comparables from exactly its data.

Similar means, in order: the same ZIP, else the same 3-digit ZIP area, else the same city, else the
same state; within that, nearest in living area, lot size, bedrooms and bathrooms. Sizes are
compared on a log scale (a 200 sq ft difference matters more for a 900 sq ft home than for a
4,000 sq ft one); a size known on one side only counts as far. A listing in the index is its own
nearest comparable, at distance 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rayestate.features import Columns, grouping_keys, listing_columns

FILE = "comparables.parquet"
TIERS = ("zip", "zip3", "city", "state")
TIER_LABELS = {"zip": "same ZIP", "zip3": "same ZIP area", "city": "same city", "state": "same state"}
#: Per size: how a difference is measured, and its weight in the distance.
SIZES = {
    "house_size": (np.log, 1.0),
    "acre_lot": (np.log1p, 0.5),
    "bed": (lambda v: v, 0.25),
    "bath": (lambda v: v, 0.25),
}
#: A size known on one side only counts as this far.
MISSING_DISTANCE = 1.0
SHOWN = ("price", "status", "prev_sold_date", "city", "state", "zip_code", "house_size", "acre_lot", "bed", "bath")


@dataclass
class ComparablesIndex:
    """Training listings with price, grouped by ZIP, ZIP area, city and state for fast lookup."""

    rows: pd.DataFrame  # SHOWN columns, one row per stored listing
    _by: dict[str, dict[str, np.ndarray]] | None = None
    _scaled: dict[str, np.ndarray] | None = None
    _values: dict[str, np.ndarray] | None = None

    @classmethod
    def build(cls, df: pd.DataFrame, *, max_rows: int = 250_000, seed: int = 0) -> ComparablesIndex:
        """From training rows (with price); a seeded sample of ``max_rows`` when there are more."""
        if len(df) > max_rows:
            df = df.sample(max_rows, random_state=seed)
        rows = df[list(SHOWN)].reset_index(drop=True)
        return cls(rows.astype({c: "float64" for c in ("price", "zip_code", *SIZES)}))

    def _prepare(self) -> None:
        columns = listing_columns(self.rows)
        keys = grouping_keys(columns)
        self._by = {}
        for tier in TIERS:
            codes, uniques = pd.factorize(keys[tier], use_na_sentinel=True)
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
            self._by[tier] = {key: order[bounds[i] : bounds[i + 1]] for i, key in enumerate(uniques.tolist())}
        self._scaled = {field: _scaled(field, columns[field]) for field in SIZES}
        self._values = {name: self.rows[name].to_numpy(dtype=object) for name in SHOWN}  # what lookups return

    def lookup(self, listing: Columns, row: int = 0, *, k: int = 5) -> list[dict]:
        """The ``k`` comparables of one listing (row ``row`` of raw listing columns), most similar first."""
        if self._by is None:
            self._prepare()
        keys = grouping_keys({name: values[row : row + 1] for name, values in listing.items()})
        chosen: list[np.ndarray] = []
        tiers: list[str] = []
        taken = 0
        for tier in TIERS:
            key = keys[tier][0]
            candidates = self._by[tier].get(key, np.empty(0, dtype=np.intp)) if key is not None else ()
            if len(candidates) == 0:
                continue
            if chosen:  # a wider area adds only the listings not found in a narrower one
                candidates = np.setdiff1d(candidates, np.concatenate(chosen), assume_unique=True)
            chosen.append(candidates)
            tiers.extend([tier] * len(candidates))
            taken += len(candidates)
            if taken >= k:
                break
        if not chosen:
            return []
        index = np.concatenate(chosen)
        distance = np.zeros(len(index))
        for field, (_, weight) in SIZES.items():
            mine = _scaled(field, listing[field][row : row + 1])[0]
            theirs = self._scaled[field][index]
            if math.isnan(mine):
                gap = np.where(np.isnan(theirs), 0.0, MISSING_DISTANCE)
            else:
                gap = np.where(np.isnan(theirs), MISSING_DISTANCE, (theirs - mine) ** 2)
            distance += weight * gap
        distance = np.sqrt(distance)
        rank = np.array([TIERS.index(t) for t in tiers])
        best = np.lexsort((distance, rank))[:k]
        return [self._shown(int(index[i]), tiers[i], float(distance[i])) for i in best]

    def _shown(self, position: int, tier: str, distance: float) -> dict:
        shown = {name: _plain(self._values[name][position]) for name in SHOWN}
        if shown["zip_code"] is not None:
            shown["zip_code"] = f"{int(shown['zip_code']):05d}"
        return {**shown, "match": TIER_LABELS[tier], "distance": round(distance, 6)}

    # --- persistence -----------------------------------------------------------------
    def save(self, directory: Path) -> None:
        pq.write_table(
            pa.Table.from_pandas(self.rows, preserve_index=False), Path(directory) / FILE, compression="zstd"
        )

    @classmethod
    def load(cls, directory: Path) -> ComparablesIndex | None:
        path = Path(directory) / FILE
        return cls(pq.read_table(path).to_pandas()) if path.is_file() else None


def _plain(value):
    """A stored value as JSON wants it: None for missing, float for numbers, text as is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else float(value)


def _scaled(field: str, values: np.ndarray) -> np.ndarray:
    """A size on the scale distances are measured in (NaN where unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = SIZES[field][0](np.where(values >= 0, values, np.nan))
    return np.where(np.isfinite(out), out, np.nan)

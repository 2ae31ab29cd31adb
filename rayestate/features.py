"""The feature transform shared by training and serving.

A fitted :class:`FeatureTransform` turns raw listing rows into the model's feature frame:
numeric features, engineered ratios, sale-history features, native categoricals (state,
status) for XGBoost, and smoothed target encodings of location (zip, zip prefix, city,
broker). Location is most of a home's price, and zip/city have tens of thousands of
levels, so they are encoded as the smoothed mean log price of their area, backing off
zip -> zip prefix -> state -> global for rare or unseen areas.

Price level alone mixes up "expensive area" and "big homes": so the area's typical log price
per square foot (and per acre, for land) is encoded too, and combined with the listing's own
size into a ready-made estimate (area $/sq ft x living area), which trees cannot form
themselves. On the real sample (validation split of rows 0-79,999, same booster) these and a
lighter smoothing took MdAPE from 0.225 to 0.204 and R² (log) from 0.765 to 0.789.

Leakage guard: encodings are fitted on the training rows only; the training rows
themselves get out-of-fold encodings (:meth:`FeatureTransform.fit_transform`), so no row
ever sees its own price. The fitted state is plain JSON, saved next to the booster.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from rayestate.schema import RAW_COLUMNS, STATES, STATUSES

FEATURE_VERSION = 3
#: Day the dataset was scraped; sale-history ages are measured from it.
REFERENCE_DATE = date(2024, 1, 1)
#: Pseudo-rows of the parent's value each key's mean is shrunk with. Chosen on validation (real
#: sample, rows 0-79,999, tuned config fixed): MdAPE 0.1921 at 0.25-0.5, 0.1934 at 1, 0.1937 at 2,
#: 0.1983 at 8 (out-of-fold encoding already keeps a row's own price out, so little shrinkage is needed).
SMOOTHING = 0.5
OOF_FOLDS = 5

NUMERIC_FEATURES = ("bed", "bath", "acre_lot", "house_size")
#: No lot/house-area ratio: it falls as the house grows, and the model is kept monotone in living
#: area (ray_jobs.tune.MONOTONE_IN_HOUSE_SIZE); on validation dropping it cost nothing.
RATIO_FEATURES = ("sqft_per_bed", "bath_per_bed")
HISTORY_FEATURES = ("prev_sold_year", "years_since_sold")
CATEGORICAL_FEATURES = ("state", "status")
ENCODED_FEATURES = (
    "te_zip", "te_zip3", "te_city", "te_broker", "te_zip_ppsf", "te_city_ppsf", "te_zip_ppa",
    "te_zip_ppsf_x_size", "te_city_ppsf_x_size", "te_zip_ppa_x_lot", "te_broker_ppsf", "te_broker_ppsf_x_size",
)  # fmt: skip
ZIP_FEATURES = ("zip_number",)
FEATURES: tuple[str, ...] = (
    NUMERIC_FEATURES + RATIO_FEATURES + HISTORY_FEATURES + CATEGORICAL_FEATURES
    + ZIP_FEATURES + ENCODED_FEATURES
)  # fmt: skip

#: The listing fields each model feature is computed from. One definition: explanations group SHAP
#: values by it, and training masks features by it to teach the model listings that lack a field
#: (a feature is missing whenever a numeric field it reads is missing). Location encodings read the
#: whole location (state, then ZIP area, ZIP or city as far as they are known).
LOCATION = ("state", "city", "zip_code")
FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    "bed": ("bed",), "bath": ("bath",), "acre_lot": ("acre_lot",), "house_size": ("house_size",),
    "sqft_per_bed": ("house_size", "bed"), "bath_per_bed": ("bath", "bed"),
    "prev_sold_year": ("prev_sold_date",), "years_since_sold": ("prev_sold_date",),
    "state": ("state",), "status": ("status",), "zip_number": ("zip_code",),
    "te_zip": LOCATION, "te_zip3": LOCATION, "te_city": LOCATION, "te_broker": ("brokered_by",),
    "te_zip_ppsf": LOCATION, "te_city_ppsf": LOCATION, "te_zip_ppa": LOCATION,
    "te_zip_ppsf_x_size": (*LOCATION, "house_size"), "te_city_ppsf_x_size": (*LOCATION, "house_size"),
    "te_zip_ppa_x_lot": (*LOCATION, "acre_lot"), "te_broker_ppsf": ("brokered_by",),
    "te_broker_ppsf_x_size": ("brokered_by", "house_size"),
}  # fmt: skip

#: The listing's inputs as a person thinks of them: an explanation sums SHAP values per group.
INPUT_GROUPS: dict[str, tuple[str, ...]] = {
    "location": LOCATION,
    "living_area": ("house_size",),
    "bedrooms": ("bed",),
    "bathrooms": ("bath",),
    "lot": ("acre_lot",),
    "sale_history": ("prev_sold_date",),
    "broker_street_ids": ("brokered_by", "street"),
    "status": ("status",),
}
GROUP_LABELS = {
    "location": "location (state, city, ZIP)", "living_area": "living area", "bedrooms": "bedrooms",
    "bathrooms": "bathrooms", "lot": "lot size", "sale_history": "sale history",
    "broker_street_ids": "broker and street IDs", "status": "listing status",
}  # fmt: skip
_GROUP_OF_INPUT = {field: group for group, fields in INPUT_GROUPS.items() for field in fields}


def feature_group(feature: str) -> str:
    """The explanation group of a feature: its one input group, or an explicit pair ("location*living_area").

    A feature read from two groups (the ZIP's price per sq ft times the living area) is never split
    between them by a guess: it is a group of its own. More than two groups would be a new kind of
    feature, and an error here.
    """
    groups = tuple(dict.fromkeys(_GROUP_OF_INPUT[field] for field in FEATURE_INPUTS[feature]))
    if len(groups) > 2:
        raise ValueError(f"feature {feature!r} reads {len(groups)} input groups; explanations group by two at most")
    return "*".join(sorted(groups, key=list(INPUT_GROUPS).index))


def group_label(group: str) -> str:
    return " × ".join(GROUP_LABELS[part] for part in group.split("*"))


#: Every feature's group, and every group's features (pairs included), in FEATURES order.
FEATURE_GROUPS: dict[str, str] = {feature: feature_group(feature) for feature in FEATURES}
GROUPS: tuple[str, ...] = (*INPUT_GROUPS, *dict.fromkeys(g for g in FEATURE_GROUPS.values() if "*" in g))

#: What each model feature means, for explanations shown to people.
FEATURE_LABELS = {
    "bed": "bedrooms",
    "bath": "bathrooms",
    "acre_lot": "lot size (acres)",
    "house_size": "living area (sq ft)",
    "sqft_per_bed": "sq ft per bedroom",
    "bath_per_bed": "bathrooms per bedroom",
    "prev_sold_year": "year last sold",
    "years_since_sold": "years since last sale",
    "state": "state",
    "status": "listing status",
    "zip_number": "ZIP code (position)",
    "te_zip": "ZIP code price level",
    "te_zip3": "ZIP area (3-digit) price level",
    "te_city": "city price level",
    "te_broker": "broker price level",
    "te_zip_ppsf": "ZIP price per sq ft",
    "te_city_ppsf": "city price per sq ft",
    "te_zip_ppa": "ZIP price per acre",
    "te_zip_ppsf_x_size": "ZIP price per sq ft x living area",
    "te_city_ppsf_x_size": "city price per sq ft x living area",
    "te_zip_ppa_x_lot": "ZIP price per acre x lot size",
    "te_broker_ppsf": "broker price per sq ft",
    "te_broker_ppsf_x_size": "broker price per sq ft x living area",
}


def without_fields(features: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    """The features of the same listings had the fields flagged in ``missing`` been left out.

    ``missing`` has one boolean column per numeric listing field (e.g. SIZE_FIELDS), aligned with
    ``features``. Every feature that reads a flagged field becomes NaN: exactly what
    :meth:`FeatureTransform.transform` gives for the listing without that field (a test checks
    it), while each row keeps its own location encodings (out-of-fold ones for training rows).
    """
    out = features.copy()
    for name, inputs in FEATURE_INPUTS.items():
        flagged = [missing[field].to_numpy(dtype=bool) for field in inputs if field in missing.columns]
        if flagged:
            out[name] = out[name].where(~np.logical_or.reduce(flagged))
    return out


def frame_matrix(features: pd.DataFrame) -> np.ndarray:
    """A feature frame (FeatureTransform.transform) as the float matrix the boosters read when serving."""
    columns = []
    for name in FEATURES:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            columns.append(np.where(codes >= 0, codes, np.nan))
        else:
            columns.append(column.to_numpy(dtype="float64", na_value=np.nan))
    return np.column_stack(columns)


def log_price(price) -> np.ndarray:
    """The training target: natural log of the price in dollars."""
    return np.log(np.asarray(price, dtype="float64"))


#: A batch of raw listings as columns: numbers as float64 arrays (NaN = missing), text as object
#: arrays (None = missing). Every path, training and serving, one row or a million, computes the
#: features from these: pandas' per-call overhead (~5 ms per call) would dominate a one-listing request.
Columns = dict[str, np.ndarray]
TEXT_COLUMNS = ("status", "city", "state", "prev_sold_date")
_SALE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Sale dates pandas can represent (what the transform accepted when it parsed with pandas).
_FIRST_DATE, _LAST_DATE = date(1677, 9, 22), date(2262, 4, 11)


def listing_columns(listings) -> Columns:
    """Raw listing columns from a DataFrame, a list of row dicts, or a dict of column lists (Columns as they are)."""
    if _is_columns(listings) and set(RAW_COLUMNS) <= set(listings):
        return listings
    if isinstance(listings, pd.DataFrame):
        source = {c: listings[c].to_numpy() for c in RAW_COLUMNS if c in listings.columns}
        rows = len(listings)
    elif isinstance(listings, dict):
        source = listings
        rows = len(next(iter(listings.values()))) if listings else 0
    else:
        source = {c: [row.get(c) for row in listings] for c in RAW_COLUMNS}
        rows = len(listings)
    columns: Columns = {}
    for name in RAW_COLUMNS:
        values = source.get(name)
        if name in TEXT_COLUMNS:
            columns[name] = _text_array(values, rows)
        else:
            columns[name] = _float_array(values, rows)
    return columns


def _float_array(values, rows: int) -> np.ndarray:
    """Numbers as float64; None, NaN and anything that is not a number become NaN."""
    if values is None:
        return np.full(rows, np.nan)
    try:
        array = np.asarray(values, dtype="float64")  # fast path: numbers and None
    except (TypeError, ValueError):
        array = pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce").to_numpy(
            "float64", na_value=np.nan
        )
    return array.reshape(rows)


def _text_array(values, rows: int) -> np.ndarray:
    """Text as an object array; anything that is not a string (None, NaN, pandas' NA) becomes None."""
    out = np.full(rows, None, dtype=object)
    if values is not None:
        out[:] = [v if isinstance(v, str) else None for v in values]
    return out


def _integer_text(numeric: np.ndarray, template: str, lower: float, upper: float) -> np.ndarray:
    """Numbers in [lower, upper) as text (template.format(int)); anything else None."""
    with np.errstate(invalid="ignore"):
        valid = (numeric >= lower) & (numeric < upper)
    text = np.full(len(numeric), None, dtype=object)
    text[valid] = [template.format(int(v)) for v in numeric[valid].tolist()]
    return text


def grouping_keys(columns: Columns) -> dict[str, np.ndarray]:
    """The grouping keys each target encoding is computed over (text; None where unknown).

    ZIPs are 5-digit text ("00601": the dataset stores 601.0), the city key is "state|city".
    """
    zip5 = _integer_text(columns["zip_code"], "{:05d}", 0, 100_000)
    states, cities = columns["state"], columns["city"]
    return {
        "state": states,
        "zip3": np.array([z[:3] if z is not None else None for z in zip5.tolist()], dtype=object),
        "zip": zip5,
        "city": np.array(
            [f"{s}|{c}" if s is not None and c is not None else None for s, c in zip(states, cities, strict=True)],
            dtype=object,
        ),
        "broker": _integer_text(columns["brokered_by"], "{:d}", -np.inf, np.inf),
    }


@lru_cache(maxsize=1 << 16)
def _sale_history(text: str | None) -> tuple[float, float]:
    """(year, years before REFERENCE_DATE) of a YYYY-MM-DD sale date; NaN for anything else."""
    if text is None or not _SALE_DATE.fullmatch(text):
        return math.nan, math.nan
    try:
        sold = date.fromisoformat(text)
    except ValueError:
        return math.nan, math.nan
    if not _FIRST_DATE <= sold <= _LAST_DATE:
        return math.nan, math.nan
    return float(sold.year), (REFERENCE_DATE - sold).days / 365.25


class ListingKeys:
    """A batch's grouping keys, each looked up once per table (every encoding over that key).

    Applying the transform reads 13 encodings over 5 keys, and the response warnings check 2
    of those keys again. A big batch factorizes each key once and looks its distinct values up
    in C (``Index.get_indexer``); a small one (``SMALL_BATCH`` rows or fewer) looks each row up in a
    dict, which costs microseconds where pandas' calls cost tens of them. Both give the same values.
    """

    SMALL_BATCH = 64

    def __init__(self, keys: dict[str, np.ndarray]):
        self._keys = keys
        self._rows: dict[tuple[str, KeyTable], np.ndarray] = {}  # (key, table) -> values per row

    @classmethod
    def of(cls, listings) -> ListingKeys:
        """The keys of raw listings (Columns, or anything listing_columns reads)."""
        columns = listings if _is_columns(listings) else listing_columns(listings)
        return cls(grouping_keys(columns))

    def values(self, name: str, table: KeyTable) -> np.ndarray:
        """The table's values per row (rows x encodings); NaN where the key is missing or unseen."""
        rows = self._rows.get((name, table))
        if rows is None:
            keys = self._keys[name]
            if len(keys) <= self.SMALL_BATCH:
                rows = table.values_at(table.lookup(keys))
            else:
                codes, uniques = pd.factorize(keys, use_na_sentinel=True)
                # Code -1 (missing key) picks the appended position -1, the table's all-NaN row.
                rows = table.values_at(np.append(table.positions(uniques), -1))[codes]
            self._rows[name, table] = rows
        return rows


def _is_columns(listings) -> bool:
    return isinstance(listings, dict) and all(isinstance(v, np.ndarray) for v in listings.values())


class KeyTable:
    """Every fitted encoding over one grouping key: one hashed pandas Index and a value matrix.

    Column j holds encoding j's value per key (NaN where that encoding has no such key); one
    extra all-NaN row at the end answers ``get_indexer``'s -1 ("not found") with no special case.
    A Python dict lookup per distinct key cost ~4 ms per 1,000 real listings; one
    ``Index.get_indexer`` per key, not per encoding, does it in C.
    """

    def __init__(self, mappings: dict[str, dict[str, float]]):
        self.columns = {name: j for j, name in enumerate(mappings)}
        self._positions: dict[str, int] | None = None  # built on the first small-batch lookup
        self._index = pd.Index(
            list(dict.fromkeys(key for mapping in mappings.values() for key in mapping)), dtype="object"
        )
        self._values = np.full((len(self._index) + 1, len(mappings)), np.nan)
        for j, mapping in enumerate(mappings.values()):
            self._values[self._index.get_indexer(list(mapping)), j] = np.fromiter(
                mapping.values(), "float64", len(mapping)
            )

    def positions(self, keys) -> np.ndarray:
        """Row positions of distinct keys (-1: not in the table)."""
        # Asked with an object Index, as the table's own: pandas 3 reads a bare array of text as its
        # str dtype and casts it back on every call (~0.4 ms per key for 500 rows, 0.1 ms this way).
        return self._index.get_indexer(pd.Index(keys, dtype=object))

    def lookup(self, keys) -> np.ndarray:
        """Row positions of each key, one dict lookup each (-1: missing or not in the table)."""
        if self._positions is None:
            self._positions = {key: i for i, key in enumerate(self._index.tolist())}
        found = self._positions
        return np.fromiter((found.get(key, -1) for key in keys), dtype=np.intp, count=len(keys))

    def values_at(self, positions: np.ndarray) -> np.ndarray:
        return self._values[positions]


def _positive_log(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.log(np.where(values > 0, values, np.nan))


def _targets(columns: Columns, y: np.ndarray) -> dict[str, np.ndarray]:
    """What each encoding averages: log price, log $/sq ft, log $/acre (NaN where size is unknown)."""
    return {"price": y, "ppsf": y - _positive_log(columns["house_size"]), "ppa": y - _positive_log(columns["acre_lot"])}


@dataclass(frozen=True)
class _Encoding:
    key: str  # grouping key from grouping_keys()
    target: str  # series from _targets()
    parent: str | None  # encoding unseen/rare keys back off to


# Each encoding backs off to its parent's encoding, so rare or unseen keys get a sane value.
# Parents come before children (fitting and applying walk this dict in order).
_ENCODINGS = {
    "state": _Encoding("state", "price", None),
    "zip3": _Encoding("zip3", "price", "state"),
    "zip": _Encoding("zip", "price", "zip3"),
    "city": _Encoding("city", "price", "state"),
    "broker": _Encoding("broker", "price", None),
    "ppsf_state": _Encoding("state", "ppsf", None),
    "ppsf_zip3": _Encoding("zip3", "ppsf", "ppsf_state"),
    "ppsf_zip": _Encoding("zip", "ppsf", "ppsf_zip3"),
    "ppsf_city": _Encoding("city", "ppsf", "ppsf_state"),
    "ppsf_broker": _Encoding("broker", "ppsf", None),
    "ppa_state": _Encoding("state", "ppa", None),
    "ppa_zip3": _Encoding("zip3", "ppa", "ppa_state"),
    "ppa_zip": _Encoding("zip", "ppa", "ppa_zip3"),
}
_ENCODED_COLUMNS = {
    "te_zip": "zip", "te_zip3": "zip3", "te_city": "city", "te_broker": "broker",
    "te_zip_ppsf": "ppsf_zip", "te_city_ppsf": "ppsf_city", "te_zip_ppa": "ppa_zip",
    "te_broker_ppsf": "ppsf_broker",
}  # fmt: skip


@dataclass
class FeatureTransform:
    """Fitted feature transform; JSON-serialisable, shared by jobs and serving."""

    global_mean: float = 0.0
    encodings: dict[str, dict[str, float]] = field(default_factory=dict)
    states: tuple[str, ...] = STATES
    statuses: tuple[str, ...] = STATUSES
    version: int = FEATURE_VERSION
    #: Overall mean of each encoding target ("price", "ppsf", "ppa"): the last fallback.
    target_means: dict[str, float] = field(default_factory=dict)
    _tables: dict[str, KeyTable] = field(default_factory=dict, init=False, repr=False, compare=False)
    _categories: dict[str, pd.CategoricalDtype] = field(default_factory=dict, init=False, repr=False, compare=False)
    _code_maps: dict[str, dict[str, float]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def table(self, key: str) -> KeyTable:
        """The encodings over grouping ``key`` as one lookup table, built on first use (they never change)."""
        table = self._tables.get(key)
        if table is None:
            names = [name for name, spec in _ENCODINGS.items() if spec.key == key]
            table = self._tables[key] = KeyTable({name: self.encodings.get(name, {}) for name in names})
        return table

    def _category(self, name: str, categories: tuple[str, ...]) -> pd.CategoricalDtype:
        """The categorical dtype of state or status, built once: building one validates its categories."""
        dtype = self._categories.get(name)
        if dtype is None:
            dtype = self._categories[name] = pd.CategoricalDtype(list(categories))
        return dtype

    def _encoded(self, keys: ListingKeys, name: str) -> np.ndarray:
        """Encoding ``name`` per row, NaN where the row's key is missing or was not seen in training."""
        key = _ENCODINGS[name].key
        table = self.table(key)
        return keys.values(key, table)[:, table.columns[name]]

    # --- fitting ---------------------------------------------------------------
    @classmethod
    def fit(cls, df: pd.DataFrame, target: np.ndarray | None = None) -> FeatureTransform:
        """Learn encodings from training rows (``target`` defaults to log of df.price)."""
        return cls.from_stats(fit_stats(df, target))

    @classmethod
    def from_stats(cls, stats: pd.DataFrame, *, without_fold: int | None = None) -> FeatureTransform:
        """The transform fitted on the rows :func:`encoding_stats` summed up (less one fold's rows, if given).

        Sums and counts add up across any split of the rows, so the same transform comes out of one
        frame or of a whole dataset's blocks summed by Ray Data (ray_jobs.data_parallel): what the
        data-parallel fit uses, never holding the rows in one process.
        """
        rows = stats if without_fold is None else stats[stats["fold"] != without_fold]
        totals = rows.groupby(["encoding", "key", "parent"], sort=False)[["sum", "count"]].sum()
        means = {}
        for target in _TARGETS:
            name = f"{_MEAN}{target}"
            total = totals.loc[name] if name in totals.index.get_level_values(0) else None
            count = float(total["count"].sum()) if total is not None else 0.0
            means[target] = float(total["sum"].sum()) / count if count else 0.0
        return cls(global_mean=means["price"], encodings=_encodings_from_totals(totals, means), target_means=means)

    @classmethod
    def out_of_fold_partials(cls, stats: pd.DataFrame) -> list[FeatureTransform | None]:
        """Per fold, the transform fitted without that fold's rows (None where no other rows are left)."""
        counts = stats[stats["encoding"] == f"{_MEAN}price"].groupby("fold")["count"].sum()
        total = float(counts.sum())
        return [
            cls.from_stats(stats, without_fold=fold) if total - float(counts.get(fold, 0.0)) > 0 else None
            for fold in range(OOF_FOLDS)
        ]

    @classmethod
    def fit_transform(
        cls, df: pd.DataFrame, target: np.ndarray | None = None, *, seed: int = 0
    ) -> tuple[FeatureTransform, pd.DataFrame]:
        """Fit on all rows, and return training features with out-of-fold encodings."""
        y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
        columns = listing_columns(df)
        keys, targets = grouping_keys(columns), _targets(columns, y)
        folds = np.random.default_rng(seed).integers(0, OOF_FOLDS, len(df))
        stats = encoding_stats(keys, targets, folds)
        fitted = cls.from_stats(stats)
        features = fitted.feature_columns(columns, ListingKeys(keys))
        features = out_of_fold(features, keys, folds, cls.out_of_fold_partials(stats))
        return fitted, fitted.to_frame(features, index=df.index)

    def out_of_fold_matrix(self, listings, folds: np.ndarray, partials: list[FeatureTransform | None]) -> np.ndarray:
        """:meth:`matrix` of training rows with out-of-fold encodings (``partials``: out_of_fold_partials).

        The data-parallel fit's per-block form of :meth:`fit_transform`: each row's fold comes with it.
        """
        columns = listings if _is_columns(listings) else listing_columns(listings)
        keys = grouping_keys(columns)
        features = out_of_fold(self.feature_columns(columns, ListingKeys(keys)), keys, folds, partials)
        matrix = np.column_stack([features[name] for name in FEATURES])
        matrix[~np.isfinite(matrix)] = np.nan
        return matrix

    # --- applying --------------------------------------------------------------
    def feature_columns(self, listings, keys: ListingKeys | None = None) -> Columns:
        """Every model feature of raw listings as a float64 array, in FEATURES order (see :meth:`matrix`)."""
        matrix = self.matrix(listings, keys)
        return {name: matrix[:, j] for j, name in enumerate(FEATURES)}

    def matrix(self, listings, keys: ListingKeys | None = None) -> np.ndarray:
        """Every model feature of raw listings: one float matrix (rows x FEATURES), what the boosters read.

        ``listings``: Columns, or anything :func:`listing_columns` reads (price, if present, is
        ignored). State and status are their category codes (NaN when unknown), as the boosters
        read them. ``keys`` (``ListingKeys.of(listings)``) can be passed in when the caller also
        needs :meth:`known` for the same rows.
        """
        columns = listings if _is_columns(listings) else listing_columns(listings)
        features: Columns = {c: columns[c] for c in NUMERIC_FEATURES}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            beds = np.where(features["bed"] > 0, features["bed"], np.nan)
            features["sqft_per_bed"] = features["house_size"] / beds
            features["bath_per_bed"] = features["bath"] / beds
        history = np.array([_sale_history(text) for text in columns["prev_sold_date"].tolist()], dtype="float64")
        history = history.reshape(len(beds), 2)
        features["prev_sold_year"], features["years_since_sold"] = history[:, 0], history[:, 1]
        features["state"] = self._codes("state", columns["state"])
        features["status"] = self._codes("status", columns["status"])
        features["zip_number"] = columns["zip_code"]
        features.update(self._encode(keys if keys is not None else ListingKeys(grouping_keys(columns))))
        _add_estimates(features)
        matrix = np.column_stack([features[name] for name in FEATURES])
        # Ratios and products of valid inputs can overflow (a bed count of 1e-308 is >= 0); XGBoost
        # refuses inf, and an overflowed feature carries no information, so it becomes missing.
        matrix[~np.isfinite(matrix)] = np.nan
        return matrix

    def transform(self, listings, keys: ListingKeys | None = None) -> pd.DataFrame:
        """The features as a DataFrame with state and status as categoricals (training, explanations)."""
        index = listings.index if isinstance(listings, pd.DataFrame) else None
        return self.to_frame(self.feature_columns(listings, keys), index=index)

    def to_frame(self, features: Columns, *, index=None) -> pd.DataFrame:
        """Feature columns as a DataFrame: the codes of state and status back as categoricals."""
        frame = {name: features[name] for name in FEATURES}
        for name, categories in (("state", self.states), ("status", self.statuses)):
            codes = features[name]
            frame[name] = pd.Categorical.from_codes(
                np.where(np.isnan(codes), -1, codes).astype("int64"), dtype=self._category(name, categories)
            )
        return pd.DataFrame(frame, index=index)

    def category(self, name: str, code: float) -> str | None:
        """The state or status a code stands for (None for NaN)."""
        categories = self.states if name == "state" else self.statuses
        return None if math.isnan(code) else categories[int(code)]

    def _codes(self, name: str, values: np.ndarray) -> np.ndarray:
        """Category codes of state or status (NaN where not one of the categories)."""
        codes = self._code_maps.get(name)
        if codes is None:
            categories = self.states if name == "state" else self.statuses
            codes = self._code_maps[name] = {value: float(i) for i, value in enumerate(categories)}
        return np.fromiter((codes.get(v, math.nan) for v in values.tolist()), dtype="float64", count=len(values))

    def _encode(self, keys: ListingKeys) -> dict[str, np.ndarray]:
        encoded: dict[str, np.ndarray] = {}
        for name, spec in _ENCODINGS.items():
            values = self._encoded(keys, name)
            top_level = self.target_means.get(spec.target, self.global_mean)
            fallback = encoded[spec.parent] if spec.parent else top_level
            encoded[name] = np.where(np.isnan(values), fallback, values)
        return {column: encoded[name] for column, name in _ENCODED_COLUMNS.items()}

    def known(self, listings, keys: ListingKeys | None = None) -> dict[str, np.ndarray]:
        """Per row, whether state / zip / city were seen in training (for response warnings)."""
        columns = listings if _is_columns(listings) else listing_columns(listings)
        keys = keys if keys is not None else ListingKeys(grouping_keys(columns))
        return {
            "state": ~np.isnan(self._codes("state", columns["state"])),
            # Fitted encodings are finite, so NaN means "no such key in training".
            "zip": ~np.isnan(self._encoded(keys, "zip")),
            "city": ~np.isnan(self._encoded(keys, "city")),
        }

    # --- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "global_mean": self.global_mean,
            "target_means": self.target_means,
            "states": list(self.states),
            "statuses": list(self.statuses),
            "encodings": self.encodings,
            "features": list(FEATURES),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureTransform:
        if data.get("version") != FEATURE_VERSION:
            raise ValueError(
                f"feature transform version {data.get('version')} is not supported (expected {FEATURE_VERSION})"
            )
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("feature transform was saved with a different feature list")
        return cls(
            global_mean=float(data["global_mean"]),
            encodings={k: {str(kk): float(vv) for kk, vv in v.items()} for k, v in data["encodings"].items()},
            states=tuple(data["states"]),
            statuses=tuple(data["statuses"]),
            target_means={k: float(v) for k, v in data.get("target_means", {}).items()},
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> FeatureTransform:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _add_estimates(features) -> None:
    """Area rate x own size, in log dollars (NaN when the size is unknown or zero).

    ``features`` is a DataFrame or a dict of arrays (both index by column name).
    """
    size, lot = np.asarray(features["house_size"], "float64"), np.asarray(features["acre_lot"], "float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_size = np.log(np.where(size > 0, size, np.nan))
        log_lot = np.log(np.where(lot > 0, lot, np.nan))
    features["te_zip_ppsf_x_size"] = np.asarray(features["te_zip_ppsf"], "float64") + log_size
    features["te_city_ppsf_x_size"] = np.asarray(features["te_city_ppsf"], "float64") + log_size
    features["te_zip_ppa_x_lot"] = np.asarray(features["te_zip_ppa"], "float64") + log_lot
    features["te_broker_ppsf_x_size"] = np.asarray(features["te_broker_ppsf"], "float64") + log_size


def fit_stats(df: pd.DataFrame, target: np.ndarray | None = None, folds: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`encoding_stats` of training rows (``target`` defaults to log of df.price)."""
    y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
    columns = listing_columns(df)
    return encoding_stats(grouping_keys(columns), _targets(columns, y), folds)


def encoding_stats(
    keys: dict[str, np.ndarray], targets: dict[str, np.ndarray], folds: np.ndarray | None = None
) -> pd.DataFrame:
    """What fitting the encodings needs of some rows, as sums: one row per (encoding, fold, key, parent key).

    Columns: ``encoding`` (an encoding's name, or ``mean:<target>`` for a target's overall mean with
    an empty key), ``fold`` (the rows' out-of-fold fold, 0 without folds), ``key``, ``parent`` (the
    key's parent key, e.g. a ZIP's 3-digit area; "" where there is none), ``sum`` and ``count`` of the
    encoding's target over rows with a key and a finite target. Sums of blocks' stats are the
    stats of all their rows, which is what lets a dataset of any size be fitted block by block.
    """
    rows = len(next(iter(targets.values())))
    fold = np.zeros(rows, dtype="int64") if folds is None else np.asarray(folds, dtype="int64")
    frames = []
    for target, values in targets.items():
        finite = np.isfinite(values)
        frame = pd.DataFrame({"fold": fold[finite], "y": values[finite]}).groupby("fold")["y"].agg(["sum", "count"])
        frames.append(frame.reset_index().assign(encoding=f"{_MEAN}{target}", key="", parent=""))
    for name, spec in _ENCODINGS.items():
        values = targets[spec.target]
        parent = keys[_ENCODINGS[spec.parent].key] if spec.parent else np.full(rows, "", dtype=object)
        used = pd.notna(keys[spec.key]) & np.isfinite(values)
        frame = pd.DataFrame(
            {"fold": fold[used], "key": keys[spec.key][used], "parent": parent[used], "y": values[used]}
        )
        frame["parent"] = frame["parent"].fillna("")
        grouped = frame.groupby(["fold", "key", "parent"], sort=False)["y"].agg(["sum", "count"]).reset_index()
        frames.append(grouped.assign(encoding=name))
    stats = pd.concat(frames, ignore_index=True)[list(STATS_COLUMNS)]
    return stats.astype({"fold": "int64", "sum": "float64", "count": "int64"})


#: The columns of encoding_stats(); the first four identify a row, the last two add up.
STATS_COLUMNS = ("encoding", "fold", "key", "parent", "sum", "count")
_MEAN = "mean:"
_TARGETS = ("price", "ppsf", "ppa")


def _encodings_from_totals(totals: pd.DataFrame, means: dict[str, float]) -> dict[str, dict[str, float]]:
    """Smoothed mean target per key, shrunk towards the parent key's encoding.

    A key's parent is the parent key most of its rows have (a ZIP area spanning two states takes
    the state of most of its rows; ties go to the first in sort order), so the result does not
    depend on the order of the rows.
    """
    encodings: dict[str, dict[str, float]] = {}
    present = set(totals.index.get_level_values(0))
    for name, spec in _ENCODINGS.items():
        if name not in present:
            encodings[name] = {}
            continue
        rows = totals.loc[name]
        per_key = rows.groupby(level="key", sort=False)[["sum", "count"]].sum()
        per_key = per_key[per_key["count"] > 0]
        prior = pd.Series(means[spec.target], index=per_key.index)
        if spec.parent:
            # The prior of each key is its parent's encoding (e.g. a zip's prior is its zip3's).
            pairs = rows.reset_index().sort_values(["count", "parent"], ascending=[False, True], kind="stable")
            parent_of = pairs.drop_duplicates("key").set_index("key")["parent"].reindex(per_key.index)
            parent_values = encodings[spec.parent]
            looked_up = pd.Series([parent_values.get(p, np.nan) for p in parent_of.tolist()], index=per_key.index)
            prior = looked_up.fillna(means[spec.target])
        smoothed = (per_key["sum"] + SMOOTHING * prior) / (per_key["count"] + SMOOTHING)
        encodings[name] = dict(zip(smoothed.index.astype(str), smoothed.astype("float64").tolist(), strict=True))
    return encodings


def out_of_fold(
    features: Columns, keys: dict[str, np.ndarray], folds: np.ndarray, partials: list[FeatureTransform | None]
) -> Columns:
    """``features`` with each row's location encodings from ``partials[fold]``: fitted without its own fold.

    A fold whose partial is None (no other rows to fit on) keeps the full transform's encodings.
    """
    out_of_fold = {column: np.array(features[column], dtype="float64") for column in _ENCODED_COLUMNS}
    for fold, partial in enumerate(partials):
        held_out = folds == fold
        if partial is None or not held_out.any():
            continue
        encoded = partial._encode(ListingKeys({name: key[held_out] for name, key in keys.items()}))
        for column, values in encoded.items():
            out_of_fold[column][held_out] = values
    features = dict(features)
    features.update(out_of_fold)
    _add_estimates(features)
    return features

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rayestate.schema import STATES, STATUSES

FEATURE_VERSION = 3
#: Day the dataset was scraped; sale-history ages are measured from it.
REFERENCE_DATE = pd.Timestamp("2024-01-01")
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


def log_price(price) -> np.ndarray:
    """The training target: natural log of the price in dollars."""
    return np.log(np.asarray(price, dtype="float64"))


def _integer_text(values: pd.Series, template: str, lower: float, upper: float) -> pd.Series:
    """Numbers in [lower, upper) as text (template.format(int)); anything else None.

    A list comprehension over the valid values: Series.map with a lambda costs ~1 µs per row in
    pandas' per-element NA checks, which showed up in serving latency."""
    numeric = _float_array(values)
    with np.errstate(invalid="ignore"):
        valid = (numeric >= lower) & (numeric < upper)
    text = np.full(len(numeric), None, dtype=object)
    text[valid] = [template.format(int(v)) for v in numeric[valid].tolist()]
    return pd.Series(text, index=values.index, dtype="object")


def _zip5(zip_code: pd.Series) -> pd.Series:
    """ZIP as 5-digit text; the dataset stores it as a float (601.0 is 00601)."""
    return _integer_text(zip_code, "{:05d}", 0, 100_000)


def _city_key(df: pd.DataFrame) -> pd.Series:
    """The key "state|city" where both are known, else None (pandas' string ops cost more)."""
    keys = [
        f"{state}|{city}" if isinstance(state, str) and isinstance(city, str) else None
        for state, city in zip(df["state"].tolist(), df["city"].tolist(), strict=True)
    ]
    return pd.Series(keys, index=df.index, dtype="object")


def _keys(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The grouping keys each target encoding is computed over."""
    zip5 = _zip5(df["zip_code"])
    return {
        "state": df["state"].astype("object"),
        "zip3": pd.Series([z[:3] if z is not None else None for z in zip5.tolist()], index=df.index, dtype="object"),
        "zip": zip5,
        "city": _city_key(df),
        "broker": _integer_text(df["brokered_by"], "{:d}", -np.inf, np.inf),
    }


class ListingKeys:
    """A batch's grouping keys, each factorized once and looked up once per table.

    Applying the transform reads 13 encodings over 5 keys, and the response warnings check 2
    of those keys again. Each key is factorized once, and each :class:`KeyTable` (every
    encoding over that key) is looked up once: one hash lookup per distinct value, in C.
    """

    def __init__(self, keys: dict[str, pd.Series]):
        self._factorized = {name: pd.factorize(key, use_na_sentinel=True) for name, key in keys.items()}
        self._rows: dict[tuple[str, KeyTable], np.ndarray] = {}  # (key, table) -> values per row

    @classmethod
    def of(cls, df: pd.DataFrame) -> ListingKeys:
        return cls(_keys(df))

    def values(self, name: str, table: KeyTable) -> np.ndarray:
        """The table's values per row (rows x encodings); NaN where the key is missing or unseen."""
        rows = self._rows.get((name, table))
        if rows is None:
            codes, uniques = self._factorized[name]
            # Code -1 (missing key) picks the appended position -1, the table's all-NaN row.
            per_key = table.values_at(np.append(table.positions(uniques), -1))
            rows = self._rows[name, table] = per_key[codes]
        return rows


class KeyTable:
    """Every fitted encoding over one grouping key: one hashed pandas Index and a value matrix.

    Column j holds encoding j's value per key (NaN where that encoding has no such key); one
    extra all-NaN row at the end answers ``get_indexer``'s -1 ("not found") with no special case.
    A Python dict lookup per distinct key cost ~4 ms per 1,000 real listings; one
    ``Index.get_indexer`` per key, not per encoding, does it in C.
    """

    def __init__(self, mappings: dict[str, dict[str, float]]):
        self.columns = {name: j for j, name in enumerate(mappings)}
        self._index = pd.Index(
            list(dict.fromkeys(key for mapping in mappings.values() for key in mapping)), dtype="object"
        )
        self._values = np.full((len(self._index) + 1, len(mappings)), np.nan)
        for j, mapping in enumerate(mappings.values()):
            self._values[self._index.get_indexer(list(mapping)), j] = np.fromiter(
                mapping.values(), "float64", len(mapping)
            )

    def positions(self, keys) -> np.ndarray:
        return self._index.get_indexer(keys)

    def values_at(self, positions: np.ndarray) -> np.ndarray:
        return self._values[positions]


def _positive_log(values: pd.Series) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    return np.log(numeric.where(numeric > 0)).to_numpy()


def _targets(df: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
    """What each encoding averages: log price, log $/sq ft, log $/acre (NaN where size is unknown)."""
    return {"price": y, "ppsf": y - _positive_log(df["house_size"]), "ppa": y - _positive_log(df["acre_lot"])}


@dataclass(frozen=True)
class _Encoding:
    key: str  # grouping key from _keys()
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
        y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
        return cls._fitted(_keys(df), _targets(df, y))

    @classmethod
    def _fitted(cls, keys: dict[str, pd.Series], targets: dict[str, np.ndarray]) -> FeatureTransform:
        means = {name: _nanmean(values) for name, values in targets.items()}
        return cls(global_mean=means["price"], encodings=_fit_encodings(keys, targets, means), target_means=means)

    @classmethod
    def fit_transform(
        cls, df: pd.DataFrame, target: np.ndarray | None = None, *, seed: int = 0
    ) -> tuple[FeatureTransform, pd.DataFrame]:
        """Fit on all rows, and return training features with out-of-fold encodings."""
        y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
        keys, targets = _keys(df), _targets(df, y)
        fitted = cls._fitted(keys, targets)
        features = fitted.transform(df)
        folds = np.random.default_rng(seed).integers(0, OOF_FOLDS, len(df))
        out_of_fold = {column: features[column].to_numpy(copy=True) for column in _ENCODED_COLUMNS}
        for fold in range(OOF_FOLDS):
            held_out = folds == fold
            if not held_out.any() or held_out.all():
                continue
            partial = cls._fitted(
                {name: key[~held_out] for name, key in keys.items()},
                {name: values[~held_out] for name, values in targets.items()},
            )
            encoded = partial._encode(ListingKeys({name: key[held_out] for name, key in keys.items()}))
            for column, values in encoded.items():
                out_of_fold[column][held_out] = values
        for column, values in out_of_fold.items():
            features[column] = values
        _add_estimates(features)
        return fitted, features

    # --- applying --------------------------------------------------------------
    def transform(self, df: pd.DataFrame, keys: ListingKeys | None = None) -> pd.DataFrame:
        """Model features for raw listing rows (price, if present, is ignored).

        ``keys`` (``ListingKeys.of(df)``) can be passed in when the caller also needs
        :meth:`known` for the same rows. Columns are computed as arrays and the frame is built
        once: inserting ~20 columns one by one into a DataFrame cost ~10 ms per call.
        """
        columns: dict[str, object] = {c: _float_array(df[c]) for c in NUMERIC_FEATURES}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            beds = np.where(columns["bed"] > 0, columns["bed"], np.nan)
            columns["sqft_per_bed"] = columns["house_size"] / beds
            columns["bath_per_bed"] = columns["bath"] / beds
        sold = pd.to_datetime(df["prev_sold_date"], errors="coerce", format="%Y-%m-%d")
        columns["prev_sold_year"] = sold.dt.year.to_numpy(dtype="float64", na_value=np.nan)
        columns["years_since_sold"] = (REFERENCE_DATE - sold).dt.days.to_numpy(
            dtype="float64", na_value=np.nan
        ) / 365.25
        columns["state"] = pd.Categorical(df["state"], dtype=self._category("state", self.states))
        columns["status"] = pd.Categorical(df["status"], dtype=self._category("status", self.statuses))
        columns["zip_number"] = _float_array(df["zip_code"])
        columns.update(self._encode(keys if keys is not None else ListingKeys.of(df)))
        _add_estimates(columns)
        # Ratios and products of valid inputs can overflow (a bed count of 1e-308 is >= 0); XGBoost
        # refuses inf, and an overflowed feature carries no information, so it becomes missing.
        for name, values in columns.items():
            if isinstance(values, np.ndarray):
                columns[name] = np.where(np.isfinite(values), values, np.nan)
        return pd.DataFrame({name: columns[name] for name in FEATURES}, index=df.index)

    def _encode(self, keys: ListingKeys) -> dict[str, np.ndarray]:
        encoded: dict[str, np.ndarray] = {}
        for name, spec in _ENCODINGS.items():
            values = self._encoded(keys, name)
            top_level = self.target_means.get(spec.target, self.global_mean)
            fallback = encoded[spec.parent] if spec.parent else top_level
            encoded[name] = np.where(np.isnan(values), fallback, values)
        return {column: encoded[name] for column, name in _ENCODED_COLUMNS.items()}

    def known(self, df: pd.DataFrame, keys: ListingKeys | None = None) -> pd.DataFrame:
        """Per row, whether state / zip / city were seen in training (for response warnings)."""
        keys = keys if keys is not None else ListingKeys.of(df)
        return pd.DataFrame(
            {
                "state": df["state"].isin(self.states).to_numpy(),
                # Fitted encodings are finite, so NaN means "no such key in training".
                "zip": ~np.isnan(self._encoded(keys, "zip")),
                "city": ~np.isnan(self._encoded(keys, "city")),
            },
            index=df.index,
        )

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


def _float_array(values: pd.Series) -> np.ndarray:
    """A column as float64 (anything not a number becomes NaN)."""
    if pd.api.types.is_float_dtype(values.dtype):  # already numbers: skip to_numeric's parsing pass
        return values.to_numpy(dtype="float64", na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else 0.0


def _lookup(keys: pd.Series, table: dict[str, float]) -> np.ndarray:
    """table[key] per row, NaN when absent (fitting's parent priors)."""
    return ListingKeys({"key": keys}).values("key", KeyTable({"value": table}))[:, 0]


def _fit_encodings(
    keys: dict[str, pd.Series], targets: dict[str, np.ndarray], means: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Smoothed mean target per key, shrunk towards the parent key's encoding."""
    encodings: dict[str, dict[str, float]] = {}
    for name, spec in _ENCODINGS.items():
        frame = pd.DataFrame({"key": keys[spec.key].to_numpy(), "y": targets[spec.target]})
        if spec.parent:
            parent = _ENCODINGS[spec.parent]
            frame["prior"] = _lookup(keys[parent.key], encodings[spec.parent])
        frame = frame[frame["key"].notna() & np.isfinite(frame["y"])]
        stats = frame.groupby("key")["y"].agg(["sum", "count"])
        prior = means[spec.target]
        if spec.parent:
            # The prior of each key is its parent's encoding (e.g. a zip's prior is its zip3's).
            prior = frame.groupby("key")["prior"].first().reindex(stats.index).fillna(prior)
        smoothed = (stats["sum"] + SMOOTHING * prior) / (stats["count"] + SMOOTHING)
        encodings[name] = dict(zip(smoothed.index.astype(str), smoothed.astype("float64").tolist(), strict=True))
    return encodings

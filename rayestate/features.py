"""The feature transform shared by training and serving.

A fitted :class:`FeatureTransform` turns raw listing rows into the model's feature frame:
numeric features, engineered ratios, sale-history features, native categoricals (state,
status) for XGBoost, and smoothed target encodings of location (zip, zip prefix, city,
broker). Location is most of a home's price, and zip/city have tens of thousands of
levels, so they are encoded as the smoothed mean log price of their area, backing off
zip -> zip prefix -> state -> global for rare or unseen areas.

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

FEATURE_VERSION = 1
#: Day the dataset was scraped; sale-history ages are measured from it.
REFERENCE_DATE = pd.Timestamp("2024-01-01")
SMOOTHING = 20.0
OOF_FOLDS = 5

NUMERIC_FEATURES = ("bed", "bath", "acre_lot", "house_size")
RATIO_FEATURES = ("sqft_per_bed", "bath_per_bed", "lot_sqft_per_house_sqft")
HISTORY_FEATURES = ("prev_sold_year", "years_since_sold")
CATEGORICAL_FEATURES = ("state", "status")
ENCODED_FEATURES = ("te_zip", "te_zip3", "te_city", "te_broker")
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
    "lot_sqft_per_house_sqft": "lot area / living area",
    "prev_sold_year": "year last sold",
    "years_since_sold": "years since last sale",
    "state": "state",
    "status": "listing status",
    "zip_number": "ZIP code (position)",
    "te_zip": "ZIP code price level",
    "te_zip3": "ZIP area (3-digit) price level",
    "te_city": "city price level",
    "te_broker": "broker price level",
}


def log_price(price) -> np.ndarray:
    """The training target: natural log of the price in dollars."""
    return np.log(np.asarray(price, dtype="float64"))


def _zip5(zip_code: pd.Series) -> pd.Series:
    """ZIP as 5-digit text; the dataset stores it as a float (601.0 is 00601)."""
    numeric = pd.to_numeric(zip_code, errors="coerce")
    text = numeric.map(lambda z: f"{int(z):05d}" if pd.notna(z) and 0 <= z < 100_000 else None)
    return text.astype("object")


def _keys(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The grouping keys each target encoding is computed over."""
    zip5 = _zip5(df["zip_code"])
    state = df["state"].astype("object")
    city = df["city"].astype("object")
    city_key = (state.fillna("") + "|" + city.fillna("")).where(city.notna() & state.notna())
    broker = pd.to_numeric(df["brokered_by"], errors="coerce")
    return {
        "state": state,
        "zip3": zip5.str[:3],
        "zip": zip5,
        "city": city_key,
        "broker": broker.map(lambda b: str(int(b)) if pd.notna(b) else None).astype("object"),
    }


# Each encoding backs off to its parent's encoding, so rare or unseen keys get a sane value.
_PARENT = {"state": None, "zip3": "state", "zip": "zip3", "city": "state", "broker": None}
_ORDER = ("state", "zip3", "zip", "city", "broker")


@dataclass
class FeatureTransform:
    """Fitted feature transform; JSON-serialisable, shared by jobs and serving."""

    global_mean: float = 0.0
    encodings: dict[str, dict[str, float]] = field(default_factory=dict)
    states: tuple[str, ...] = STATES
    statuses: tuple[str, ...] = STATUSES
    version: int = FEATURE_VERSION

    # --- fitting ---------------------------------------------------------------
    @classmethod
    def fit(cls, df: pd.DataFrame, target: np.ndarray | None = None) -> FeatureTransform:
        """Learn encodings from training rows (``target`` defaults to log of df.price)."""
        y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
        return cls(global_mean=float(np.mean(y)), encodings=_fit_encodings(_keys(df), y))

    @classmethod
    def fit_transform(
        cls, df: pd.DataFrame, target: np.ndarray | None = None, *, seed: int = 0
    ) -> tuple[FeatureTransform, pd.DataFrame]:
        """Fit on all rows, and return training features with out-of-fold encodings."""
        y = log_price(df["price"]) if target is None else np.asarray(target, dtype="float64")
        fitted = cls.fit(df, y)
        features = fitted.transform(df)
        keys = _keys(df)
        folds = np.random.default_rng(seed).integers(0, OOF_FOLDS, len(df))
        for fold in range(OOF_FOLDS):
            held_out = folds == fold
            if not held_out.any() or held_out.all():
                continue
            in_fold = {name: key[~held_out] for name, key in keys.items()}
            partial = cls(global_mean=float(np.mean(y[~held_out])), encodings=_fit_encodings(in_fold, y[~held_out]))
            encoded = partial._encode({name: key[held_out] for name, key in keys.items()})
            for column, values in encoded.items():
                features.loc[held_out, column] = values
        return fitted, features

    # --- applying --------------------------------------------------------------
    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Model features for raw listing rows (price, if present, is ignored)."""
        out = pd.DataFrame(index=df.index)
        for column in NUMERIC_FEATURES:
            out[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
        beds = out["bed"].where(out["bed"] > 0)
        out["sqft_per_bed"] = out["house_size"] / beds
        out["bath_per_bed"] = out["bath"] / beds
        out["lot_sqft_per_house_sqft"] = out["acre_lot"] * 43_560.0 / out["house_size"].where(out["house_size"] > 0)
        sold = pd.to_datetime(df["prev_sold_date"], errors="coerce", format="%Y-%m-%d")
        out["prev_sold_year"] = sold.dt.year.astype("float64")
        out["years_since_sold"] = (REFERENCE_DATE - sold).dt.days.astype("float64") / 365.25
        out["state"] = pd.Categorical(df["state"], categories=list(self.states))
        out["status"] = pd.Categorical(df["status"], categories=list(self.statuses))
        out["zip_number"] = pd.to_numeric(df["zip_code"], errors="coerce").astype("float64")
        for column, values in self._encode(_keys(df)).items():
            out[column] = values
        return out[list(FEATURES)]

    def _encode(self, keys: dict[str, pd.Series]) -> dict[str, np.ndarray]:
        encoded: dict[str, np.ndarray] = {}
        for name in _ORDER:
            table = self.encodings.get(name, {})
            parent = _PARENT[name]
            fallback = encoded[parent] if parent else np.full(len(keys[name]), self.global_mean)
            values = keys[name].map(table).to_numpy(dtype="float64", na_value=np.nan)
            encoded[name] = np.where(np.isnan(values), fallback, values)
        return {
            "te_zip": encoded["zip"],
            "te_zip3": encoded["zip3"],
            "te_city": encoded["city"],
            "te_broker": encoded["broker"],
        }

    def known(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per row, whether state / zip / city were seen in training (for response warnings)."""
        keys = _keys(df)
        return pd.DataFrame(
            {
                "state": df["state"].isin(self.states).to_numpy(),
                "zip": keys["zip"].isin(self.encodings.get("zip", {}).keys()).to_numpy(),
                "city": keys["city"].isin(self.encodings.get("city", {}).keys()).to_numpy(),
            },
            index=df.index,
        )

    # --- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "global_mean": self.global_mean,
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
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> FeatureTransform:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _fit_encodings(keys: dict[str, pd.Series], y: np.ndarray) -> dict[str, dict[str, float]]:
    """Smoothed mean target per key, shrunk towards the parent key's encoding."""
    frame = pd.DataFrame({name: key.to_numpy() for name, key in keys.items()})
    frame["y"] = y
    global_mean = float(np.mean(y))
    encodings: dict[str, dict[str, float]] = {}
    parent_values: dict[str, pd.Series] = {}
    for name in _ORDER:
        stats = frame.groupby(name, dropna=True)["y"].agg(["sum", "count"])
        parent = _PARENT[name]
        if parent is None:
            prior = pd.Series(global_mean, index=stats.index)
        else:
            # The prior of each key is its parent's encoding (e.g. a zip's prior is its zip3's).
            parent_of_key = frame.dropna(subset=[name]).groupby(name)[parent].first()
            prior = parent_of_key.map(encodings[parent]).fillna(global_mean).reindex(stats.index)
        smoothed = (stats["sum"] + SMOOTHING * prior) / (stats["count"] + SMOOTHING)
        encodings[name] = {str(k): float(v) for k, v in smoothed.items()}
        parent_values[name] = smoothed
    return encodings

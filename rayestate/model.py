"""The served model: an XGBoost booster on log price plus its fitted feature transform.

Training saves a :class:`PriceModel` as a directory (``booster.ubj``, ``transform.json``,
``meta.json``) inside the MLflow model; serving loads that same directory, so the booster
and the transform can never drift apart. Explanations use XGBoost's own exact TreeSHAP
(``pred_contribs``) on the served booster: no second explainer object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from rayestate.features import FEATURE_LABELS, FEATURES, FeatureTransform, ListingKeys
from rayestate.schema import RAW_COLUMNS

BOOSTER_FILE = "booster.ubj"
TRANSFORM_FILE = "transform.json"
META_FILE = "meta.json"


def listings_frame(rows: list[dict]) -> pd.DataFrame:
    """Raw-schema frame from listing dicts (missing optional columns become NaN/None)."""
    frame = pd.DataFrame.from_records(rows)
    for column in RAW_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(RAW_COLUMNS)]


@dataclass
class Explanation:
    """Exact SHAP values of one prediction, in log-price space."""

    log_price: float  # the model's output; base_value + sum(shap) equals it to float tolerance
    base_value: float
    shap: dict[str, float]
    feature_values: dict[str, object] = field(default_factory=dict)


@dataclass
class PriceModel:
    """Boosters (a bag of one or more, same config, different seeds) and their feature transform.

    The output is the mean of the boosters' log-price outputs. Averaging keeps TreeSHAP exact:
    the mean of each booster's SHAP values (bias included) adds up to the mean output.
    """

    boosters: list[xgb.Booster]
    transform: FeatureTransform
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.boosters, xgb.Booster):
            raise TypeError("PriceModel takes a list of boosters (a bag), not one booster")
        if not self.boosters:
            raise ValueError("a PriceModel needs at least one booster")

    def features(self, raw: pd.DataFrame, keys: ListingKeys | None = None) -> pd.DataFrame:
        return self.transform.transform(raw, keys)

    def _dmatrix(self, features: pd.DataFrame) -> xgb.DMatrix:
        return xgb.DMatrix(features, enable_categorical=True)

    def predict_log(self, raw: pd.DataFrame, keys: ListingKeys | None = None) -> np.ndarray:
        """Predicted log price per row (``keys``: the rows' ListingKeys, if the caller has them)."""
        return self._log_price(self.features(raw, keys))

    def _log_price(self, features: pd.DataFrame) -> np.ndarray:
        matrix = dense_matrix(features)
        outputs = [b.inplace_predict(matrix, validate_features=False) for b in self.boosters]
        return np.mean(outputs, axis=0, dtype="float64")

    def predict(self, raw: pd.DataFrame, keys: ListingKeys | None = None) -> np.ndarray:
        """Predicted price in dollars per row (exp of the log-price output)."""
        return np.exp(self.predict_log(raw, keys))

    def explain(self, raw: pd.DataFrame, keys: ListingKeys | None = None) -> list[Explanation]:
        """Exact TreeSHAP per row: base_value + sum(shap) == predicted log price.

        ``log_price`` is the model's own output on the same features (not the sum of the SHAP
        values), so callers can check additivity without computing the features again.
        """
        features = self.features(raw, keys)
        matrix = self._dmatrix(features)
        contribs = np.mean([b.predict(matrix, pred_contribs=True) for b in self.boosters], axis=0, dtype="float64")
        log_prices = self._log_price(features)
        explanations = []
        for i in range(len(features)):
            row = contribs[i]
            shap = {name: float(v) for name, v in zip(FEATURES, row[:-1], strict=True)}
            values = {
                name: (None if pd.isna(v) else (v if isinstance(v, str) else float(v)))
                for name, v in features.iloc[i].items()
            }
            explanations.append(
                Explanation(log_price=float(log_prices[i]), base_value=float(row[-1]), shap=shap, feature_values=values)
            )
        return explanations

    # --- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, booster in enumerate(self.boosters):
            booster.save_model(directory / booster_file(i))
        self.transform.save(directory / TRANSFORM_FILE)
        (directory / META_FILE).write_text(json.dumps(self.meta, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> PriceModel:
        directory = Path(directory)
        boosters = []
        while (directory / booster_file(len(boosters))).exists():
            booster = xgb.Booster()
            booster.load_model(directory / booster_file(len(boosters)))
            boosters.append(booster)
        if not boosters:
            raise FileNotFoundError(f"no {BOOSTER_FILE} in {directory}")
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return cls(boosters=boosters, transform=FeatureTransform.load(directory / TRANSFORM_FILE), meta=meta)


def dense_matrix(features: pd.DataFrame) -> np.ndarray:
    """The feature frame as one float matrix, each categorical as its code (NaN when missing).

    These are the codes the boosters were trained on: the transform fixes each category list.
    XGBoost reads such an array as it is, where a DataFrame is converted column by column on
    every call, for every booster of the bag (~2 ms per booster for 1,000 rows).
    """
    columns = []
    for name in features.columns:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            columns.append(np.where(codes >= 0, codes, np.nan))
        else:
            columns.append(column.to_numpy(dtype="float64", na_value=np.nan))
    return np.column_stack(columns)


def booster_file(index: int) -> str:
    """booster.ubj, then booster-1.ubj, booster-2.ubj... for the rest of a bag."""
    return BOOSTER_FILE if index == 0 else BOOSTER_FILE.replace(".ubj", f"-{index}.ubj")


__all__ = ["FEATURE_LABELS", "Explanation", "PriceModel", "listings_frame"]

"""The served model: an XGBoost booster on log price plus its fitted feature transform.

Training saves a :class:`PriceModel` as a directory (``booster.ubj``, ``transform.json``,
``meta.json``) inside the MLflow model; serving loads that same directory, so the booster
and the transform can never drift apart. Explanations use XGBoost's own exact TreeSHAP
(``pred_contribs``) on the served booster: no second explainer object.
"""

from __future__ import annotations

import functools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xgboost as xgb

from rayestate.comparables import ComparablesIndex
from rayestate.dense_predict import predict_each, prepare_one_row
from rayestate.features import (
    CATEGORICAL_FEATURES,
    FEATURE_LABELS,
    FEATURES,
    FeatureTransform,
    ListingKeys,
    listing_columns,
)
from rayestate.interval import PriceInterval, scale_inputs

#: How XGBoost types each feature (as training saw the frame): state and status are categorical.
FEATURE_TYPES = ["c" if name in CATEGORICAL_FEATURES else "float" for name in FEATURES]


def feature_dmatrix(matrix: np.ndarray) -> xgb.DMatrix:
    """A feature matrix (rows x FEATURES, as FeatureTransform.matrix gives it) as XGBoost's DMatrix,
    typed as training saw it: what TreeSHAP and the serving-cost measurement are given."""
    return xgb.DMatrix(matrix, feature_names=list(FEATURES), feature_types=FEATURE_TYPES, enable_categorical=True)


@functools.cache
def _shap_threads() -> ThreadPoolExecutor:
    """Threads for a bag's TreeSHAP, made on the first explanation of a bag (never at import)."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="treeshap")


def _tree_shap(boosters: list[xgb.Booster], dmatrix: xgb.DMatrix, *, concurrent: bool = True) -> list[np.ndarray]:
    """Each booster's exact TreeSHAP (``pred_contribs``) of the rows, in bag order.

    One row (a lone request) is explained by each booster of a bag on a thread of its own:
    XGBoost's C call releases the GIL, so on two cores one listing's explanation by a bag of two
    takes about half the time, for the same CPU (the real champion, one thread per booster: 20-21 ->
    9-12 ms). Each booster keeps its own thread count (one, as served), and the results come back in
    bag order: the mean has the same bits. Several rows stay one booster at a time on the calling
    thread. In serving they are a batch of concurrent requests (serve_app/batching.py), so the
    cores are busy with other batches already: two ingress replicas each splitting a batch over two
    threads made four TreeSHAP threads on two cores, and the machine was busy 1.92-1.94 cores
    against 1.97-1.98 one booster at a time (/explain at 16 connections, serve_app/README.md).
    Many rows (the pipeline's attributions) are split by XGBoost's own threads instead.
    ``concurrent=False`` explains one booster at a time whatever the rows (``PriceModel.prepare_for_serving``).
    """
    if not concurrent or len(boosters) == 1 or dmatrix.num_row() > 1:
        return [booster.predict(dmatrix, pred_contribs=True) for booster in boosters]
    return list(_shap_threads().map(lambda booster: booster.predict(dmatrix, pred_contribs=True), boosters))


BOOSTER_FILE = "booster.ubj"
TRANSFORM_FILE = "transform.json"
META_FILE = "meta.json"


@dataclass(frozen=True)
class Priced:
    """Prices in dollars with their range, and what the model knew of each listing's location."""

    price: np.ndarray
    low: np.ndarray
    high: np.ndarray
    known: dict[str, np.ndarray]


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
    #: The training listings shown as comparable homes (None for a model saved without them).
    comparables: ComparablesIndex | None = None
    #: The calibrated price range (None for a model saved without one).
    interval: PriceInterval | None = None
    #: Whether one row's explanation runs the bag's boosters on threads of their own (_tree_shap).
    bag_on_threads: bool = field(default=True, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.boosters, xgb.Booster):
            raise TypeError("PriceModel takes a list of boosters (a bag), not one booster")
        if not self.boosters:
            raise ValueError("a PriceModel needs at least one booster")

    def prepare_for_serving(self, threads: int, *, bag_on_threads: bool = True) -> PriceModel:
        """Ready every booster (the range's scale model too) for serving: ``threads`` XGBoost threads per
        call, and the one-row leaf sums built (``dense_predict.prepare_one_row``).

        ``bag_on_threads``: explain a lone listing with each booster of the bag on a thread of its
        own (half the wait on an idle box). A process that cannot see its load (a uvicorn worker
        computing on its event loop) may do better without at full load: benchmarks/serve_bench.py
        runs its baseline both ways.

        Done once where the model is loaded for serving: a per-call ``xgb.config_context`` costs
        ~0.07 ms of JSON config round trips, a tenth of pricing one listing, and a leaf sum built
        on the first one-listing request would make that request wait for it.
        """
        self.bag_on_threads = bag_on_threads
        boosters = self.boosters + ([self.interval.scale] if self.interval is not None else [])
        for booster in boosters:
            booster.set_param({"nthread": threads})
            prepare_one_row(booster)
        return self

    def predict_log(self, listings, keys: ListingKeys | None = None) -> np.ndarray:
        """Predicted log price per row of raw listings (a DataFrame, rows, or Columns).

        ``keys``: the rows' ListingKeys, if the caller has them (the response warnings share them).
        """
        return self.log_price_of(self.transform.matrix(listings, keys))

    def price_range(self, listings, keys: ListingKeys | None = None, *, coverage: float) -> Priced:
        """Prices with their range at ``coverage`` (NaN bounds for a model without a calibrated range)."""
        columns, keys, matrix = self._features(listings, keys)
        return self._priced(columns, keys, matrix, self.log_price_of(matrix), coverage)

    def _features(self, listings, keys: ListingKeys | None) -> tuple[dict, ListingKeys, np.ndarray]:
        columns = listing_columns(listings)
        keys = keys if keys is not None else ListingKeys.of(columns)
        return columns, keys, self.transform.matrix(columns, keys)

    def _priced(self, columns, keys: ListingKeys, matrix: np.ndarray, log_price: np.ndarray, coverage: float) -> Priced:
        known = self.transform.known(columns, keys)
        if self.interval is None:
            low = high = np.full(len(log_price), np.nan)
        else:
            inputs = scale_inputs(matrix, known["zip"], known["city"], log_price)
            half = self.interval.half_widths(inputs, known["zip"], coverage)
            low, high = np.exp(log_price - half), np.exp(log_price + half)
        return Priced(np.exp(log_price), low, high, known)

    def log_price_of(self, matrix: np.ndarray) -> np.ndarray:
        """The model's output (mean log price of the bag) for a feature matrix (FeatureTransform.matrix)."""
        # The boosters read the float matrix as it is (categories as their training codes); a
        # DataFrame would be converted column by column on every call, for every booster of the bag.
        outputs = predict_each(self.boosters, matrix)
        return np.mean(outputs, axis=0, dtype="float64")

    def predict(self, listings, keys: ListingKeys | None = None) -> np.ndarray:
        """Predicted price in dollars per row (exp of the log-price output)."""
        return np.exp(self.predict_log(listings, keys))

    def explain(self, listings, keys: ListingKeys | None = None) -> list[Explanation]:
        """Exact TreeSHAP per row: base_value + sum(shap) == predicted log price.

        ``log_price`` is the model's own output on the same features (not the sum of the SHAP
        values), so callers can check additivity without computing the features again.
        """
        matrix = self.transform.matrix(listings, keys)
        return self._explanations(matrix, self.log_price_of(matrix))

    def explain_priced(
        self, listings, keys: ListingKeys | None = None, *, coverage: float
    ) -> tuple[list[Explanation], Priced]:
        """:meth:`explain` and :meth:`price_range` of the same rows from one feature matrix and one prediction."""
        columns, keys, matrix = self._features(listings, keys)
        log_price = self.log_price_of(matrix)
        return self._explanations(matrix, log_price), self._priced(columns, keys, matrix, log_price, coverage)

    def _explanations(self, matrix: np.ndarray, log_prices: np.ndarray) -> list[Explanation]:
        features = {name: matrix[:, j] for j, name in enumerate(FEATURES)}
        contribs = np.mean(
            _tree_shap(self.boosters, feature_dmatrix(matrix), concurrent=self.bag_on_threads), axis=0, dtype="float64"
        )
        explanations = []
        for i in range(len(matrix)):
            row = contribs[i]
            shap = {name: float(v) for name, v in zip(FEATURES, row[:-1], strict=True)}
            explanations.append(
                Explanation(
                    log_price=float(log_prices[i]),
                    base_value=float(row[-1]),
                    shap=shap,
                    feature_values={name: self._shown(name, values[i]) for name, values in features.items()},
                )
            )
        return explanations

    def _shown(self, name: str, value: float):
        """A feature's value as people read it: the state or status by name, numbers as numbers."""
        if name in CATEGORICAL_FEATURES:
            return self.transform.category(name, value)
        return None if math.isnan(value) else float(value)

    # --- persistence -----------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, booster in enumerate(self.boosters):
            booster.save_model(directory / booster_file(i))
        self.transform.save(directory / TRANSFORM_FILE)
        (directory / META_FILE).write_text(json.dumps(self.meta, default=str))
        if self.comparables is not None:
            self.comparables.save(directory)
        if self.interval is not None:
            self.interval.save(directory)
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
        return cls(
            boosters=boosters,
            transform=FeatureTransform.load(directory / TRANSFORM_FILE),
            meta=meta,
            comparables=ComparablesIndex.load(directory),
            interval=PriceInterval.load(directory),
        )


def booster_file(index: int) -> str:
    """booster.ubj, then booster-1.ubj, booster-2.ubj... for the rest of a bag."""
    return BOOSTER_FILE if index == 0 else BOOSTER_FILE.replace(".ubj", f"-{index}.ubj")


__all__ = ["FEATURE_LABELS", "Explanation", "PriceModel", "feature_dmatrix"]

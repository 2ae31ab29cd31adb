"""The price range that comes with every price: normalized split conformal, one definition for all.

A small XGBoost "scale" model s(x) predicts how wrong the price model is likely to be for a home
(in log price): more for a listing without sizes, in a ZIP the model has rarely or never seen, or
at the expensive end. The range is ``price * exp(±q * s(x))``, where q is the conformal quantile
of the scores |log price - predicted log price| / s(x) on calibration rows the final model was
not fitted on (ray_jobs.calibrate). q is kept per coverage (0.50-0.99) and separately for listings
whose ZIP the model has seen and has not (Mondrian calibration: an unseen ZIP is less predictable
than s(x) alone says). On the real sample this keeps every large state and the rows missing a size
within a few points of the nominal coverage, with a median range 24% narrower than one constant width.

Training, the Serve replicas and the MLflow pyfunc all compute the range with this module; it is
stored with the model (``scale.ubj``, ``interval.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xgboost as xgb

from rayestate.dense_predict import predict_dense

SCALE_FILE = "scale.ubj"
INTERVAL_FILE = "interval.json"
#: The smallest scale (log units): a tiny predicted scale cannot blow a score up.
SCALE_FLOOR = 0.01
#: Coverages the calibration is kept for (the setting picks one).
COVERAGES = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
GROUPS = ("zip_seen", "zip_unseen")
#: What the scale model reads beyond the price model's features.
EXTRA_INPUTS = ("zip_known", "city_known", "predicted_log_price")


def scale_inputs(
    features: np.ndarray, zip_known: np.ndarray, city_known: np.ndarray, log_price: np.ndarray
) -> np.ndarray:
    """The scale model's input: the price model's feature matrix plus what the model knows and predicts."""
    return np.column_stack([features, zip_known.astype("float64"), city_known.astype("float64"), log_price])


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n+1)·coverage)-th smallest score (split conformal); inf when too few scores for it."""
    ordered = np.sort(scores)
    rank = math.ceil((len(ordered) + 1) * coverage)
    return float(ordered[rank - 1]) if rank <= len(ordered) else math.inf


@dataclass
class PriceInterval:
    """The scale model and, per ZIP group, the calibrated quantile for each coverage."""

    scale: xgb.Booster
    quantiles: dict[str, dict[str, float]]  # group -> {"0.80": q, ...}
    calibration_rows: dict[str, int] = field(default_factory=dict)

    def scales(self, inputs: np.ndarray) -> np.ndarray:
        """s(x) per row: how far off the price model is expected to be, in log price."""
        return np.maximum(np.exp(predict_dense(self.scale, inputs)), SCALE_FLOOR)

    def half_widths(self, inputs: np.ndarray, zip_known: np.ndarray, coverage: float) -> np.ndarray:
        """Per row, the half-width of the range in log price (q × s(x)); ``inputs`` from :func:`scale_inputs`."""
        key = f"{coverage:.2f}"
        if key not in self.quantiles[GROUPS[0]]:
            raise ValueError(f"coverage {coverage} is not calibrated; choose one of 0.50, 0.51, ..., 0.99")
        q = np.where(zip_known, self.quantiles["zip_seen"][key], self.quantiles["zip_unseen"][key])
        return q * self.scales(inputs)

    # --- persistence -----------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.scale.save_model(directory / SCALE_FILE)
        document = {"method": "normalized split conformal, Mondrian by ZIP seen in training",
                    "scale_floor": SCALE_FLOOR, "quantiles": self.quantiles,
                    "calibration_rows": self.calibration_rows}  # fmt: skip
        (directory / INTERVAL_FILE).write_text(json.dumps(document, allow_nan=True))

    @classmethod
    def load(cls, directory: Path) -> PriceInterval | None:
        directory = Path(directory)
        if not (directory / INTERVAL_FILE).is_file():
            return None
        scale = xgb.Booster()
        scale.load_model(directory / SCALE_FILE)
        document = json.loads((directory / INTERVAL_FILE).read_text())
        return cls(scale, document["quantiles"], document.get("calibration_rows", {}))

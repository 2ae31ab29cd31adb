"""Rows in, answers out: the computations behind /predict, /predict/batch and /explain.

Pure functions of a loaded :class:`PriceModel` and raw listing rows, so the deployments stay
thin and the logic is unit-tested without Ray.

The explanation contract. The booster predicts log price, so TreeSHAP is exact and additive
in log space: ``log_price == base_value + sum(shap)``. In dollars the same decomposition is
multiplicative: ``price == exp(base_value) * prod(exp(shap))``, so ``factor = exp(shap)`` is
each feature's exact effect as a price multiplier. ``dollars`` spreads the total dollar
difference ``price - exp(base_value)`` over the features in proportion to their SHAP values
(scale ``exp(base_value) * expm1(S) / S`` with ``S = sum(shap)``): the dollar effects keep each
SHAP value's sign and add up exactly to the price, which a naive ``exp(base + shap) - exp(base)``
per feature does not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xgboost as xgb

from rayestate.features import FEATURE_LABELS, ListingKeys
from rayestate.model import PriceModel, listings_frame
from rayestate.schema import RAW_COLUMNS

#: XGBoost threads per call. A replica is one core's worth of work: OpenMP threads in a busy
#: process spin against each other (10x slower on a loaded 2-core box); scale with replicas.
XGB_THREADS = 1


def row_warnings(model: PriceModel, raw: pd.DataFrame, keys: ListingKeys | None = None) -> list[list[str]]:
    """Per row, what the model could not use as given (unseen state, zip or city)."""
    known = model.transform.known(raw, keys)
    unseen_state = ~known["state"].to_numpy()
    unseen_zip = ~known["zip"].to_numpy() & raw["zip_code"].notna().to_numpy()
    unseen_city = ~known["city"].to_numpy() & raw["city"].notna().to_numpy()
    warnings: list[list[str]] = [[] for _ in range(len(raw))]
    states, zips, cities = raw["state"].tolist(), raw["zip_code"].tolist(), raw["city"].tolist()
    for i in np.flatnonzero(unseen_state | unseen_zip | unseen_city).tolist():
        state, zip_code, city = states[i], zips[i], cities[i]
        if unseen_state[i]:
            warnings[i].append(
                f"state {state!r} was not seen in training: the model treats it as unknown (no state effect)"
            )
        if unseen_zip[i]:
            warnings[i].append(
                f"zip code {int(float(zip_code)):05d} was not seen in training: its price level falls back to "
                "the 3-digit ZIP area, then the state average"
            )
        if unseen_city[i]:
            warnings[i].append(
                f"city {city!r} was not seen in training in {state}: its price level falls back to the state average"
            )
    return warnings


#: Listing fields that are text (zip_code too: a validated listing holds it as "02101").
TEXT_FIELDS = frozenset({"status", "city", "state", "zip_code", "prev_sold_date"})


def raw_frame(listings: list[dict] | dict[str, list]) -> pd.DataFrame:
    """Raw-schema frame from row dicts, or from columns (cheaper to ship for big batches).

    Text columns from columns stay Python objects: pandas would store them as Arrow strings,
    which the transform converts back at each use (~1 ms per 1,000 listings).
    """
    if isinstance(listings, dict):
        columns = {
            name: pd.Series(values, dtype="object") if name in TEXT_FIELDS else values
            for name, values in listings.items()
        }
        return pd.DataFrame(columns).reindex(columns=list(RAW_COLUMNS))
    return listings_frame(listings)


def predict_rows(model: PriceModel, listings: list[dict] | dict[str, list]) -> tuple[list[float], list[list[str]]]:
    """Prices in dollars and per-row warnings for raw listings (rows or columns)."""
    raw = raw_frame(listings)
    keys = ListingKeys.of(raw)  # the transform and the warnings share them
    with xgb.config_context(nthread=XGB_THREADS):
        prices = model.predict(raw, keys)
    return prices.tolist(), row_warnings(model, raw, keys)


def dollar_effects(base_value: float, shap: dict[str, float]) -> list[dict]:
    """Per-feature dollar effects that add up exactly to price - exp(base_value) (see module doc)."""
    total = math.fsum(shap.values())
    scale = math.exp(base_value) * (math.expm1(total) / total if abs(total) > 1e-12 else 1.0)
    return [
        {"feature": name, "label": FEATURE_LABELS.get(name, name), "dollars": value * scale, "factor": math.exp(value)}
        for name, value in shap.items()
    ]


def _json_value(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def explain_rows(model: PriceModel, rows: list[dict]) -> list[dict]:
    """Exact TreeSHAP per row (pred_contribs on the served booster), in log-price space and in dollars."""
    raw = listings_frame(rows)
    keys = ListingKeys.of(raw)
    with xgb.config_context(nthread=XGB_THREADS):
        explanations = model.explain(raw, keys)  # log_price: the model's own output, not base + sum(shap)
    warnings = row_warnings(model, raw, keys)
    results = []
    for explanation, row_warning in zip(explanations, warnings, strict=True):
        log_price = explanation.log_price
        contributions = sorted(
            (
                {
                    "feature": name,
                    "label": FEATURE_LABELS.get(name, name),
                    "value": _json_value(explanation.feature_values.get(name)),
                    "shap": shap,
                }
                for name, shap in explanation.shap.items()
            ),
            key=lambda c: -abs(c["shap"]),
        )
        effects = dollar_effects(explanation.base_value, explanation.shap)
        results.append(
            {
                "price": float(np.exp(log_price)),
                "log_price": float(log_price),
                "base_value": explanation.base_value,
                "base_price": math.exp(explanation.base_value),
                "output_space": "log_price",
                "contributions": contributions,
                "dollar_effects": sorted(effects, key=lambda e: -abs(e["dollars"])),
                "warnings": row_warning,
            }
        )
    return results

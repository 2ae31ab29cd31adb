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
import xgboost as xgb

from rayestate.features import (
    FEATURE_GROUPS,
    FEATURE_LABELS,
    GROUPS,
    INPUT_GROUPS,
    Columns,
    ListingKeys,
    group_label,
    listing_columns,
)
from rayestate.model import PriceModel
from rayestate.schema import SIZE_FIELDS

#: XGBoost threads per call. A replica is one core's worth of work: OpenMP threads in a busy
#: process spin against each other (10x slower on a loaded 2-core box); scale with replicas.
XGB_THREADS = 1
#: The price range's coverage when the caller does not say (Settings.interval_coverage).
DEFAULT_COVERAGE = 0.8


#: Per size field, what a listing without it is told.
MISSING_FIELD_WARNINGS = {
    field: f"{field} missing: the model prices without it; expect a wider error" for field in SIZE_FIELDS
}


def row_warnings(
    model: PriceModel, columns: Columns, keys: ListingKeys | None = None, known: dict[str, np.ndarray] | None = None
) -> list[list[str]]:
    """Per row, what the model could not use as given (a size left out, an unseen state, zip or city).

    ``known``: FeatureTransform.known for these rows, if the caller has it.
    """
    warnings: list[list[str]] = [[] for _ in range(len(columns["state"]))]
    for field, text in MISSING_FIELD_WARNINGS.items():
        for i in np.flatnonzero(np.isnan(columns[field])).tolist():
            warnings[i].append(text)
    known = known if known is not None else model.transform.known(columns, keys)
    unseen_state = ~known["state"]
    unseen_zip = ~known["zip"] & ~np.isnan(columns["zip_code"])
    unseen_city = ~known["city"] & (columns["city"] != None)  # noqa: E711 (elementwise on an object array)
    states, zips, cities = columns["state"], columns["zip_code"], columns["city"]
    for i in np.flatnonzero(unseen_state | unseen_zip | unseen_city).tolist():
        state, zip_code, city = states[i], zips[i], cities[i]
        if unseen_state[i]:
            warnings[i].append(
                f"state {state!r} was not seen in training: the model treats it as unknown (no state effect)"
            )
        if unseen_zip[i]:
            warnings[i].append(
                f"zip code {int(zip_code):05d} was not seen in training: its price level falls back to "
                "the 3-digit ZIP area, then the state average"
            )
        if unseen_city[i]:
            warnings[i].append(
                f"city {city!r} was not seen in training in {state}: its price level falls back to the state average"
            )
    return warnings


def _bounds(values) -> list[float | None]:
    """Range bounds for JSON: None where the model has no calibrated range."""
    return [None if math.isnan(v) else v for v in values.tolist()]


def predict_rows(model: PriceModel, listings, *, coverage: float = DEFAULT_COVERAGE) -> dict[str, list]:
    """Prices in dollars, their range at ``coverage`` and per-row warnings for raw listings.

    ``listings``: row dicts, or columns of values. Answers ``{"prices", "price_low", "price_high",
    "warnings"}``, one entry per row. No pandas on this path: one listing costs well under a
    millisecond, where a DataFrame's per-call overhead alone cost ~5 ms; a big batch takes the
    same code (one definition). XGBoost uses the boosters' own thread count: whoever loads the
    model for serving sets it once (``PriceModel.prepare_for_serving(XGB_THREADS)``).
    """
    columns = listing_columns(listings)
    keys = ListingKeys.of(columns)  # the transform and the warnings share them
    priced = model.price_range(columns, keys, coverage=coverage)
    return {
        "prices": priced.price.tolist(),
        "price_low": _bounds(priced.low),
        "price_high": _bounds(priced.high),
        "warnings": row_warnings(model, columns, keys, priced.known),
    }


def dollar_scale(base_value: float, shap: dict[str, float]) -> float:
    """Dollars per unit of SHAP value: shares of price - exp(base_value) proportional to each value (module doc)."""
    total = math.fsum(shap.values())
    return math.exp(base_value) * (math.expm1(total) / total if abs(total) > 1e-12 else 1.0)


def dollar_effects(base_value: float, shap: dict[str, float]) -> list[dict]:
    """Per-feature dollar effects that add up exactly to price - exp(base_value) (see module doc)."""
    scale = dollar_scale(base_value, shap)
    return [
        {"feature": name, "label": FEATURE_LABELS.get(name, name), "dollars": value * scale, "factor": math.exp(value)}
        for name, value in shap.items()
    ]


def group_effects(base_value: float, shap: dict[str, float], listing: dict) -> list[dict]:
    """The explanation in the listing's own fields: per input group, the sum of its features' SHAP values.

    Exact like the features' (base_value + sum of group SHAP values == log_price), each with its
    multiplicative effect, its share of the dollar difference (the dollar_effects rule) and the
    values the user gave for its inputs ("missing" where left out). A feature read from two groups
    is a pair group of its own (rayestate.features.feature_group).
    """
    totals = dict.fromkeys(GROUPS, 0.0)
    for name, value in shap.items():
        totals[FEATURE_GROUPS[name]] += value
    scale = dollar_scale(base_value, shap)
    groups = []
    for group, value in totals.items():
        fields = [field for part in group.split("*") for field in INPUT_GROUPS[part]]
        inputs = {field: _shown_input(field, listing.get(field)) for field in fields}
        groups.append(
            {"group": group, "label": group_label(group), "shap": value, "effect_pct": 100 * math.expm1(value),
             "dollars": value * scale, "inputs": inputs}
        )  # fmt: skip
    return sorted(groups, key=lambda g: -abs(g["shap"]))


def _shown_input(field: str, value) -> str | float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if field == "zip_code":
        return f"{int(float(value)):05d}"  # the dataset stores ZIPs as floats (601.0 is 00601)
    return value


def _json_value(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def explain_rows(
    model: PriceModel, rows: list[dict], *, comparables: int = 5, coverage: float = DEFAULT_COVERAGE
) -> list[dict]:
    """Exact TreeSHAP per row (pred_contribs on the served booster), in log-price space and in dollars,
    with the listing's ``comparables`` most similar training homes."""
    columns = listing_columns(rows)
    keys = ListingKeys.of(columns)
    with xgb.config_context(nthread=XGB_THREADS):
        # log_price: the model's own output, not base + sum(shap); one feature matrix for both.
        explanations, priced = model.explain_priced(columns, keys, coverage=coverage)
    warnings = row_warnings(model, columns, keys, priced.known)
    lows, highs = _bounds(priced.low), _bounds(priced.high)
    results = []
    for i, (row, explanation, row_warning) in enumerate(zip(rows, explanations, warnings, strict=True)):
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
                "price_low": lows[i],
                "price_high": highs[i],
                "log_price": float(log_price),
                "base_value": explanation.base_value,
                "base_price": math.exp(explanation.base_value),
                "output_space": "log_price",
                "contributions": contributions,
                "dollar_effects": sorted(effects, key=lambda e: -abs(e["dollars"])),
                "groups": group_effects(explanation.base_value, explanation.shap, row),
                "comparables": model.comparables.lookup(columns, i, k=comparables) if model.comparables else [],
                "warnings": row_warning,
            }
        )
    return results

"""Listings as the UI handles them: form values in, CSV rows in, priced tables out (pure).

Validation stays in one place, the API (``rayestate.schema.Listing``): the UI only shapes values
(numbers as numbers, blanks left out) and reports the API's per-row verdicts back on the rows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from datetime import date

import pandas as pd

from rayestate.schema import Listing
from ui.client import describe_detail

FIELDS: tuple[str, ...] = tuple(Listing.model_fields)
REQUIRED: tuple[str, ...] = tuple(n for n, f in Listing.model_fields.items() if f.is_required())
NUMERIC = ("bed", "bath", "acre_lot", "house_size", "brokered_by", "street", "zip_code")
SQFT_PER_ACRE = 43_560.0

DEFAULT_LISTING = {
    "bed": 3.0,
    "bath": 2.0,
    "acre_lot": 0.25,
    "house_size": 1800.0,
    "state": "Florida",
    "status": "for_sale",
}


def _blank(value) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def listing_from_inputs(values: Mapping) -> dict:
    """The JSON body for /predict from form values: blanks dropped, dates as YYYY-MM-DD."""
    listing = {}
    for name in FIELDS:
        value = values.get(name)
        if _blank(value):
            continue
        if isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, str):
            value = value.strip()
        listing[name] = value
    return listing


def price_ratios(listing: Mapping, price: float) -> dict[str, float | None]:
    """Quick comparables: dollars per sq ft of living area, per bedroom and per acre of lot."""

    def per(amount):
        return price / amount if isinstance(amount, int | float) and amount > 0 else None

    return {
        "per sq ft": per(listing.get("house_size")),
        "per bedroom": per(listing.get("bed")),
        "per acre of lot": per(listing.get("acre_lot")),
    }


# --- CSV batches ---------------------------------------------------------------------------------


def read_csv(data: bytes) -> pd.DataFrame:
    """A CSV upload as text cells (nothing is reinterpreted: zip 01001 stays '01001')."""
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, skipinitialspace=True)


def missing_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in REQUIRED if c not in frame.columns]


def _cell(name: str, text: str):
    """A CSV cell as the API wants it: numbers as numbers when they parse, anything else verbatim."""
    if name in NUMERIC:
        try:
            return float(text)
        except ValueError:
            return text  # the API names the field and the problem
    return text


def listings_from_frame(frame: pd.DataFrame) -> list[dict]:
    """One API listing per row: only the listing's columns, blank cells left out."""
    columns = [c for c in FIELDS if c in frame.columns]
    rows = []
    for record in frame[columns].to_dict("records"):
        rows.append({k: _cell(k, str(v).strip()) for k, v in record.items() if not _blank(v)})
    return rows


def price_in_chunks(
    predict_batch: Callable[[list[dict]], dict],
    listings: list[dict],
    chunk: int,
    progress: Callable[[float], None] = lambda _: None,
) -> dict:
    """/predict/batch over `listings` in requests of at most `chunk`; indices refer to `listings`."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    prices: list[float | None] = []
    lows: list[float | None] = []
    highs: list[float | None] = []
    errors, warnings, versions = [], [], set()
    for offset in range(0, len(listings), chunk):
        answer = predict_batch(listings[offset : offset + chunk])
        prices.extend(answer["prices"])
        lows.extend(answer.get("price_low") or [None] * len(answer["prices"]))
        highs.extend(answer.get("price_high") or [None] * len(answer["prices"]))
        errors.extend({**e, "index": e["index"] + offset} for e in answer.get("errors", []))
        warnings.extend({**w, "index": w["index"] + offset} for w in answer.get("warnings", []))
        if answer.get("model_version"):
            versions.add(str(answer["model_version"]))
        progress(min(1.0, (offset + chunk) / len(listings)))
    return {"prices": prices, "price_low": lows, "price_high": highs, "errors": errors, "warnings": warnings,
            "model_versions": sorted(versions)}  # fmt: skip


def priced_frame(frame: pd.DataFrame, result: Mapping) -> pd.DataFrame:
    """The uploaded rows plus predicted_price, its range (price_low, price_high), error and warnings
    (and the gap to a listed price)."""
    out = frame.copy()
    for column, values in (("predicted_price", "prices"), ("price_low", "price_low"), ("price_high", "price_high")):
        out[column] = pd.Series(result.get(values) or [None] * len(out), index=out.index, dtype="float64").round(0)
    errors = {e["index"]: describe_detail(e.get("detail")) for e in result.get("errors", [])}
    warnings = {w["index"]: " | ".join(w.get("warnings", [])) for w in result.get("warnings", [])}
    out["error"] = [errors.get(i, "") for i in range(len(out))]
    out["warnings"] = [warnings.get(i, "") for i in range(len(out))]
    if "price" in out.columns:
        listed = pd.to_numeric(out["price"], errors="coerce")
        out["predicted_vs_listed"] = (out["predicted_price"] / listed.where(listed > 0) - 1).round(4)
    return out


# --- comparisons ---------------------------------------------------------------------------------

#: What the Compare page can vary, and the unit shown in each variant's label.
DIMENSIONS = {"state": "", "house_size": " sq ft", "bed": " bedrooms", "bath": " bathrooms"}


def variants(listing: Mapping, dimension: str, choices) -> list[tuple[str, dict]]:
    """The same listing once per choice of `dimension` (label, listing).

    Across states the city and ZIP are dropped: they belong to the original state, and the
    model would otherwise price a Tampa ZIP "in Ohio".
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"cannot vary {dimension!r}; choose one of {', '.join(DIMENSIONS)}")
    base = dict(listing)
    if dimension == "state":
        base = {k: v for k, v in base.items() if k not in ("city", "zip_code")}
    return [(f"{_shown(choice)}{DIMENSIONS[dimension]}", {**base, dimension: choice}) for choice in choices]


def _shown(choice) -> str:
    if isinstance(choice, str):
        return choice
    return f"{choice:,.0f}" if float(choice).is_integer() else f"{choice:,g}"


def parse_numbers(text: str) -> list[float]:
    """'1000, 1500 2000' -> [1000.0, 1500.0, 2000.0]; raises ValueError naming a bad item."""
    items = [t for t in text.replace(",", " ").split() if t]
    numbers = []
    for item in items:
        try:
            numbers.append(float(item))
        except ValueError:
            raise ValueError(f"{item!r} is not a number") from None
    return numbers

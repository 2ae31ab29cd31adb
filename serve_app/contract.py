"""Reading request bodies as the HTTP contract defines them, and the JSON shape of errors.

The answers are defined once in :mod:`rayestate.api` (the UI reads them too); the request
listing is :class:`rayestate.schema.Listing`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rayestate.schema import Listing

LISTINGS = TypeAdapter(list[Listing])


BATCH_LISTINGS_DESCRIPTION = "Listings to price (each one a Listing object); rows are validated one by one"


class BatchRequest(BaseModel):
    """A batch body before its listings are validated, each on its own (the row-by-row path)."""

    listings: list[dict[str, Any]] = Field(description=BATCH_LISTINGS_DESCRIPTION)


# The batch body as documented, and as the one-pass fast path accepts it: every listing valid.
# (A comment, not a docstring: pydantic would publish a docstring as the schema's description.)
class _ValidBatch(BaseModel):
    model_config = ConfigDict(title="BatchRequest")

    listings: list[Listing] = Field(description=BATCH_LISTINGS_DESCRIPTION)


def _openapi_body(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # Listing is a component already (the /predict body)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


#: /predict/batch reads its body itself (see valid_batch), so its OpenAPI body is declared here.
BATCH_OPENAPI = _openapi_body(_ValidBatch)


def field_errors(exc: ValidationError | Any, *, drop_prefix: int = 0) -> list[dict]:
    """Pydantic errors as JSON-safe dicts; the offending input is left out (it may be NaN or huge)."""
    errors = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))[drop_prefix:]
        errors.append({"loc": loc, "msg": str(error.get("msg", "invalid value")), "type": str(error.get("type"))})
    return errors


def _is_json(content_type: str | None) -> bool:
    """FastAPI's (strict) rule: application/json or application/*+json; no content type is not JSON."""
    if not content_type:
        return False
    kind, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def valid_batch(body: bytes, content_type: str | None) -> list[Listing] | None:
    """The listings of a batch body in which every one is valid, else None.

    Parsed and validated in one pass by pydantic-core: 1,000 listings take ~2.7 ms, where
    ``json.loads``, the request model and validating each listing take ~5.5 ms. Any other
    body (a bad row, bad JSON) goes to :func:`batch_rows` and :func:`validate_listings`.
    """
    if not body or not _is_json(content_type):
        return None
    try:
        return _ValidBatch.model_validate_json(body).listings
    except ValidationError:
        return None


def batch_rows(body: bytes, content_type: str | None) -> list[Any]:
    """The raw listings of a batch body, parsed as FastAPI parses a JSON body, with its errors."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    data: Any = body
    if _is_json(content_type):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
            raise RequestValidationError([error]) from None
        except Exception:  # bad UTF-8, nesting past the recursion limit
            raise HTTPException(400, "There was an error parsing the body") from None
    try:
        return BatchRequest.model_validate(data, from_attributes=True).listings
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def validated_columns(listings: list[Listing]) -> dict[str, list]:
    """Validated listings as columns: one list per field (pickles far smaller than 1,000 dicts)."""
    return {name: [getattr(listing, name) for listing in listings] for name in Listing.model_fields}


def raw_columns(columns: dict[str, list]) -> dict[str, list]:
    """validated_columns() as raw-schema columns (zip as a float, like the dataset), for the log."""
    return {**columns, "zip_code": [None if z is None else float(z) for z in columns["zip_code"]]}


def validate_listings(rows: list[Any]) -> tuple[list[tuple[int, Listing]], list[dict]]:
    """Validate each row on its own: (index, listing) for good rows, {index, detail} for bad ones."""
    try:
        return list(enumerate(LISTINGS.validate_python(rows))), []
    except ValidationError as exc:
        bad: dict[int, list[dict]] = {}
        for error in field_errors(exc):
            index = error["loc"][0]
            bad.setdefault(index, []).append({**error, "loc": error["loc"][1:]})
    good = [(i, Listing.model_validate(row)) for i, row in enumerate(rows) if i not in bad]
    return good, [{"index": i, "detail": detail} for i, detail in sorted(bad.items())]

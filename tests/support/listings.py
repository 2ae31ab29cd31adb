"""Listings as the API receives them, with values the test models know.

The test champion is trained on the one synthetic market (rayestate.devstack.synthetic), whose
cities and zip codes are generated names like "Lake Cedarton", not real ones: a listing with a
real city such as Tampa is priced with an "unseen city" warning. Tests that expect no warning
take a location from :func:`known_location`.
"""

from __future__ import annotations

import json
from functools import cache

from rayestate.devstack.synthetic import generate_listings
from rayestate.schema import RAW_COLUMNS
from tests.support.models import sample_listings


@cache
def known_location(state: str, *, rows: int = 4000, seed: int = 1) -> dict[str, str]:
    """The commonest (city, zip) of ``state`` in ``sample_listings(rows, seed)``: the champion's market.

    Returned as API fields (``zip_code`` as five digits). The commonest pair has ten or more rows in
    the big states, so the model's training rows (all but the ~10% held out) include it.
    """
    frame = sample_listings(rows, seed=seed)
    here = frame[(frame["state"] == state) & frame["city"].notna() & frame["zip_code"].notna()]
    city, zip_code = here.groupby(["city", "zip_code"]).size().idxmax()
    return {"state": state, "city": city, "zip_code": f"{int(zip_code):05d}"}


def raw_rows(n: int, seed: int = 0, **changes) -> list[dict]:
    """``n`` raw-schema rows without a price: what the Serve app hands the model (and the inference log)."""
    frame = generate_listings(n, seed=seed).assign(**changes)
    rows = json.loads(frame[list(RAW_COLUMNS)].to_json(orient="records"))
    return [{**row, "price": None} for row in rows]


#: The header of a course data-API answer (group 1, Tuesday, batch 1).
API_HEADER = {"group_number": 1, "day": "Tuesday", "batch_number": 1}


def api_rows(n: int, *, seed: int = 1, columns=RAW_COLUMNS) -> list[dict]:
    """``n`` synthetic rows as the data API sends them (JSON objects, NaN as null)."""
    return json.loads(generate_listings(n, seed=seed)[list(columns)].to_json(orient="records"))


def api_body(rows: list[dict] | None = None, **header) -> bytes:
    """A data-API answer: API_HEADER (overridden by ``header``) plus ``data`` unless ``rows`` is None."""
    payload = {**API_HEADER, **header}
    if rows is not None:
        payload["data"] = rows
    return json.dumps(payload).encode()

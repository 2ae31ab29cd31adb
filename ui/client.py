"""A small typed client for the Ray Estate price API, used by every UI page.

Every failure becomes an :class:`ApiError` carrying a sentence a person can act on: the API's
own ``detail`` (field errors are turned into "bed: must be at most 50"), or, when nothing
answers, :class:`ApiUnavailable` naming the URL. Pages show ``str(error)``, never a traceback.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from rayestate.api import ModelReport

CONNECT_TIMEOUT_S = 5.0


class ApiError(Exception):
    """The API answered with an error (or with something that is not its JSON)."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


class ApiUnavailable(ApiError):
    """Nothing answered at the API URL (down, wrong URL, or too slow)."""


def _field_name(loc: list) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "request"


def describe_detail(detail: Any) -> str:
    """The API's ``detail`` as one readable line: a string as is, field errors as 'field: message'."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        items = []
        for error in detail:
            if isinstance(error, dict) and "msg" in error:
                items.append(f"{_field_name(error.get('loc') or [])}: {error['msg']}")
            else:
                items.append(str(error))
        return "; ".join(items) or "invalid request"
    return str(detail)


class ApiClient:
    """Calls the price API at ``base_url``; each method returns the decoded JSON body."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, json: Any = None, ok: tuple[int, ...] = ()) -> dict:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise ApiUnavailable(
                f"The price API at {self.base_url} did not answer {path} in time ({type(exc).__name__})."
            ) from None
        except httpx.HTTPError as exc:
            raise ApiUnavailable(
                f"The price API at {self.base_url} is not reachable ({type(exc).__name__}: {exc}). "
                "Is it running? `make up` starts it; RAYESTATE_API_URL sets where the UI looks for it."
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success or response.status_code in ok:
            if not isinstance(body, dict):
                raise ApiError(f"{path} answered with something that is not JSON", status=response.status_code)
            return body
        detail = body.get("detail") if isinstance(body, dict) else None
        reason = describe_detail(detail) if detail is not None else response.text[:200] or response.reason_phrase
        raise ApiError(
            f"{path} failed (HTTP {response.status_code}): {reason}", status=response.status_code, detail=detail
        )

    # --- endpoints -------------------------------------------------------------------
    def predict(self, listing: dict) -> dict:
        return self._call("POST", "/predict", json=listing)

    def predict_batch(self, listings: list[dict]) -> dict:
        return self._call("POST", "/predict/batch", json={"listings": listings})

    def explain(self, listing: dict) -> dict:
        return self._call("POST", "/explain", json=listing)

    def health(self) -> dict:
        return self._call("GET", "/health")

    def ready(self) -> dict:
        """Readiness body; 503 (no model loaded) is an answer here, not an error."""
        return self._call("GET", "/ready", ok=(503,))

    def model(self) -> ModelReport:
        """GET /model, read as the API defines it (rayestate.api.ModelReport)."""
        body = self._call("GET", "/model")
        try:
            return ModelReport.model_validate(body)
        except ValidationError as exc:
            raise ApiError(f"/model answered in a shape this UI does not know: {exc}".splitlines()[0]) from None

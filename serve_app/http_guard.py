"""ASGI middleware in front of the API: a request-body cap and per-request metrics.

The cap is enforced before FastAPI reads the body (Content-Length, and again while streaming
for chunked uploads), so an oversized upload is refused with 413 instead of being buffered.
The limit lives in this module, not on the app object: Serve runs a pickled copy of the
FastAPI app, and the ingress constructor sets the limit through :func:`set_max_body_bytes`.
"""

from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException

from serve_app.metrics import api_metrics

_LIMITS = {"max_body_bytes": 16 * 1024 * 1024}
ENDPOINTS = frozenset(
    {"/predict", "/predict/batch", "/explain", "/health", "/ready", "/model", "/reload", "/docs", "/openapi.json"}
)


def set_max_body_bytes(limit: int) -> None:
    _LIMITS["max_body_bytes"] = int(limit)


class _BodyTooLarge(HTTPException):
    """Raised while reading an oversized body: an HTTPException, so whoever reads the body
    (FastAPI, or an endpoint reading it itself) answers 413 instead of logging an error."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def endpoint_label(scope) -> str:
    """The route for metric labels; unknown paths collapse into one label (bounded cardinality)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path if path in ENDPOINTS else "other"


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ApiGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        endpoint = endpoint_label(scope)
        limit = _LIMITS["max_body_bytes"]
        response = {"status": 500, "started": False}
        too_large = {"detail": f"request body exceeds the limit of {limit} bytes"}

        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            api_metrics().reject(endpoint, "body_too_large")
            response["status"] = 413
            await _send_json(send, 413, too_large)
            self._observe(scope, endpoint, response["status"], started)
            return

        received = 0
        overflow = False

        async def limited_receive():
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            # FastAPI turns a failed body read into its own 400; answer with the real reason instead.
            if overflow:
                if message["type"] == "http.response.start" and not response["started"]:
                    response.update(status=413, started=True)
                    api_metrics().reject(endpoint, "body_too_large")
                    await _send_json(send, 413, too_large)
                return
            if message["type"] == "http.response.start":
                response.update(status=message["status"], started=True)
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response["started"]:
                await tracking_send({"type": "http.response.start", "status": 413})
        finally:
            self._observe(scope, endpoint, response["status"], started)

    @staticmethod
    def _observe(scope, endpoint: str, status: int, started: float) -> None:
        version = scope.get("state", {}).get("model_version", "none")
        api_metrics().observe(endpoint, status, version, (time.perf_counter() - started) * 1000.0)

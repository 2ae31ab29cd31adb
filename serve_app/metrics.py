"""Application metrics, exported through Ray's Prometheus endpoint next to Serve's own.

Created lazily inside replicas (Ray metrics need a connected worker), never at import time.
"""

from __future__ import annotations

from functools import cache

from ray.serve.metrics import Counter, Histogram

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class ApiMetrics:
    def __init__(self):
        self.requests = Counter(
            "rayestate_requests_total",
            description="HTTP requests by endpoint, status code and model version.",
            tag_keys=("endpoint", "status", "model_version"),
        )
        self.latency = Histogram(
            "rayestate_request_latency_ms",
            description="End-to-end latency inside the ingress replica, by endpoint and model version.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint", "model_version"),
        )
        self.rejected = Counter(
            "rayestate_rejected_inputs_total",
            description="Requests or batch rows rejected, by endpoint and reason.",
            tag_keys=("endpoint", "reason"),
        )

    def observe(self, endpoint: str, status: int, model_version: str, latency_ms: float) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "status": str(status), "model_version": model_version})
        self.latency.observe(latency_ms, tags={"endpoint": endpoint, "model_version": model_version})

    def reject(self, endpoint: str, reason: str, count: int = 1) -> None:
        self.rejected.inc(count, tags={"endpoint": endpoint, "reason": reason})


@cache
def api_metrics() -> ApiMetrics:
    return ApiMetrics()


@cache
def reload_counter() -> Counter:
    return Counter(
        "rayestate_model_reloads_total",
        description="Model swaps performed by model replicas (ingress, predictors), by new version "
        "(Serve adds the deployment and replica tags).",
        tag_keys=("model_version",),
    )


@cache
def batch_size_histogram() -> Histogram:
    return Histogram(
        "rayestate_batch_size",
        description="Listings per model call for single-listing requests, by computation "
        "(price_batch, explain_batch); Serve adds the deployment and replica tags.",
        boundaries=[1, 2, 4, 8, 16, 32],
        tag_keys=("computation",),
    )

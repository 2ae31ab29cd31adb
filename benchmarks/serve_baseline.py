"""The strongest single-box alternative to the Ray Serve app, doing the same work: the benchmarks' baseline.

A plain FastAPI app under uvicorn with one worker process per core, each holding the champion
(loaded once, by alias, from the same MLflow) and answering with the very code Serve runs: the
same request parsing and validation (serve_app.contract, rayestate.schema.Listing), the same
computations (serve_app.inference.predict_rows / explain_rows: features, prices, warnings, exact
TreeSHAP from the loaded boosters), the same response models (rayestate.api) and the same
inference log (rayestate.inference_log). What it lacks is what Serve adds: separate deployments,
batching across requests, autoscaling, hot model swaps, shedding. Run by the serving benchmarks:

    RAYESTATE_MLFLOW_TRACKING_URI=... RAYESTATE_MODEL_NAME=... RAYESTATE_STATE_DIR=... \\
        uvicorn serve_baseline:app --app-dir benchmarks --workers 2
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from mlflow.tracking import MlflowClient

from rayestate.api import BatchResponse, ExplainResponse, PredictResponse
from rayestate.inference_log import InferenceLogWriter
from rayestate.model_io import load_model_by_alias
from rayestate.schema import Listing
from rayestate.settings import load_settings
from serve_app.contract import batch_rows, raw_columns, valid_batch, validate_listings, validated_columns
from serve_app.inference import XGB_THREADS, explain_rows, predict_rows

settings = load_settings()
state: dict = {}
#: How a worker explains a bag (BASELINE_EXPLAIN_BAG): "threads", a booster per thread as Serve does
#: for a lone listing, or "sequential", one after another. A worker computes on its event loop and
#: cannot see requests waiting, so it cannot switch with load; serve_bench.py runs both and compares
#: with the faster.
EXPLAIN_BAG_MODES = ("threads", "sequential")


@asynccontextmanager
async def lifespan(_app: FastAPI):
    loaded = load_model_by_alias(
        MlflowClient(tracking_uri=settings.mlflow_tracking_uri), settings.model_name, settings.model_alias
    )
    bag_mode = os.environ.get("BASELINE_EXPLAIN_BAG", "threads")
    if bag_mode not in EXPLAIN_BAG_MODES:
        raise ValueError(f"BASELINE_EXPLAIN_BAG={bag_mode!r}: expected one of {EXPLAIN_BAG_MODES}")
    # as each Serve replica: one core's worth of work per process
    loaded.model.prepare_for_serving(XGB_THREADS, bag_on_threads=bag_mode == "threads")
    state["model"], state["version"] = loaded.model, loaded.version
    state["log"] = (
        InferenceLogWriter(settings, flush_s=settings.inference_log_flush_s) if settings.inference_log else None
    )
    yield
    if state["log"] is not None:
        await state["log"].close()


app = FastAPI(title="baseline: FastAPI + uvicorn, one worker per core, same work as the Serve app", lifespan=lifespan)


def _log(listings: list[dict] | dict, answer: dict, endpoint: str, started: float) -> None:
    if state["log"] is not None:
        latency = (time.perf_counter() - started) * 1000.0
        state["log"].add(
            listings, answer["prices"], lows=answer["price_low"], highs=answer["price_high"],
            model_version=state["version"], endpoint=endpoint, latency_ms=latency,
        )  # fmt: skip


@app.post("/predict", response_model=PredictResponse)
async def predict(listing: Listing, request: Request) -> PredictResponse:
    started, row = time.perf_counter(), listing.to_raw_row()
    answer = predict_rows(state["model"], [row], coverage=settings.interval_coverage)
    _log([row], answer, "/predict", started)
    return PredictResponse(
        price=answer["prices"][0], price_low=answer["price_low"][0], price_high=answer["price_high"][0],
        coverage=settings.interval_coverage, model_version=state["version"], model_alias=settings.model_alias,
        request_id=uuid.uuid4().hex, warnings=answer["warnings"][0],
    )  # fmt: skip


@app.post("/predict/batch", response_model=BatchResponse)
async def predict_batch(request: Request) -> Response:
    started = time.perf_counter()
    body, content_type = await request.body(), request.headers.get("content-type")
    listings = valid_batch(body, content_type)
    if listings is not None:
        count, good, errors = len(listings), list(enumerate(listings)), []
    else:
        rows = batch_rows(body, content_type)
        count, (good, errors) = len(rows), validate_listings(rows)
    if count > settings.max_batch_listings:
        raise HTTPException(413, f"{count} listings exceed the maximum of {settings.max_batch_listings} per request")
    prices: list[float | None] = [None] * count
    lows, highs = list(prices), list(prices)
    warnings = []
    if good:
        columns = validated_columns([listing for _, listing in good])
        result = predict_rows(state["model"], columns, coverage=settings.interval_coverage)
        _log(raw_columns(columns), result, "/predict/batch", started)
        for (index, _), price, low, high, found in zip(good, *result.values(), strict=True):
            prices[index], lows[index], highs[index] = price, low, high
            if found:
                warnings.append({"index": index, "warnings": found})
    answer = BatchResponse(
        prices=prices, price_low=lows, price_high=highs, coverage=settings.interval_coverage, errors=errors,
        warnings=warnings, model_version=state["version"] if good else None, model_alias=settings.model_alias,
        request_id=uuid.uuid4().hex,
    )  # fmt: skip
    return Response(answer.model_dump_json(), media_type="application/json")


@app.post("/explain", response_model=ExplainResponse)
async def explain(listing: Listing, request: Request) -> ExplainResponse:
    started, row = time.perf_counter(), listing.to_raw_row()
    (result,) = explain_rows(
        state["model"], [row], comparables=settings.comparables_k, coverage=settings.interval_coverage
    )
    _log([row], {"prices": [result["price"]], "price_low": [result["price_low"]], "price_high": [result["price_high"]]},
         "/explain", started)  # fmt: skip
    return ExplainResponse(
        **result, coverage=settings.interval_coverage, model_version=state["version"],
        model_alias=settings.model_alias, request_id=uuid.uuid4().hex,
    )  # fmt: skip


@app.get("/health")
async def health() -> dict:
    """As the Serve app's: no model, no second hop (serve_bench measures each system's floor with it)."""
    return {"status": "ok"}

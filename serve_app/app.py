"""The Ray Serve application: a FastAPI ingress composed with the predictors.

``serve_app.app:build_app`` is the application builder ``serve_config.yaml`` names (its
``args:`` become :class:`Settings` fields); ``serve_app.app:app`` is the same graph built
from the environment, for ``serve run serve_app.app:app`` during development.

The ingress validates, prices and explains single listings itself and routes batches: pydantic
checks each listing; /predict and /explain are answered in the ingress replica (a hop to another
replica costs Serve more CPU than a prediction, and a quarter of an explanation's); /predict/batch
is split into chunks: the ingress prices the last and the predictors the others, through a
DeploymentHandle, all at once. Every error is JSON with a ``detail`` and no stack trace.
"""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from rayestate.api import BatchResponse, ExplainResponse, ModelReport, PredictResponse
from rayestate.inference_log import InferenceLogWriter
from rayestate.schema import Listing
from rayestate.settings import Settings, load_settings
from serve_app.contract import (
    BATCH_OPENAPI,
    batch_rows,
    field_errors,
    raw_columns,
    valid_batch,
    validate_listings,
    validated_columns,
)
from serve_app.deployments import NO_MODEL, ListingReplica, ModelReplica, Predictor
from serve_app.http_guard import ApiGuard, endpoint_label, set_max_body_bytes
from serve_app.metrics import api_metrics
from serve_app.model_report import model_report, unavailable_report

MODEL_REPORT_TTL_S = 5.0
STATUS_TIMEOUT_S = 10.0
#: A model call that takes longer means no replica can take it (none loaded, all gone): say so.
MODEL_CALL_TIMEOUT_S = 60.0
#: How long an ingress replica without a model waits for a predictor to take a listing: ample
#: for a busy predictor, short enough that "no model anywhere" is a prompt 503.
HANDOFF_TIMEOUT_S = 10.0
#: Tries of a call whose replica died under it (the first one included).
REPLICA_LOST_ATTEMPTS = 3
DEFAULT_BATCH_CHUNK_ROWS = 500
#: What a predictor answers per row of a chunk (serve_app.inference.predict_rows).
BATCH_LISTS = ("prices", "price_low", "price_high", "warnings")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="Ray Estate price API",
    version="1.0",
    description=(
        "Predicts US home prices (realtor.com listings) and explains them with exact TreeSHAP values. "
        "SHAP values are in log-price space (base_value + sum(shap) = log_price); dollar_effects split "
        "price - exp(base_value) in proportion to them, so they add up exactly to the price."
    ),
)
api.add_middleware(ApiGuard)


@api.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = field_errors(exc)
    api_metrics().reject(endpoint_label(request.scope), errors[0]["type"] if errors else "invalid")
    return JSONResponse(status_code=422, content={"detail": errors})


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The stack trace goes to the replica log, never to the client.
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__})"})


async def _answer(call: Callable[[], Awaitable[dict]], deployment: str) -> dict:
    """Call a deployment: overload or "nobody answers" is a 503, a row the model failed on a 500.

    Pricing and explaining are idempotent, so a call whose replica died under it (a crash, a
    node lost) is sent again, and Serve routes it to a live or replacement replica. Serve's
    backpressure (the callee's queue is full) is turned into an HTTPException here: an app-level
    exception handler for BackPressureError never runs, Serve answers it first with a plain 503.
    """
    for attempt in range(1, REPLICA_LOST_ATTEMPTS + 1):
        try:
            result = await asyncio.wait_for(call(), MODEL_CALL_TIMEOUT_S)
            break
        except BackPressureError:
            raise HTTPException(503, f"the {deployment} is overloaded; retry shortly") from None
        except TimeoutError:
            raise HTTPException(503, f"the {deployment} did not answer within {MODEL_CALL_TIMEOUT_S:.0f}s") from None
        except DeploymentUnavailableError:  # Serve gave up deploying it (e.g. its replicas found no model)
            raise HTTPException(503, f"the {deployment} has no replica that could start; retry later") from None
        except RayActorError as exc:  # the replica died or became unreachable mid-call
            logger.warning("a %s replica was lost mid-request (attempt %d): %s", deployment, attempt, exc)
            if attempt == REPLICA_LOST_ATTEMPTS:
                raise HTTPException(503, f"the {deployment} replica was lost; retry shortly") from None
    if result.get("error") == NO_MODEL:
        raise HTTPException(503, f"no model loaded yet ({deployment}); retry shortly")
    if "error" in result:
        raise HTTPException(500, f"the {deployment} failed on this listing: {result['error']}")
    return result


def _one(result: dict) -> dict:
    """One answered listing as the inference log takes a batch's answers."""
    return {"prices": [result["price"]], "price_low": [result["price_low"]], "price_high": [result["price_high"]]}


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


@serve.deployment(name="Api")
@serve.ingress(api)
class Api(ListingReplica):
    """The ingress: a model replica too, so a single listing is priced and explained without a hop."""

    # No `from __future__ import annotations` here: FastAPI must see real types on these methods.
    async def __init__(self, predictor: DeploymentHandle, settings: Settings):
        # Loads the champion and follows its alias as the predictors do, but starts without one:
        # /ready must be able to say why nothing is served; /predict and /explain answer 503 until then.
        # Its model source applies fail_fast_mlflow, which /model's registry reads need too.
        await super().__init__(settings, require_model=False)
        self._predictor = predictor
        self._report = None  # (monotonic time, ModelReport)
        set_max_body_bytes(settings.max_request_bytes)
        self._batch_chunk_rows = DEFAULT_BATCH_CHUNK_ROWS
        # What was asked and answered goes to the store in batches, off the request path.
        self._inference_log = (
            InferenceLogWriter(settings, flush_s=settings.inference_log_flush_s) if settings.inference_log else None
        )

    async def _single(self, method: str, row: dict) -> dict:
        """Price or explain one listing here; while this replica has no model, a predictor does.

        An ingress replica can be up without a model (the registry was unreachable when it
        started, or its load failed) while its siblings and the predictors serve: its callers
        must not get 503s for that. When no replica anywhere has a model, the handoff times out
        (or Serve, having failed to deploy the predictors, refuses it at once) and the caller gets
        the "no model loaded" 503.
        """
        if self._served.current is not None:
            return await getattr(self, method)(row)
        try:
            return await asyncio.wait_for(getattr(self._predictor, method).remote(row), HANDOFF_TIMEOUT_S)
        except (TimeoutError, DeploymentUnavailableError):  # none started yet, or Serve gave up on them
            return {"error": NO_MODEL}

    def _log(self, listings: list[dict] | dict, answer: dict, version: str, endpoint: str, started: float) -> None:
        """Queue what was asked (raw rows or columns) and answered (``answer``: prices, price_low, price_high lists)."""
        if self._inference_log is not None:
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._inference_log.add(
                listings, answer["prices"], lows=answer["price_low"], highs=answer["price_high"], model_version=version,
                endpoint=endpoint, latency_ms=latency_ms,
            )  # fmt: skip

    async def reconfigure(self, config: dict) -> None:
        """user_config from serve_config.yaml (applied without a restart)."""
        await super().reconfigure(config)
        self._batch_chunk_rows = int(config.get("batch_chunk_rows", DEFAULT_BATCH_CHUNK_ROWS))

    # --- predictions -------------------------------------------------------------------
    @api.post("/predict", response_model=PredictResponse, summary="Price one listing")
    async def predict(self, listing: Listing, request: Request) -> PredictResponse:
        started, row = time.perf_counter(), listing.to_raw_row()
        result = await _answer(lambda: self._single("price_one", row), "api")
        request.state.model_version = result["model_version"]
        self._log([row], _one(result), result["model_version"], "/predict", started)
        return PredictResponse(
            price=result["price"],
            price_low=result["price_low"],
            price_high=result["price_high"],
            coverage=self._settings.interval_coverage,
            model_version=result["model_version"],
            model_alias=self._settings.model_alias,
            request_id=_request_id(request),
            warnings=result["warnings"],
        )

    @api.post(
        "/predict/batch",
        response_model=BatchResponse,
        summary="Price many listings; bad rows are reported by index and the rest still priced",
        openapi_extra=BATCH_OPENAPI,
        responses={
            413: {"description": "more listings than the configured maximum, or body too large"},
            422: {
                "description": "Validation Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
            },
        },
    )
    async def predict_batch(self, request: Request, background: BackgroundTasks) -> Response:
        # The body is read here, not by FastAPI: a batch of valid listings is parsed and validated
        # in one pass (valid_batch); anything else is parsed as FastAPI would and checked row by row.
        started = time.perf_counter()
        body, content_type = await request.body(), request.headers.get("content-type")
        listings = valid_batch(body, content_type)
        if listings is not None:
            self._check_batch_size(len(listings))
            count, good, errors = len(listings), list(enumerate(listings)), []
        else:
            rows = batch_rows(body, content_type)
            self._check_batch_size(len(rows))
            count, (good, errors) = len(rows), validate_listings(rows)
        if errors:
            api_metrics().reject("/predict/batch", "invalid_row", len(errors))
        prices: list[float | None] = [None] * count
        lows, highs = list(prices), list(prices)
        warnings = []
        version = None
        if good:
            columns = validated_columns([listing for _, listing in good])
            result = await self._predict_in_chunks(columns, len(good))
            version = result["model_version"]
            request.state.model_version = version
            background.add_task(self._log_batch, columns, result, version, started)
            rows = zip(
                good, result["prices"], result["price_low"], result["price_high"], result["warnings"], strict=True
            )
            for (index, _), price, low, high, row_warnings in rows:
                prices[index], lows[index], highs[index] = price, low, high
                if row_warnings:
                    warnings.append({"index": index, "warnings": row_warnings})
        answer = BatchResponse(
            prices=prices,
            price_low=lows,
            price_high=highs,
            coverage=self._settings.interval_coverage,
            errors=errors,
            warnings=warnings,
            model_version=version,
            model_alias=self._settings.model_alias,
            request_id=_request_id(request),
        )
        # Serialized by pydantic in one call: FastAPI's generic path (re-validate, jsonable_encoder)
        # costs ~3 ms for 1,000 prices. The model above already validated the answer.
        return Response(answer.model_dump_json(), media_type="application/json")

    def _check_batch_size(self, count: int) -> None:
        limit = self._settings.max_batch_listings
        if count > limit:
            api_metrics().reject("/predict/batch", "too_many_listings")
            raise HTTPException(413, f"{count} listings exceed the maximum of {limit} per request")

    async def _log_batch(self, columns: dict[str, list], answer: dict, version: str, started: float) -> None:
        """Runs after the response is sent, so the caller never waits for the log.

        A coroutine on purpose: Starlette runs plain background functions in a worker thread,
        where there is no event loop for the log's flush task to start on.
        """
        if self._inference_log is not None:
            self._log(raw_columns(columns), answer, version, "/predict/batch", started)

    async def _predict_in_chunks(self, columns: dict[str, list], rows: int) -> dict:
        """A batch is priced in chunks at once: the last here, in a worker thread, the others by the predictors.

        Pricing one chunk here spreads a batch over two cores without a second hop: two chunks
        sent to the predictors at the same instant can both land on one replica and run one after
        the other. The predictors' chunks are sent first. All chunks must come from one model
        version: if a swap landed between them, ask again.
        """
        size = self._batch_chunk_rows
        for _attempt in range(3):
            chunks = [{name: values[i : i + size] for name, values in columns.items()} for i in range(0, rows, size)]
            loaded = self._served.current  # None: this replica has no model yet, the predictors price it all
            handed_over = chunks[:-1] if loaded is not None else chunks
            calls = [
                _answer(lambda chunk=chunk: self._predictor.predict_many.remote(chunk), "predictor")
                for chunk in handed_over
            ]
            if loaded is not None:
                calls.append(asyncio.to_thread(self.price_chunk, loaded, chunks[-1]))
            parts = await asyncio.gather(*calls)
            versions = {part["model_version"] for part in parts}
            if len(versions) == 1:
                merged = {name: [value for part in parts for value in part[name]] for name in BATCH_LISTS}
                return {"model_version": versions.pop(), **merged}
        raise HTTPException(503, "the model is being swapped to a new version; retry shortly")

    @api.post("/explain", response_model=ExplainResponse, summary="Price one listing and explain it (exact SHAP)")
    async def explain(self, listing: Listing, request: Request) -> ExplainResponse:
        started, row = time.perf_counter(), listing.to_raw_row()
        result = await _answer(lambda: self._single("explain_one", row), "api")
        request.state.model_version = result["model_version"]
        self._log([row], _one(result), result["model_version"], "/explain", started)
        return ExplainResponse(
            **result, coverage=self._settings.interval_coverage, model_alias=self._settings.model_alias,
            request_id=_request_id(request),
        )  # fmt: skip

    # --- operations --------------------------------------------------------------------
    @api.get("/health", summary="The ingress process is alive")
    async def health(self) -> dict:
        return {"status": "ok"}

    def check_health(self) -> None:
        """Serve's health check: the ingress is healthy without a model (/ready says it has none)."""

    async def _statuses(self, method: str, timeout_s: float = STATUS_TIMEOUT_S) -> dict:
        """``status`` or ``reload`` of this replica's model ("api") and of one predictor replica."""
        calls = {"predictor": getattr(self._predictor, method).remote()}
        # This class's own ``reload`` is the HTTP route; the replica's model check is ModelReplica's.
        results = {"api": await ModelReplica.reload(self) if method == "reload" else self.status()}
        for name, call in calls.items():
            try:
                results[name] = await asyncio.wait_for(call, timeout_s)
            except Exception as exc:
                results[name] = {"loaded": False, "last_error": f"{type(exc).__name__}: {exc}"[:300]}
        return results

    @api.get("/ready", summary="Models are loaded (which version, and whether the registry is reachable)")
    async def ready(self, request: Request) -> JSONResponse:
        parts = await self._statuses("status")
        own = parts["api"]
        # This replica answers with its own model, or, while it has none, through the predictors
        # (Api._single): it is ready when the predictors are.
        ready = bool(parts["predictor"].get("loaded"))
        versions = {part.get("model_version") for part in parts.values() if part.get("loaded")}
        reachable = all(part.get("registry_reachable") is not False for part in parts.values())
        if not ready:
            detail = "no model loaded: " + "; ".join(str(p.get("last_error")) for p in parts.values())
        elif not own.get("loaded"):
            detail = f"this ingress replica has no model yet ({own.get('last_error')}): the predictors answer for it"
        elif not reachable:
            detail = "model registry unreachable: serving the last good model"
        elif len(versions) > 1:
            detail = "swapping to a new model version"
        else:
            detail = "ready"
        # The version /predict and /explain answer with.
        version = own.get("model_version") if own.get("loaded") else parts["predictor"].get("model_version")
        request.state.model_version = version or "none"
        body = {
            "ready": ready,
            "model_version": version,
            "model_alias": self._settings.model_alias,
            "registry_reachable": reachable,
            "detail": detail,
            **parts,
            "inference_log": self._inference_log.status() if self._inference_log else None,
        }
        return JSONResponse(status_code=200 if ready else 503, content=body)

    @api.post("/reload", summary="Check the model alias now and swap if it moved")
    async def reload(self) -> dict:
        # Reaches this replica and one predictor; the others pick the move up on their next poll.
        parts = await self._statuses("reload", MODEL_CALL_TIMEOUT_S)  # may download a new model
        return {"model_version": parts["api"].get("model_version"), **parts}

    @api.get(
        "/model", response_model=ModelReport, summary="Champion version, run, metrics, promotion history, drift reports"
    )
    async def model(self) -> ModelReport:
        now = time.monotonic()
        if self._report and now - self._report[0] < MODEL_REPORT_TTL_S:
            return self._report[1]
        served = self.status()
        try:
            report = await asyncio.to_thread(model_report, self._settings, served)
        except Exception as exc:
            return unavailable_report(self._settings, served, exc)
        self._report = (now, report)
        return report


def build_app(args: dict | None = None):
    """Serve application builder: ``args`` (from serve_config.yaml) override RAYESTATE_* settings."""
    settings = load_settings(**(args or {}))
    return Api.bind(Predictor.bind(settings), settings)


app = build_app()

"""The model replicas: the ingress's pricing and explaining, and the predictor deployment.

A single listing is priced and explained where its request arrives: the ingress is a
:class:`PricingReplica` and an :class:`ExplainingReplica`, because a hop to another replica costs
Serve more CPU than a prediction, and a quarter of an explanation's (benchmarks/serve_bench.py:
/explain at 16 connections 0.82x the baseline with an explainer deployment, 1.33x in the ingress).
The predictor deployment takes what is worth a hop: /predict/batch chunks, priced in parallel
with the one the ingress prices itself, and the single listings of an ingress replica that has
no model (yet), so one replica's failed load never turns into 503s while its siblings serve.
Single-listing work is batched: the feature transform costs about the same for 1 row as for 32,
and a TreeSHAP call on a few rows less per row than on one, so batching is where the throughput
comes from. Pricing, which computes on the event loop, uses ``@serve.batch``; explaining, which
computes in a worker thread, a :class:`~serve_app.batching.DrainBatcher` (why: serve_app/batching.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import cached_property, partial

from ray import serve

from rayestate.model_io import LoadedModel
from rayestate.settings import Settings
from serve_app.batching import DrainBatcher
from serve_app.inference import explain_rows, predict_rows
from serve_app.metrics import batch_size_histogram, reload_counter
from serve_app.served_model import MlflowModelSource, ServedModel

logger = logging.getLogger("ray.serve")
#: What a replica without a model answers for a row.
NO_MODEL = "no model loaded"


def isolate_failures(compute: Callable[[list[dict]], list[dict]], rows: list[dict]) -> list[dict]:
    """Compute a batch in one call; if that fails, row by row, so one bad row fails alone.

    A batcher fails every caller of a batch when the computation raises; a row that breaks
    the model would take its neighbours' requests down with it. Failed rows get ``{"error": ...}``.
    """
    try:
        return compute(rows)
    except Exception:
        logger.exception("a batch of %d rows failed; computing row by row", len(rows))
    results = []
    for row in rows:
        try:
            results.extend(compute([row]))
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
    return results


def _record_batch(computation: str, size: int) -> None:
    """Each model call's size in ``rayestate_batch_size`` (the metric is created on first use, in the replica)."""
    batch_size_histogram().observe(size, tags={"computation": computation})


class ModelReplica:
    """Lifecycle of every model replica (the ingress and the predictors): load at start, poll the alias, swap, report."""

    #: The batchers user_config tunes: (attribute, prefix of its config keys). An ``@serve.batch``
    #: method or a DrainBatcher: both take ``set_max_batch_size``; only the first has a wait.
    batch_methods: tuple[tuple[str, str], ...] = ()

    async def __init__(self, settings: Settings, *, require_model: bool = True):
        """Load the champion; without one within ``model_load_timeout_s``, fail (``require_model``).

        A model replica that fails its constructor gets no traffic. The ingress passes
        ``require_model=False``: it starts anyway, so /ready can say what is wrong,
        and keeps polling the alias.
        """
        self._settings = settings
        self._poll_s = settings.reload_poll_s
        self._served = ServedModel(MlflowModelSource(settings), on_swap=self._count_swap)
        if require_model:
            await self._served.wait_until_loaded(timeout_s=settings.model_load_timeout_s)
        else:
            await self._served.refresh()
        self._watcher = asyncio.get_running_loop().create_task(self._served.poll(lambda: self._poll_s))

    @staticmethod
    def _count_swap(_previous: str, version: str) -> None:
        reload_counter().inc(tags={"model_version": version})

    async def reconfigure(self, config: dict) -> None:
        """Apply user_config from serve_config.yaml: batch sizes and poll interval, no restart."""
        for attribute, prefix in self.batch_methods:
            batcher = getattr(self, attribute)
            if f"{prefix}max_batch_size" in config:
                batcher.set_max_batch_size(int(config[f"{prefix}max_batch_size"]))
            wait_key = f"{prefix}batch_wait_timeout_s"
            if wait_key in config:
                if not hasattr(batcher, "set_batch_wait_timeout_s"):  # a DrainBatcher; configs before stop 34 set one
                    raise ValueError(
                        f"user_config {wait_key}: this batcher never waits (serve_app/batching.py); remove the key"
                    )
                batcher.set_batch_wait_timeout_s(float(config[wait_key]))
        self._poll_s = float(config.get("reload_poll_s", self._settings.reload_poll_s))

    async def reload(self) -> dict:
        """Check the alias now (POST /reload); returns this replica's status."""
        await self._served.refresh()
        return self.status()

    def status(self) -> dict:
        return self._served.status()

    def check_health(self) -> None:
        if self._served.current is None:
            raise RuntimeError("no model loaded")


class PricingReplica(ModelReplica):
    """A replica that prices one listing per caller, concurrent callers batched into one model call."""

    batch_methods = (("price_one", ""),)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def price_one(self, rows: list[dict]) -> list[dict]:
        """One raw listing row per caller; concurrent callers share one model call.

        ``@serve.batch``, not a DrainBatcher: the call runs on the event loop, and Serve's batch
        loop lets the requests that arrived meanwhile in before it forms the next batch (7 rows
        per call at 16 connections against 2-3 with a DrainBatcher, 2,012 against 1,544 req/s).
        """
        _record_batch("price_batch", len(rows))
        loaded = self._served.current  # taken once: a swap mid-batch cannot mix versions
        if loaded is None:  # only the ingress runs without a model (require_model=False)
            return [{"error": NO_MODEL} for _ in rows]

        def compute(batch: list[dict]) -> list[dict]:
            answer = predict_rows(loaded.model, batch, coverage=self._settings.interval_coverage)
            return [
                {"price": price, "price_low": low, "price_high": high, "warnings": warning,
                 "model_version": loaded.version}
                for price, low, high, warning in zip(*answer.values(), strict=True)
            ]  # fmt: skip

        return isolate_failures(compute, rows)

    def price_chunk(self, loaded: LoadedModel, columns: dict[str, list]) -> dict:
        """A /predict/batch chunk (validated listings as columns) in one model call, with its model version."""
        answer = predict_rows(loaded.model, columns, coverage=self._settings.interval_coverage)
        return {**answer, "model_version": loaded.version}


class ExplainingReplica(ModelReplica):
    """A replica that explains one listing per caller (exact TreeSHAP), concurrent callers batched.

    The computation runs in a worker thread: an explanation takes tens of milliseconds, which on
    the event loop would hold back every other request of the replica (a /predict, /health). One
    batch at a time, one XGBoost thread per booster (XGB_THREADS). A batch of one listing (nobody
    else waiting) explains each booster of the bag on a thread of its own: the same CPU, half the
    wait for a bag of two on an idle box. A larger batch means concurrent requests, which keep the
    cores busy already: its boosters run one after the other (rayestate.model._tree_shap).
    """

    batch_methods = (("_explainer", "explain_"),)

    @cached_property
    def _explainer(self) -> DrainBatcher:
        """This replica's explanation batcher, made on first use (``user_config`` or the first request)."""
        return DrainBatcher(self.explain_batch, 16, on_batch=partial(_record_batch, "explain_batch"))

    async def explain_one(self, row: dict) -> dict:
        """Exact TreeSHAP for one raw listing row; concurrent callers share one TreeSHAP call."""
        return await self._explainer(row)

    async def explain_batch(self, rows: list[dict]) -> list[dict]:
        """A batch of raw listing rows explained in a worker thread (a batch is what queued meanwhile)."""
        loaded = self._served.current  # taken once: a swap mid-batch cannot mix versions
        if loaded is None:
            return [{"error": NO_MODEL} for _ in rows]

        def compute(batch: list[dict]) -> list[dict]:
            results = explain_rows(
                loaded.model, batch, comparables=self._settings.comparables_k,
                coverage=self._settings.interval_coverage,
            )  # fmt: skip
            return [{**result, "model_version": loaded.version} for result in results]

        return await asyncio.to_thread(isolate_failures, compute, rows)


class ListingReplica(PricingReplica, ExplainingReplica):
    """Prices and explains single listings: both the ingress and the predictors are one (Api._single)."""

    batch_methods = PricingReplica.batch_methods + ExplainingReplica.batch_methods


@serve.deployment(name="Predictor")
class Predictor(ListingReplica):
    """Prices /predict/batch chunks; prices and explains single listings for an ingress without a model.

    An ingress replica starts without a model when the registry cannot give it one (it must
    still answer /ready), and keeps polling; meanwhile it hands its listings here. A predictor
    replica only takes traffic once it has loaded the champion.
    """

    async def predict_many(self, columns: dict[str, list]) -> dict:
        """A /predict/batch chunk the ingress hands over (validated listings as columns)."""
        return self.price_chunk(self._served.current, columns)

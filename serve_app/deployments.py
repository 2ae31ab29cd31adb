"""The model replicas: the ingress's pricing and explaining, and the predictor deployment.

A single listing is priced and explained where its request arrives: the ingress is a
:class:`PricingReplica` and an :class:`ExplainingReplica`, because a hop to another replica costs
Serve more CPU than a prediction, and a quarter of an explanation's (benchmarks/serve_bench.py:
/explain at 16 connections 0.82x the baseline with an explainer deployment, 1.33x in the ingress).
The predictor deployment takes what is worth a hop: /predict/batch chunks, priced in parallel
with the one the ingress prices itself, and the single listings of an ingress replica that has
no model (yet), so one replica's failed load never turns into 503s while its siblings serve.
Single-listing work is batched (serve_app/batching.py: a batch is what queued while the last
one ran): the feature transform costs about the same for 1 row as for 32, and a TreeSHAP call on
a few rows less per row than on one, so batching is where the throughput comes from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

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


def _batch_size_recorder(method: str):
    """Records each batch's size in ``rayestate_batch_size`` (created on first use, inside the replica)."""
    return lambda size: batch_size_histogram().observe(size, tags={"computation": method})


class ModelReplica:
    """Lifecycle of every model replica (the ingress and the predictors): load at start, poll the alias, swap, report."""

    #: The batched computations: (method computing a list of rows, prefix of its user_config
    #: keys, default max_batch_size). Callers go through ``self._batchers[method]``.
    batched: tuple[tuple[str, str, int], ...] = ()

    async def __init__(self, settings: Settings, *, require_model: bool = True):
        """Load the champion; without one within ``model_load_timeout_s``, fail (``require_model``).

        A model replica that fails its constructor gets no traffic. The ingress passes
        ``require_model=False``: it starts anyway, so /ready can say what is wrong,
        and keeps polling the alias.
        """
        self._settings = settings
        self._poll_s = settings.reload_poll_s
        self._served = ServedModel(MlflowModelSource(settings), on_swap=self._count_swap)
        self._batchers = {
            method: DrainBatcher(getattr(self, method), size, on_batch=_batch_size_recorder(method))
            for method, _, size in self.batched
        }
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
        for method, prefix, _ in self.batched:
            if f"{prefix}max_batch_size" in config:
                self._batchers[method].set_max_batch_size(int(config[f"{prefix}max_batch_size"]))
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

    batched = (("price_batch", "", 32),)

    async def price_one(self, row: dict) -> dict:
        """One raw listing row; concurrent callers share one model call."""
        return await self._batchers["price_batch"](row)

    async def price_batch(self, rows: list[dict]) -> list[dict]:
        """A batch of raw listing rows in one model call (on the event loop: it takes a millisecond)."""
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
    batch at a time; within it each booster of the bag is explained on a thread of its own, one
    XGBoost thread each (XGB_THREADS): the same CPU, half the wait for a bag of two on an idle box.
    """

    batched = (("explain_batch", "explain_", 16),)

    async def explain_one(self, row: dict) -> dict:
        """Exact TreeSHAP for one raw listing row; concurrent callers share one TreeSHAP call."""
        return await self._batchers["explain_batch"](row)

    async def explain_batch(self, rows: list[dict]) -> list[dict]:
        """A batch of raw listing rows explained in a worker thread."""
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

    batched = PricingReplica.batched + ExplainingReplica.batched


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

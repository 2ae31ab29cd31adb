"""The model a replica serves, and how it moves to a new champion without dropping a request.

Each model replica (ingress, predictor) holds one :class:`LoadedModel`. A background task polls the
registry alias (``POST /reload`` and ``reconfigure`` force a check). A new version is loaded
completely off the event loop and then swapped in with one reference assignment: a batch that
already started keeps the object it took, so nothing in flight fails. When the registry is
unreachable the replica keeps its last good model and says so in its status; a replica that
never loaded a model fails its constructor, so Serve never routes traffic to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from rayestate.model_io import LoadedModel, load_model_version
from rayestate.settings import Settings
from serve_app.inference import XGB_THREADS

logger = logging.getLogger("ray.serve")

# Registry calls fail fast: a down MLflow must not stall a swap check for minutes of retries.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


class ModelSource(Protocol):
    """Where models come from: which version the alias names (LookupError if none), and loading one."""

    alias: str

    def current_version(self) -> str: ...

    def load(self, version: str) -> LoadedModel: ...


def fail_fast_mlflow() -> None:
    """Apply MLFLOW_ENV_DEFAULTS in this (replica) process unless the environment sets them."""
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


class MlflowModelSource:
    """The production source: the MLflow model registry, by alias."""

    def __init__(self, settings: Settings):
        fail_fast_mlflow()
        self.name = settings.model_name
        self.alias = settings.model_alias
        self._client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)

    def current_version(self) -> str:
        try:
            return str(self._client.get_model_version_by_alias(self.name, self.alias).version)
        except RestException as exc:  # the server answered: no such model or alias
            raise LookupError(f"{self.name}@{self.alias}: {exc}") from exc

    def load(self, version: str) -> LoadedModel:
        return load_model_version(self._client, self.name, version, alias=self.alias)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]


class ServedModel:
    """The current model of one replica plus what the last registry check found."""

    def __init__(self, source: ModelSource, *, on_swap: Callable[[str, str], None] | None = None):
        self._source = source
        self._on_swap = on_swap
        self._lock = asyncio.Lock()
        self.current: LoadedModel | None = None
        self.loaded_at: float | None = None
        self.last_check_at: float | None = None
        self.registry_reachable: bool | None = None
        self.last_error: str | None = None

    @property
    def alias(self) -> str:
        return self._source.alias

    async def refresh(self) -> bool:
        """Check the alias; if it moved, load the new version, then swap. True if swapped."""
        async with self._lock:
            self.last_check_at = time.time()
            try:
                version = await asyncio.to_thread(self._source.current_version)
            except LookupError as exc:
                self.registry_reachable = True
                return self._failed(f"the alias names no model: {_short(exc)}")
            except Exception as exc:
                self.registry_reachable = False
                return self._failed(f"model registry unreachable: {_short(exc)}")
            self.registry_reachable = True
            if self.current is not None and self.current.version == version:
                self.last_error = None
                return False
            try:
                loaded = await asyncio.to_thread(self._source.load, version)
                loaded.model.prepare_for_serving(XGB_THREADS)
            except Exception as exc:
                return self._failed(f"could not load version {version}: {_short(exc)}")
            previous = self.current.version if self.current else "none"
            self.current = loaded  # the atomic swap: in-flight batches keep the object they took
            self.loaded_at = time.time()
            self.last_error = None
            logger.info("model %s@%s: now serving version %s (was %s)", loaded.name, self.alias, version, previous)
            if self._on_swap:
                self._on_swap(previous, version)
            return True

    def _failed(self, message: str) -> bool:
        if self.current is not None:
            message += f"; still serving version {self.current.version}"
        self.last_error = message
        logger.warning(message)
        return False

    async def wait_until_loaded(self, *, timeout_s: float, retry_s: float = 2.0) -> LoadedModel:
        """Retry until a first model is loaded; raise (so the replica never gets traffic) on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh()
            if self.current is not None:
                return self.current
            if time.monotonic() + retry_s > deadline:
                raise RuntimeError(f"no model loaded within {timeout_s:.0f}s: {self.last_error}")
            await asyncio.sleep(retry_s)

    async def poll(self, interval_s: Callable[[], float]) -> None:
        """Check the alias forever, every interval_s() seconds (read each time: reconfigure changes it)."""
        while True:
            await asyncio.sleep(interval_s())
            try:
                await self.refresh()
            except Exception:  # never let the watcher die; the next poll tries again
                logger.exception("model refresh failed")

    def status(self) -> dict:
        current = self.current
        return {
            "loaded": current is not None,
            "model_name": current.name if current else None,
            "model_version": current.version if current else None,
            "model_alias": self.alias,
            "run_id": current.run_id if current else None,
            "meta": current.model.meta if current else None,
            "loaded_at": self.loaded_at,
            "last_check_at": self.last_check_at,
            "registry_reachable": self.registry_reachable,
            "last_error": self.last_error,
        }

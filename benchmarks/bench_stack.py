"""What the serving benchmarks share: the real champion served by the real Serve app, and real requests.

:class:`ServeStack` copies the cached real champion (benchmarks/real_champion.py), starts its own
MLflow server on the copy and its own local Ray cluster, and deploys serve_app/serve_config.yaml
the way `make up` does (rayestate.localstack). :func:`real_listings` are rows 80,000-99,999 of
the real sample as API bodies, exactly as they appear (a missing field is left out, as a client
sends null), never seen in training.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from benchmarks import real_champion
from benchmarks.real_data import SAMPLE, TRAIN_ROWS
from rayestate import localstack
from rayestate.model import PriceModel
from rayestate.model_io import load_model_by_alias
from rayestate.schema import Listing
from rayestate.settings import Settings
from serve_app.inference import XGB_THREADS


def real_listings(limit: int | None = None) -> tuple[list[dict], int]:
    """API bodies of the held-out real rows (as they appear), and how many the API would reject."""
    frame = pd.read_parquet(SAMPLE).iloc[TRAIN_ROWS:].drop(columns="price")
    bodies, rejected = [], 0
    for row in frame.to_dict("records"):
        present = {k: v for k, v in row.items() if v is not None and v == v}
        if "zip_code" in present:
            present["zip_code"] = f"{int(present['zip_code']):05d}"
        try:
            bodies.append(Listing.model_validate(present).model_dump(exclude_none=True))
        except ValidationError:
            rejected += 1
        if limit is not None and len(bodies) >= limit:
            break
    return bodies, rejected


def write_bodies(path: Path, bodies: list) -> Path:
    """One JSON body per line (what wrk_report.lua sends, in turn)."""
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return path


#: What can take HTTP to the Serve app, and what `make up` uses unless told otherwise.
INGRESSES = ("proxy", "haproxy")
DEFAULT_INGRESS = Settings.model_fields["serve_ingress"].default


@contextmanager
def ingress_env(ingress: str) -> Iterator[dict[str, str]]:
    """The Ray variables for Serve's ``proxy`` (none) or ``haproxy`` ingress, on ports of their own.

    HAProxy's sockets go in a short directory (a unix socket path has a length limit), removed after.
    """
    if ingress == "proxy":
        yield {}
        return
    runtime_dir = localstack.private_dir(Path("/tmp") / f"rehap-{os.getpid()}")
    ports = {name: localstack.free_port() for name in ("stats_port", "metrics_port", "fallback_port")}
    try:
        yield localstack.haproxy_ingress_env(runtime_dir, **ports)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def ray_serve_env() -> dict[str, str]:
    """Serve's mode as the benchmark's cluster started with it (localstack.SERVE_THROUGHPUT_ENV unless overridden)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_SERVE_")}


def model_shape(model) -> dict:
    """Trees, depth and bag size of a PriceModel, as the benchmarks report them."""
    depth = int(model.meta.get("params", {}).get("max_depth", 0)) or None
    trees = sum(booster.num_boosted_rounds() for booster in model.boosters)
    return {"trees": trees, "max_depth": depth, "bag_size": len(model.boosters), "rounds": model.meta.get("rounds")}


@dataclass
class ServeStack:
    """MLflow with the real champion + a local Ray cluster + the Serve app; a context manager."""

    inference_log: bool = True
    serve_config: Path = localstack.SERVE_CONFIG
    max_queued: int | None = None
    ray_env: dict = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayestate-bench-")))
    #: Called with the loaded model before Ray starts: for measurements that want the machine to themselves.
    before_ray: Callable[[PriceModel], None] | None = None

    def __enter__(self) -> ServeStack:
        mlflow_root, self.champion = real_champion.copy_to(self.root)
        self.mlflow = localstack.MlflowServer(mlflow_root)
        self.mlflow.start()
        self.model = load_model_by_alias(self._client(), real_champion.MODEL_NAME, "champion").model
        self.model.prepare_for_serving(XGB_THREADS)  # as a replica holds it
        if self.before_ray is not None:
            self.before_ray(self.model)
        os.environ.update(self.ray_env)
        context = localstack.init_local_ray(num_cpus=2)
        from ray import serve

        self.dashboard_url = f"http://{context.dashboard_url}"
        port = localstack.free_port()
        serve.start(http_options={"host": localstack.LOOPBACK, "port": port})
        self.config = localstack.adapt_serve_config(
            localstack.load_serve_config(self.serve_config),
            port=port,
            args={"mlflow_tracking_uri": self.mlflow.uri, "model_name": real_champion.MODEL_NAME,
                  "state_dir": str(self.root / "state"), "inference_log": self.inference_log},
        )  # fmt: skip
        if self.max_queued is not None:
            for deployment in self.config["applications"][0]["deployments"]:
                deployment["max_queued_requests"] = self.max_queued
        localstack.deploy_serve(self.dashboard_url, self.config)
        self.url = f"http://{localstack.LOOPBACK}:{port}"
        localstack.wait_ready(self.url, timeout=600)
        return self

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.uri)

    def __exit__(self, *exc) -> None:
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            self.mlflow.stop()
            shutil.rmtree(self.root, ignore_errors=True)

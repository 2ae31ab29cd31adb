"""Fixtures every tier shares: one real local Ray cluster and one real MLflow server per test run.

Ray's own processes take CPU on a 2-core machine, so every test that needs Ray shares the
session cluster instead of starting its own. Parts from outside the repository (the real data,
chromium, the CRD schemas) go through tests.support.parts: missing means skipped locally and
failed where RAYESTATE_REQUIRE promises the part (CI).

Tests live in tiers, by folder: unit/, integration/ (the real local stack), data/ (the real
sample), browser/ (headless Chromium). Each folder's conftest.py marks its tests.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from rayestate.localstack import REPO, MlflowServer, free_port, init_local_ray, wait_ready
from rayestate.settings import Settings
from tests.support.champion import Champion, make_sample_champion
from tests.support.parts import missing
from tests.support.serve import serve_test_config
from tests.support.servers import MOTO_KEY, MOTO_SECRET, AppServer

SHARED = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared"))
SCHEMAS = SHARED / "schemas"
TEST_MODEL_NAME = "rayestate-price-test"

# Token auth stays on in tests too; ray.init() generates the token for a local cluster.
os.environ.setdefault("RAY_AUTH_MODE", "token")


# --- parts from outside the repository ------------------------------------------------------------


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        missing("data", f"{path} is absent (the real samples live in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def realtor_sample() -> Path:
    return shared_file("data", "realtor", "realtor.parquet")


@pytest.fixture(scope="session")
def api_batch() -> Path:
    return shared_file("data", "api", "batch_group1_tuesday_3.csv")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("browser", "Debian's chromium is not installed (`make test` installs it as root)")
    return path


@pytest.fixture(scope="session")
def crd_schemas() -> Path:
    if not SCHEMAS.is_dir():
        missing("schemas", f"{SCHEMAS} is absent (the vendored KubeRay and Argo CD CRDs)")
    return SCHEMAS


# --- the real local stack --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster (token auth on) with its dashboard / Job API on loopback."""
    import ray

    context = init_local_ray(num_cpus=2, configure_logging=False)
    try:
        yield context
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()


@pytest.fixture(scope="session")
def dashboard_url(ray_cluster) -> str:
    return f"http://{ray_cluster.dashboard_url}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (SQLite backend, served artifacts) on a free loopback port."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.uri


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for an isolated stack under a fresh tmp state dir (no servers implied)."""
    return Settings(state_dir=tmp_path / "state", mlflow_experiment=f"test-{tmp_path.name}")


# --- the data side: an S3-compatible server (moto) and the stand-in data API -------------------------


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-compatible server (real HTTP) on a free loopback port; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server, tmp_path) -> Settings:
    """Settings whose store is a fresh bucket (s3://<bucket>/store) on the moto server."""
    import boto3

    bucket = f"rayestate-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id=MOTO_KEY, aws_secret_access_key=MOTO_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)  # fmt: skip
    return Settings(
        state_dir=tmp_path / "state",
        store_uri=f"s3://{bucket}/store",
        s3_endpoint_url=s3_server,
        aws_access_key_id=MOTO_KEY,
        aws_secret_access_key=MOTO_SECRET,
    )


@pytest.fixture
def data_api_factory(tmp_path) -> Callable[..., AppServer]:
    """Build a stand-in data API (real server in a thread); its state goes to tmp_path/<state_name>."""
    from rayestate.devstack.data_api import create_data_api

    def make(dataset=None, *, mode="course", state_name="state.json", **kwargs) -> AppServer:
        kwargs.setdefault("synthetic_rows", 20_000)
        kwargs.setdefault("batch_rows", 2_000)
        return AppServer(create_data_api(dataset, Path(tmp_path) / state_name, mode, **kwargs))

    return make


# --- the Serve app (a registered champion and the running deployment) -------------------------------


@pytest.fixture(scope="session")
def champion(mlflow_server) -> Champion:
    """A small champion trained on synthetic listings, registered as a pipeline run registers one."""
    return make_sample_champion(mlflow_server, TEST_MODEL_NAME)


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """Serve's HTTP proxy on a free loopback port (one Serve instance per session cluster)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="session")
def serve_state_dir(tmp_path_factory) -> Path:
    """The Serve app's state dir (its data store: drift reports and the inference log)."""
    return tmp_path_factory.mktemp("serve-state")


@pytest.fixture(scope="session")
def serve_app_url(serve_http_port, dashboard_url, champion, serve_state_dir) -> str:
    """Base URL of the running Ray Estate Serve app, serving `champion` from the test MLflow."""
    from rayestate.localstack import deploy_serve

    deploy_serve(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
    url = f"http://127.0.0.1:{serve_http_port}"
    wait_ready(url, timeout=240)
    return url


@pytest.fixture
def ui(serve_app_url, monkeypatch):
    """A fresh Streamlit AppTest session of the UI, pointed at the real Serve app (RAYESTATE_API_URL)."""
    from streamlit.testing.v1 import AppTest

    from tests.support.ui import APP

    monkeypatch.setenv("RAYESTATE_API_URL", serve_app_url)
    return AppTest.from_file(str(APP), default_timeout=90)

"""Shared fixtures: one real local Ray cluster and one real MLflow server for the whole run.

Ray's own processes take CPU on a 2-core machine, so every test that needs Ray shares the
session cluster instead of starting its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rayestate.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared"))
BIN = Path(sys.executable).parent

# Token auth stays on in tests too; ray.init() generates the token for a local cluster.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, *, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Poll url until it answers 2xx, failing early if the serving process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def last_json_line(output: str) -> dict:
    """The last line of a job's output that is a JSON object (Ray interleaves worker log lines)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    raise AssertionError(f"no JSON summary line in the output:\n{output[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(command: list[str], health_url: str, log_path: Path, *, env: dict | None = None, timeout=120.0):
    """Start `command` (own session, output to log_path), wait until health_url answers 2xx, stop it after."""
    with Path(log_path).open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(health_url, timeout=timeout, process=process)
            yield process
        finally:
            stop_process(process)


# --- real data under ../shared ---------------------------------------------------------


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not available: {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def realtor_sample(shared_dir) -> Path:
    path = shared_dir / "data" / "realtor" / "realtor.parquet"
    if not path.is_file():
        pytest.skip(f"real sample not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def api_batch(shared_dir) -> Path:
    path = shared_dir / "data" / "api" / "batch_group1_tuesday_3.csv"
    if not path.is_file():
        pytest.skip(f"real API batch not available: {path} is absent")
    return path


# --- the real local stack --------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster (token auth on) with its dashboard / Job API on loopback."""
    import ray

    dashboard_port = free_port()
    context = ray.init(
        address="local",
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        configure_logging=False,
    )
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
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    with running_server(command, f"{uri}/health", root / "server.log"):
        yield uri


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings for an isolated stack under a fresh tmp state dir (no servers implied)."""
    return Settings(state_dir=tmp_path / "state", mlflow_experiment=f"test-{tmp_path.name}")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian chromium is not installed (make test installs it as root)")
    return path


# --- the data side: S3-compatible server (moto), data API servers, fault-injecting proxy -----
from data_fixtures import data_api_factory, s3_server, s3_settings  # noqa: E402, F401

# --- the Serve app (champion + running deployment), shared by the Serve and UI tests ---------
from serve_fixtures import champion, serve_app_url, serve_http_port, serve_state_dir  # noqa: E402, F401

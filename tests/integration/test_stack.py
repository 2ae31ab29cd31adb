"""Smoke test of the local stack lifecycle behind `make up` / `make down`.

Starts the real Ray head, Prometheus, MLflow server and data API on their default loopback ports
(the pipeline and Serve steps are covered by their own tests), checks that a second `up`
reuses them, and that `down` stops exactly what `up` started. Default ports already in use (a
`make up` stack running) are the missing part ``ports``: a skip locally, a failure where
RAYESTATE_REQUIRE names it (CI, which starts from a clean machine).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rayestate.localstack import query_prometheus
from rayestate.services import DASHBOARD_PORT, RAY_PORT
from tests.support.parts import missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
BIN = Path(sys.executable).parent
RAYESTATE = str(BIN / "rayestate")
PORTS = {"ray": DASHBOARD_PORT, "prometheus": 9090, "mlflow": 5000, "data-api": 8081}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _without_venv_on_path() -> str:
    """PATH as a user's shell has it when they type `make up`: the venv not activated."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != str(BIN))


def _rayestate(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAYESTATE_STATE_DIR": str(state_dir),
        "PATH": _without_venv_on_path(),
    }
    return subprocess.run([RAYESTATE, *args], env=env, capture_output=True, text=True, timeout=500)


@pytest.fixture
def stack_state(tmp_path):
    busy = [name for name, port in {**PORTS, "gcs": RAY_PORT}.items() if _port_open(port)]
    if busy:
        missing("ports", f"default ports already in use by another stack: {busy}")
    state = tmp_path / "state"
    yield state
    _rayestate(state, "down")


def test_up_is_idempotent_and_down_stops_what_up_started(stack_state):
    first = _rayestate(stack_state, "up", "--no-pipeline", "--no-serve")
    assert first.returncode == 0, first.stdout + first.stderr
    for name, port in PORTS.items():
        assert _port_open(port), f"{name} is not listening on 127.0.0.1:{port}"
    # Every URL is printed, and the job API refuses callers without the token.
    for url in ("http://127.0.0.1:8265", "http://127.0.0.1:9090", "http://127.0.0.1:5000", "http://127.0.0.1:8081"):
        assert url in first.stdout
    assert httpx.get("http://127.0.0.1:8265/api/jobs/", timeout=5).status_code == 401
    # The dashboard was pointed at the stack's Prometheus, which scrapes the head through Ray's SD file.
    token = {"Authorization": f"Bearer {(Path.home() / '.ray' / 'auth_token').read_text().strip()}"}
    health = httpx.get("http://127.0.0.1:8265/api/prometheus_health", headers=token, timeout=10).json()
    assert health["result"], health
    deadline = time.monotonic() + 90
    while not query_prometheus("http://127.0.0.1:9090", 'up{job="ray"} == 1') and time.monotonic() < deadline:
        time.sleep(2)
    assert query_prometheus("http://127.0.0.1:9090", 'up{job="ray"} == 1'), "Prometheus scrapes no Ray target"
    assert (Path.home() / ".ray" / "auth_token").stat().st_mode & 0o077 == 0
    # A job's `python` is this venv's, whatever the caller's PATH had first (the pipeline's entrypoint).
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8265", "--",
         "python", "-c", "import sys, pandas; print('prefix=' + sys.prefix)"],
        env={**os.environ, "RAY_AUTH_MODE": "token", "PATH": _without_venv_on_path()}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 0 and f"prefix={sys.prefix}" in job.stdout, job.stdout[-2000:] + job.stderr[-2000:]

    second = _rayestate(stack_state, "up", "--no-pipeline", "--no-serve")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("(reused)") == len(PORTS)

    status = _rayestate(stack_state, "status")
    assert all(f"{name:9} running" in status.stdout for name in PORTS), status.stdout

    down = _rayestate(stack_state, "down")
    assert down.returncode == 0, down.stderr
    for name, port in PORTS.items():
        assert not _port_open(port), f"{name} still listening on {port} after down"
    again = _rayestate(stack_state, "down")
    assert "nothing that `make up` started is running" in again.stdout

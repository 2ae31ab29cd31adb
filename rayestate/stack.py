"""The local stack behind `make up` / `make down`: Ray head, MLflow, data API, Serve, UI.

Each service is a background process this module starts, health-checks and records in
``<state_dir>/stack.json``; `up` reuses a service that already answers and `down` stops
only the processes that an `up` started (by process group), so a Ray cluster or MLflow
server the user runs themselves is left alone. Everything binds to loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from rayestate.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_PORT = 6379
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
TOKEN_PATH = Path.home() / ".ray" / "auth_token"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


# --- Ray token ----------------------------------------------------------------------


def ensure_ray_token() -> str:
    """Make sure the local cluster token exists and only its owner can read it."""
    if not os.environ.get("RAY_AUTH_TOKEN") and not TOKEN_PATH.exists():
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True)
    if TOKEN_PATH.exists():
        TOKEN_PATH.chmod(0o600)
    return os.environ.get("RAY_AUTH_TOKEN") or TOKEN_PATH.read_text().strip()


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment for Ray processes: token auth on, plus every RAYESTATE_* setting.

    This interpreter's bin dir goes first on PATH: a Ray Job's entrypoint (`python -m
    ray_jobs.pipeline`) runs in a shell under the head, and must find this venv's python, not
    whatever `python` the user's shell had first (the venv is seldom activated for `make up`).
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RAY_AUTH_MODE"] = "token"
    env.update(settings_env(settings))
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as RAYESTATE_* variables, so jobs and replicas see the same configuration."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"RAYESTATE_{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- services -----------------------------------------------------------------------


@dataclass
class Service:
    name: str
    url: str
    health_url: str
    argv: list[str]
    ready_timeout: float = 120.0
    headers: Callable[[], dict] | None = None

    def healthy(self) -> bool:
        try:
            headers = self.headers() if self.headers else {}
            return httpx.get(self.health_url, timeout=2, headers=headers).status_code < 500
        except httpx.HTTPError:
            return False


def services(settings: Settings) -> list[Service]:
    host = settings.bind_host
    state = settings.state_dir
    mlflow_dir = state / "mlflow"
    bearer = lambda: {"Authorization": f"Bearer {ensure_ray_token()}"}  # noqa: E731
    return [
        Service(
            "ray",
            f"http://{host}:{DASHBOARD_PORT}",
            f"http://{host}:{DASHBOARD_PORT}/api/version",
            [
                str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
                "--port", str(RAY_PORT),
                # Ray's fixed default agent port (52365) clashes with any other cluster on the machine.
                "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-host", host, "--dashboard-port", str(DASHBOARD_PORT),
                "--temp-dir", str(Path("/tmp") / f"ray-{os.getuid()}"),
            ],
            headers=bearer,
        ),
        Service(
            "mlflow",
            f"http://{host}:{settings.mlflow_port}",
            f"http://{host}:{settings.mlflow_port}/health",
            [
                str(BIN / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(mlflow_dir / "artifacts"),
                "--host", host, "--port", str(settings.mlflow_port), "--workers", "1",
            ],
        ),
        Service(
            "data-api",
            f"http://{host}:{settings.data_api_port}",
            f"http://{host}:{settings.data_api_port}/health",
            # Uniform random batches give the first model a realistic view of the market; `--mode course`
            # reproduces the course API's deliberately shifted slices.
            [str(BIN / "rayestate"), "data-api", "--host", host, "--port", str(settings.data_api_port), "--mode", "random"],
        ),
    ]  # fmt: skip


def ui_service(settings: Settings) -> Service:
    host = settings.bind_host
    return Service(
        "ui",
        f"http://{host}:{settings.ui_port}",
        f"http://{host}:{settings.ui_port}/_stcore/health",
        [
            str(BIN / "streamlit"), "run", str(REPO / "ui" / "app.py"),
            "--server.address", host, "--server.port", str(settings.ui_port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        ],
    )  # fmt: skip


# --- process bookkeeping --------------------------------------------------------------


def _record_path(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def load_record(settings: Settings) -> dict:
    path = _record_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def save_record(settings: Settings, record: dict) -> None:
    path = _record_path(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def start_service(settings: Settings, service: Service, env: dict[str, str]) -> int | None:
    """Start service unless it already answers; returns the pid started (None if reused)."""
    if service.healthy():
        say(f"{service.name}: already running at {service.url} (reused)")
        return None
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{service.name}.log"
    say(f"{service.name}: starting (log: {log_path})")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            service.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
    deadline = time.monotonic() + service.ready_timeout
    while not service.healthy():
        if process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with code {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            _kill_group(process.pid)
            raise RuntimeError(f"{service.name} did not become healthy in {service.ready_timeout:.0f}s; see {log_path}")
        time.sleep(0.5)
    say(f"{service.name}: up at {service.url}")
    return process.pid


def _kill_group(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the process group, then SIGKILL after timeout. True if anything was running."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_recorded(settings: Settings) -> list[str]:
    """Stop, in reverse start order, every process recorded by `up`; returns their names."""
    record = load_record(settings)
    stopped = []
    for name, pid in reversed(list(record.get("started", {}).items())):
        if name == "serve":
            _shutdown_serve(settings)
        elif _kill_group(pid):
            stopped.append(name)
            say(f"{name}: stopped")
    save_record(settings, {"started": {}})
    return stopped


def _shutdown_serve(settings: Settings) -> None:
    result = subprocess.run(
        [str(BIN / "serve"), "shutdown", "-y", "-a", f"http://{settings.bind_host}:{DASHBOARD_PORT}"],
        env=ray_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    say("serve: shut down" if result.returncode == 0 else f"serve: shutdown failed: {result.stderr.strip()[-300:]}")

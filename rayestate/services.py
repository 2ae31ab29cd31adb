"""The local stack behind `make up` / `make down`: Ray head, Prometheus, MLflow, data API, Serve, UI.

Each service is a background process started with the local-stack toolkit
(:mod:`rayestate.localstack`), health-checked and recorded in ``<state_dir>/stack.json``; `up`
reuses a service that already answers and `down` stops only the processes that an `up` started
(by process group), so a Ray cluster or MLflow server the user runs themselves is left alone.
Everything binds to ``settings.bind_host`` (loopback by default).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from rayestate import localstack
from rayestate.settings import Settings

RAY_PORT = 6379
DASHBOARD_PORT = 8265


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


@dataclass
class Service:
    name: str
    url: str
    health_url: str
    argv: list[str]
    ready_timeout: float = 120.0
    headers: Callable[[], dict] | None = None
    prepare: Callable[[], None] | None = None  # run before a start (e.g. write a config file)

    def healthy(self) -> bool:
        try:
            headers = self.headers() if self.headers else {}
            return httpx.get(self.health_url, timeout=2, headers=headers).status_code < 500
        except httpx.HTTPError:
            return False


def ray_temp_dir() -> Path:
    """The local head's temp dir (sessions, logs, Ray's Prometheus service-discovery file)."""
    return Path("/tmp") / f"ray-{os.getuid()}"


def prometheus_server(settings: Settings) -> localstack.PrometheusServer:
    """Prometheus on bind_host:prometheus_port, data under <state_dir>/prometheus, scraping the local head."""
    return localstack.PrometheusServer(
        settings.state_dir / "prometheus", localstack.ray_sd_file(ray_temp_dir()),
        host=settings.bind_host, port=settings.prometheus_port,
    )  # fmt: skip


def services(settings: Settings) -> list[Service]:
    """Ray head, Prometheus, MLflow and the data API, in start order."""
    host = settings.bind_host
    bearer = lambda: {"Authorization": f"Bearer {localstack.ensure_ray_token()}"}  # noqa: E731
    mlflow = localstack.MlflowServer(settings.state_dir / "mlflow", host=host, port=settings.mlflow_port)
    prometheus = prometheus_server(settings)
    return [
        Service(
            "ray",
            f"http://{host}:{DASHBOARD_PORT}",
            f"http://{host}:{DASHBOARD_PORT}/api/version",
            localstack.ray_head_command(host=host, port=RAY_PORT, dashboard_port=DASHBOARD_PORT, temp_dir=ray_temp_dir()),
            headers=bearer,
        ),
        # After Ray, whose dashboard writes the service-discovery file Prometheus reads.
        Service(
            "prometheus", prometheus.uri, f"{prometheus.uri}{prometheus.health_path}", prometheus.command(),
            prepare=prometheus.prepare,
        ),
        Service("mlflow", mlflow.uri, f"{mlflow.uri}/health", mlflow.command()),
        Service(
            "data-api",
            f"http://{host}:{settings.data_api_port}",
            f"http://{host}:{settings.data_api_port}/health",
            # Uniform random batches give the first model a realistic view of the market; `--mode course`
            # reproduces the course API's deliberately shifted slices.
            [str(localstack.BIN / "rayestate"), "data-api", "--host", host, "--port", str(settings.data_api_port),
             "--mode", "random"],
        ),
    ]  # fmt: skip


def ui_service(settings: Settings) -> Service:
    host = settings.bind_host
    return Service(
        "ui",
        f"http://{host}:{settings.ui_port}",
        f"http://{host}:{settings.ui_port}/_stcore/health",
        [
            str(localstack.BIN / "streamlit"), "run", str(localstack.REPO / "ui" / "app.py"),
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
    log_path = settings.state_dir / "logs" / f"{service.name}.log"
    say(f"{service.name}: starting (log: {log_path})")
    if service.prepare:
        service.prepare()
    process = localstack.start_process(service.argv, log_path, env=env)
    deadline = time.monotonic() + service.ready_timeout
    while not service.healthy():
        if process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with code {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            localstack.kill_group(process.pid)
            raise RuntimeError(f"{service.name} did not become healthy in {service.ready_timeout:.0f}s; see {log_path}")
        time.sleep(0.5)
    say(f"{service.name}: up at {service.url}")
    return process.pid


def deploy_serve(settings: Settings) -> dict:
    """Deploy serve_app/serve_config.yaml (its args from these settings) and wait until it is ready."""
    config = localstack.adapt_serve_config(
        localstack.load_serve_config(), port=urlparse(settings.api_url).port,
        args={"mlflow_tracking_uri": settings.mlflow_tracking_uri, "state_dir": str(settings.state_dir)},
    )  # fmt: skip
    say(f"serve: deploying {localstack.SERVE_CONFIG.relative_to(localstack.REPO)}")
    localstack.deploy_serve(settings.ray_dashboard_url, config)
    return localstack.wait_ready(settings.api_url, timeout=300)


def stop_recorded(settings: Settings) -> list[str]:
    """Stop, in reverse start order, every process recorded by `up`; returns their names."""
    record = load_record(settings)
    stopped = []
    for name, pid in reversed(list(record.get("started", {}).items())):
        if name == "serve":
            _shutdown_serve(settings)
        elif localstack.kill_group(pid):
            stopped.append(name)
            say(f"{name}: stopped")
    if settings.serve_ingress == "haproxy" and localstack.stop_haproxy(localstack.haproxy_runtime_dir()):
        stopped.append("haproxy")
        say("haproxy: stopped")
    save_record(settings, {"started": {}})
    return stopped


def _shutdown_serve(settings: Settings) -> None:
    try:
        localstack.delete_serve_apps(settings.ray_dashboard_url)
        say("serve: shut down")
    except Exception as exc:  # the cluster may already be gone; say so and go on stopping the rest
        say(f"serve: shutdown failed: {type(exc).__name__}: {str(exc)[-300:]}")

"""Deploy serve_config.yaml the way `serve deploy` does, with per-environment overrides.

`make up` can simply run ``serve deploy serve_app/serve_config.yaml``; tests and the benchmark
need the same file with a different MLflow URI, HTTP port or CPU reservations, so this module
loads it, applies those overrides and sends it to the dashboard's Serve REST API (the same
endpoint the CLI uses, with the Ray auth token).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx
import yaml

SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")


def load_config(path: Path = SERVE_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


def adapt_config(
    config: dict,
    *,
    port: int | None = None,
    args: dict | None = None,
    num_cpus: float | None = None,
    reload_poll_s: float | None = None,
    extra_apps: dict[str, dict] | None = None,
) -> dict:
    """A copy of a Serve config with environment-specific values replaced.

    ``args`` update the first application's builder args; ``extra_apps`` adds copies of that
    application under ``/<name>`` with their own args (e.g. pointed at another MLflow).
    """
    config = copy.deepcopy(config)
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    base = config["applications"][0]
    base.setdefault("args", {}).update(args or {})
    for deployment in base.get("deployments", []):
        if num_cpus is not None:
            deployment.setdefault("ray_actor_options", {})["num_cpus"] = num_cpus
        if reload_poll_s is not None and "reload_poll_s" in deployment.get("user_config", {}):
            deployment["user_config"]["reload_poll_s"] = reload_poll_s
    for name, overrides in (extra_apps or {}).items():
        extra = copy.deepcopy(base)
        extra.update(name=name, route_prefix=f"/{name}")
        extra["args"].update(overrides)
        config["applications"].append(extra)
    return config


def deploy_config(dashboard_url: str, config: dict) -> None:
    """Apply a whole Serve config (apps not in it are removed), like `serve deploy`."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).deploy_applications(config)


def wait_ready(url: str, *, timeout: float = 240.0) -> dict:
    """Poll GET {url}/ready until it answers 200; returns its body."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/ready", timeout=15)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1.0)
    raise TimeoutError(f"{url}/ready did not answer 200 within {timeout}s (last: {last})")

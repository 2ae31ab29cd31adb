"""Session fixtures for the Serve app: a registered champion and the running application.

Imported by conftest.py so every test module (the Serve tests, the UI tests) shares one
deployment on the session Ray cluster. The app is deployed exactly as `serve deploy` does it
(the dashboard's REST API with serve_config.yaml); the only changes for tests are the tracking
URI, the HTTP port, the model name, the state dir, short poll and inference-log intervals and
near-zero CPU reservations, so the shared 2-CPU test cluster keeps its CPUs for the other tests'
Ray tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from serve_app.deploy import adapt_config, deploy_config, load_config, wait_ready

TEST_MODEL_NAME = "rayestate-price-test"
#: Tests reserve almost no Ray CPUs: the 2-CPU session cluster is shared with other tests' tasks.
TEST_NUM_CPUS = 0.01


@dataclass(frozen=True)
class Champion:
    tracking_uri: str
    name: str
    version: str
    alias: str = "champion"


def serve_test_config(
    champion: Champion, *, port: int, state_dir: Path, poll_s: float = 2.0, extra_apps: dict | None = None
) -> dict:
    """serve_config.yaml adapted for the test stack (see module docstring for what changes)."""
    args = {
        "mlflow_tracking_uri": champion.tracking_uri,
        "model_name": champion.name,
        "model_load_timeout_s": 60,
        "state_dir": str(state_dir),
        "inference_log_flush_s": 1,
    }
    return adapt_config(
        load_config(), port=port, args=args, num_cpus=TEST_NUM_CPUS, reload_poll_s=poll_s, extra_apps=extra_apps
    )


@pytest.fixture(scope="session")
def champion(mlflow_server) -> Champion:
    """A small champion trained on synthetic listings, registered with alias `champion`."""
    from serve_app.sample_model import register_champion, synthetic_listings, train_price_model

    frame = synthetic_listings(3000, seed=1)
    version = register_champion(mlflow_server, train_price_model(frame), frame, name=TEST_MODEL_NAME)
    return Champion(tracking_uri=mlflow_server, name=TEST_MODEL_NAME, version=version)


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """Serve's HTTP proxy on a free loopback port (one Serve instance per session cluster)."""
    from conftest import free_port
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@pytest.fixture(scope="session")
def serve_state_dir(tmp_path_factory) -> Path:
    """The Serve app's state dir (its data store: drift reports are read from here)."""
    return tmp_path_factory.mktemp("serve-state")


@pytest.fixture(scope="session")
def serve_app_url(serve_http_port, dashboard_url, champion, serve_state_dir) -> str:
    """Base URL of the running Ray Estate Serve app, serving `champion` from the test MLflow."""
    deploy_config(dashboard_url, serve_test_config(champion, port=serve_http_port, state_dir=serve_state_dir))
    url = f"http://127.0.0.1:{serve_http_port}"
    wait_ready(url)
    return url

"""The Serve app as the tests deploy it: serve_config.yaml with the test stack's values.

The app is deployed exactly as `make up` does it (rayestate.localstack: the dashboard's REST API
with serve_config.yaml); the only changes for tests are the tracking URI, the HTTP port, the model
name, the state dir, short poll and inference-log intervals and near-zero CPU reservations, so the
shared 2-CPU test cluster keeps its CPUs for the other tests' Ray tasks.
"""

from __future__ import annotations

from pathlib import Path

from rayestate.localstack import adapt_serve_config, load_serve_config
from tests.support.champion import Champion

#: Tests reserve almost no Ray CPUs: the 2-CPU session cluster is shared with other tests' tasks.
TEST_NUM_CPUS = 0.01


def serve_test_config(
    champion: Champion, *, port: int, state_dir: Path, poll_s: float = 2.0, extra_apps: dict | None = None
) -> dict:
    """serve_config.yaml adapted for the test stack (see the module docstring for what changes)."""
    args = {
        "mlflow_tracking_uri": champion.tracking_uri,
        "model_name": champion.name,
        "model_load_timeout_s": 60,
        "state_dir": str(state_dir),
        "inference_log_flush_s": 1,
    }
    return adapt_serve_config(
        load_serve_config(), port=port, args=args, num_cpus=TEST_NUM_CPUS, reload_poll_s=poll_s, extra_apps=extra_apps
    )

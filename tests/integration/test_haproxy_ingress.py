"""The HAProxy ingress (``RAYESTATE_SERVE_INGRESS=haproxy``, `make up`'s default) on a Ray cluster of its own.

Serve reads the variables when its controller starts, so the session's shared cluster (Serve's
Python proxy) cannot show it: this test starts a one-node cluster the way `make up` starts one
(localstack.haproxy_ingress_env under ray_process_env), deploys the real app on the test champion
and prices a listing through HAProxy. What it pins down is the exposure the README states:
nothing listens beyond loopback. The API's port and the replicas' own HTTP ports follow Serve's
host; HAProxy's stats page and Prometheus exporter, which Ray 2.60 binds on every interface, are
rebound to 127.0.0.1 by rayestate/haproxy_loopback.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from rayestate import localstack
from tests.support.load import LISTING
from tests.support.serve import serve_test_config

#: Ray 2.60's range for the replicas' own HTTP servers (RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT).
REPLICA_HTTP_PORTS = range(30000, 31001)
LISTEN = re.compile(r"^LISTEN\s+\S+\s+\S+\s+(\S+):(\d+)\s.*users:\(\(\"([^\"]+)\",pid=(\d+)")


#: Ray's node processes (as `ss` names them: 15 characters), which serve no HTTP API.
RAY_AGENTS = ("ray::RuntimeEnv", "ray::DashboardA", "raylet", "gcs_server")


def listeners() -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP listener on the machine (`ss`, from iproute2)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        match = LISTEN.match(line.strip())
        if match:
            found.append((match[1].strip("[]"), int(match[2]), match[3]))
    return found


def haproxy_processes(runtime_dir: Path) -> list[str]:
    """HAProxy processes running on a config under runtime_dir."""
    out = subprocess.run(["pgrep", "-af", "haproxy"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(runtime_dir) in line]


def test_the_haproxy_ingress_prices_through_haproxy_and_keeps_the_api_on_loopback(champion, tmp_path):
    runtime_dir = Path(tempfile.mkdtemp(prefix="rehap-"))  # short: Ray puts unix sockets 70 characters below it
    ports = {name: localstack.free_port() for name in ("stats_port", "metrics_port", "fallback_port")}
    env = {**os.environ, **localstack.haproxy_ingress_env(runtime_dir, **ports)}
    api_port = localstack.free_port()
    try:
        with localstack.LocalCluster(
            tmp_path / "cluster", head_cpus=1, worker_cpus=(), env=env, haproxy_dir=runtime_dir
        ) as cluster:
            config = serve_test_config(champion, port=api_port, state_dir=tmp_path / "state")
            localstack.deploy_serve(cluster.dashboard_url, config)
            url = f"http://{localstack.LOOPBACK}:{api_port}"
            localstack.wait_ready(url, timeout=300)

            answer = httpx.post(f"{url}/predict", json=LISTING, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["price"] > 0 and answer.json()["model_version"] == champion.version

            bound = listeners()
            on_api_port = {(address, name) for address, port, name in bound if port == api_port}
            # Ray's own agents listen on random ports of the node's other addresses too, and one may draw the
            # API's port number there (CI saw ray::RuntimeEnvAgent on 192.0.2.2): that one serves no API.
            serving = {(address, name) for address, name in on_api_port if not name.startswith(RAY_AGENTS)}
            assert serving == {("127.0.0.1", "haproxy")}, on_api_port  # HAProxy answers, on loopback only
            replica_http = [(address, port) for address, port, name in bound if port in REPLICA_HTTP_PORTS]
            assert replica_http, "no replica HTTP server (direct ingress) is listening"
            assert {address for address, _ in replica_http} == {"127.0.0.1"}, replica_http
            on_haproxy = {(address, port) for address, port, name in bound if name == "haproxy"}
            expected = {("127.0.0.1", port) for port in (api_port, ports["stats_port"], ports["metrics_port"])}
            assert on_haproxy == expected, on_haproxy  # stats and exporter too: loopback only
            stats = httpx.get(f"http://{localstack.LOOPBACK}:{ports['stats_port']}/stats", timeout=30)
            assert stats.status_code == 200 and "HAProxy" in stats.text
            exporter = httpx.get(f"http://{localstack.LOOPBACK}:{ports['metrics_port']}/metrics", timeout=30)
            assert exporter.status_code == 200 and "haproxy_" in exporter.text
            assert haproxy_processes(runtime_dir)
        # Stopping the cluster (as `make down` stops the head's process group) stops HAProxy too.
        deadline = time.monotonic() + 30
        while haproxy_processes(runtime_dir) and time.monotonic() < deadline:
            time.sleep(1)
        assert not haproxy_processes(runtime_dir)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)

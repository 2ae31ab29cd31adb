"""Keep the generated parts of kuberay/ identical to their sources.

* RayService.spec.serveConfigV2 (kuberay/ray-service.rayestate.yaml) <- serve_app/serve_config.yaml,
  the Serve config `serve build` writes and the local stack deploys. Identical except for
  what only holds on one machine (kubernetes_serve_config):
    - http_options.host -> 0.0.0.0: a pod's proxy must be reachable from its Service
      (the local stack binds 127.0.0.1);
    - proxy_location -> EveryNode: KubeRay marks a worker pod Ready (and routes Service
      traffic to it) only while a Serve proxy on it answers /-/healthz;
    - application `args` that kuberay/config.yaml sets as RAYESTATE_<ARG> are dropped, so
      the cluster's ConfigMap decides them (args override environment variables).
* RayCronJob.spec.jobTemplate (kuberay/ray-cronjob.pipeline.yaml) <- the spec of
  kuberay/ray-job.pipeline.yaml, so a scheduled run is exactly a manual run; and the
  fallback's long-lived RayCluster (kuberay/without-raycronjob/ray-cluster.pipeline.yaml)
  <- that RayJob's rayClusterSpec.

    python scripts/sync_serve_config.py          # rewrite the generated parts
    python scripts/sync_serve_config.py --check  # exit 1 and say what differs (CI, tests)
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SERVE_CONFIG = REPO / "serve_app" / "serve_config.yaml"
RAY_SERVICE = REPO / "kuberay" / "ray-service.rayestate.yaml"
RAY_JOB = REPO / "kuberay" / "ray-job.pipeline.yaml"
RAY_CRONJOB = REPO / "kuberay" / "ray-cronjob.pipeline.yaml"
RAY_CLUSTER = REPO / "kuberay" / "without-raycronjob" / "ray-cluster.pipeline.yaml"
CONFIG_MAP = REPO / "kuberay" / "config.yaml"
POD_HOST = "0.0.0.0"  # a pod's Serve proxy must be reachable from its Service
BLOCK_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: \|[-+]?\s*$")


def cluster_settings() -> set[str]:
    """RAYESTATE_* variables the rayestate-config ConfigMap sets in the cluster."""
    return set(yaml.safe_load(CONFIG_MAP.read_text())["data"])


def kubernetes_serve_config(local: dict, cluster_env: set[str] | None = None) -> dict:
    """The Serve config as the RayService must carry it (see the module docstring)."""
    cluster_env = cluster_settings() if cluster_env is None else cluster_env
    config = copy.deepcopy(local)
    http_options = config.get("http_options")
    if isinstance(http_options, dict) and "host" in http_options:
        http_options["host"] = POD_HOST
    if "proxy_location" in config:
        config["proxy_location"] = "EveryNode"
    for app in config.get("applications") or []:
        args = app.get("args")
        if isinstance(args, dict):
            app["args"] = {k: v for k, v in args.items() if f"RAYESTATE_{k.upper()}" not in cluster_env}
    return config


def load_serve_config(path: Path | None = None) -> dict:
    path = path or SERVE_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: generate it with `serve build serve_app.app:app -o {path}`")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not config.get("applications"):
        raise ValueError(f"{path}: not a Serve config (no applications)")
    return config


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def with_serve_config(ray_service_text: str, config: dict) -> str:
    """ray_service_text with its serveConfigV2 block scalar replaced, comments elsewhere kept."""
    lines = ray_service_text.splitlines()
    starts = [i for i, line in enumerate(lines) if BLOCK_KEY.match(line)]
    if len(starts) != 1:
        raise ValueError(f"expected exactly one `serveConfigV2: |` block, found {len(starts)}")
    start = starts[0]
    indent = len(BLOCK_KEY.match(lines[start])["indent"])
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    body = [" " * (indent + 2) + line if line else "" for line in dump(config).splitlines()]
    lines[start:end] = [" " * indent + "serveConfigV2: |", *body]
    return "\n".join(lines) + "\n"


def embedded_serve_config(ray_service_text: str) -> dict:
    docs = [d for d in yaml.safe_load_all(ray_service_text) if d]
    return yaml.safe_load(docs[0]["spec"]["serveConfigV2"])


def leading_comments(text: str) -> str:
    head = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            head.append(line)
        else:
            break
    return "\n".join(head).rstrip() + "\n"


def with_generated(text: str, path: tuple[str, ...], value: dict) -> str:
    """A single-object manifest with the field at `path` replaced; header comment and the rest kept."""
    obj = yaml.safe_load(text)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = copy.deepcopy(value)
    return leading_comments(text) + dump(obj)


def expected_files() -> dict[Path, str]:
    ray_service = with_serve_config(RAY_SERVICE.read_text(), kubernetes_serve_config(load_serve_config()))
    job_spec = yaml.safe_load(RAY_JOB.read_text())["spec"]
    return {
        RAY_SERVICE: ray_service,
        RAY_CRONJOB: with_generated(RAY_CRONJOB.read_text(), ("spec", "jobTemplate"), job_spec),
        RAY_CLUSTER: with_generated(RAY_CLUSTER.read_text(), ("spec",), job_spec["rayClusterSpec"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    stale = [path for path, text in expected_files().items() if path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path.relative_to(REPO)} is out of date: run python scripts/sync_serve_config.py")
        else:
            path.write_text(expected_files()[path])
            print(f"updated {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

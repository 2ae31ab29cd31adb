"""Benchmark: the Ray Serve app against the original single-process FastAPI + uvicorn design.

One run starts a throwaway stack on loopback: its own MLflow server with a champion trained on
the real sample (synthetic listings when ../shared is absent), its own Ray cluster running the
Serve app from serve_app/serve_config.yaml, and the baseline (benchmarks/serve_baseline.py)
serving the same champion in-process. wrk drives both with the same closed-loop load (each
connection sends its next request when the last one is answered) at several concurrencies,
alternating which system goes first, and the script prints ONE JSON object:

    .venv/bin/python benchmarks/serve_bench.py [--duration 10] [--rounds 2] [--concurrency 1,4,16]

Keys: predict.ratio / explain.ratio (Serve ÷ baseline requests/s at concurrency 16),
batch_1000_p50_ms (Serve /predict/batch with 1,000 listings), failed_requests (Serve), and
per-concurrency requests/s, p50 and p99 for both systems. The machine may be shared: load
averages before and after are part of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLE = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared")) / "data" / "realtor" / "realtor.parquet"
MODEL_NAME = "rayestate-price-bench"
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
HEADLINE_CONCURRENCY = 16

sys.path.insert(0, str(REPO))
from haproxy_ingress import haproxy_ingress_env  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def listings(rows: int) -> tuple[pd.DataFrame, str]:
    """Listings with price: the real sample when available, else synthetic ones."""
    if SAMPLE.is_file():
        frame = pd.read_parquet(SAMPLE)
        frame = frame[frame["price"].between(10_000, 50_000_000)].reset_index(drop=True)
        return frame.sample(frac=1.0, random_state=0).reset_index(drop=True).head(rows), "realtor sample"
    from serve_app.sample_model import synthetic_listings

    return synthetic_listings(rows, seed=0), "synthetic"


def request_bodies(frame: pd.DataFrame) -> list[dict]:
    """Listings as API bodies; rows the API would reject (e.g. missing beds) are skipped."""
    from pydantic import ValidationError

    from rayestate.schema import Listing

    bodies = []
    for row in frame.drop(columns=["price"]).to_dict("records"):
        clean = {k: v for k, v in row.items() if v is not None and v == v}
        if "zip_code" in clean:
            clean["zip_code"] = f"{int(clean['zip_code']):05d}"
        try:
            bodies.append(Listing.model_validate(clean).model_dump(exclude_none=True))
        except ValidationError:
            continue
    return bodies


def wrk(url: str, bodies: Path, concurrency: int, duration: int) -> dict:
    command = [
        shutil.which("wrk") or "wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{duration}s",
        "--timeout", "30s", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WRK_BODIES": str(bodies)})
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    raw = json.loads(line[len("WRK_JSON ") :])
    failed = raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "failed": failed,
    }


def drain(url: str, bodies: Path) -> None:
    """Wait until requests a finished wrk run left in flight are answered, so runs don't overlap."""
    body = bodies.read_text().splitlines()[0]
    httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=300)


def summarize(runs: list[dict]) -> dict:
    return {
        "rps": round(statistics.mean(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
        "requests": sum(r["requests"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per measurement")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated connection counts")
    parser.add_argument("--train-rows", type=int, default=30_000)
    parser.add_argument(
        "--ingress", choices=("proxy", "haproxy"), default="proxy", help="Serve's Python proxy or HAProxy"
    )
    parser.add_argument("--ray-env", action="append", default=[], help="extra KEY=VALUE for the Ray cluster")
    parser.add_argument("--serve-config", type=Path, default=REPO / "serve_app" / "serve_config.yaml")
    options = parser.parse_args()
    concurrencies = sorted({int(c) for c in options.concurrency.split(",")} | {HEADLINE_CONCURRENCY})
    report_to, sys.stdout = sys.stdout, sys.stderr  # MLflow and Ray print progress; stdout is the JSON only

    root = Path(tempfile.mkdtemp(prefix="rayestate-serve-bench-"))
    ray_env = {}
    haproxy_dir = Path(tempfile.mkdtemp(prefix="rehap-", dir="/tmp"))  # short: unix socket path limit
    if options.ingress == "haproxy":
        ports = {"stats_port": free_port(), "metrics_port": free_port(), "fallback_port": free_port()}
        ray_env = haproxy_ingress_env(haproxy_dir, **ports)
    ray_env.update(item.split("=", 1) for item in options.ray_env)
    processes: list[subprocess.Popen] = []
    load_before = os.getloadavg()
    try:
        # --- MLflow with a champion -------------------------------------------------------
        mlflow_port = free_port()
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        processes.append(
            start(
                [
                    str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                    "--artifacts-destination", str(root / "artifacts"),
                    "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
                ],
                root / "mlflow.log",
            )
        )  # fmt: skip
        wait_http(f"{tracking_uri}/health", processes[-1], root / "mlflow.log")
        from serve_app.sample_model import register_champion, train_price_model

        frame, source = listings(options.train_rows + 2_000)
        train, held_out = frame.head(options.train_rows), frame.tail(2_000)
        model = train_price_model(train, rounds=200, max_depth=7)
        register_champion(tracking_uri, model, train, name=MODEL_NAME)
        bodies = request_bodies(held_out)
        predict_file = root / "listings.jsonl"
        predict_file.write_text("\n".join(json.dumps(b) for b in bodies[:500]) + "\n")
        batch_file = root / "batch1000.jsonl"
        batch_file.write_text(json.dumps({"listings": bodies[:1000]}) + "\n")

        # --- Ray + the Serve app ----------------------------------------------------------
        os.environ.update(ray_env)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        import ray
        from ray import serve
        from serve_app.deploy import adapt_config, deploy_config, load_config, wait_ready

        dashboard_port = free_port()
        ray.init(
            address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=True,
            dashboard_host="127.0.0.1", dashboard_port=dashboard_port, log_to_driver=False,
        )  # fmt: skip
        serve_port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        config = adapt_config(
            load_config(options.serve_config),
            port=serve_port,
            args={"mlflow_tracking_uri": tracking_uri, "model_name": MODEL_NAME, "state_dir": str(root / "state")},
        )
        deploy_config(f"http://127.0.0.1:{dashboard_port}", config)
        serve_url = f"http://127.0.0.1:{serve_port}"
        wait_ready(serve_url)

        # --- the baseline -----------------------------------------------------------------
        baseline_port = free_port()
        env = {**os.environ, "RAYESTATE_MLFLOW_TRACKING_URI": tracking_uri, "RAYESTATE_MODEL_NAME": MODEL_NAME}
        processes.append(
            start(
                [
                    str(BIN / "uvicorn"), "serve_baseline:app", "--app-dir", str(Path(__file__).parent),
                    "--host", "127.0.0.1", "--port", str(baseline_port), "--log-level", "warning",
                ],
                root / "baseline.log",
                env,
            )
        )  # fmt: skip
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        wait_http(f"{baseline_url}/openapi.json", processes[-1], root / "baseline.log")

        # --- measurements, alternating systems --------------------------------------------
        systems = {"serve": serve_url, "baseline": baseline_url}
        cases = [("predict", "/predict", predict_file, c) for c in concurrencies]
        cases += [("explain", "/explain", predict_file, c) for c in concurrencies]
        cases += [("batch_1000", "/predict/batch", batch_file, 1)]
        for url in systems.values():  # warm-up: first calls, batch queues, caches
            for _, path, bodies_file, _ in cases:
                wrk(url + path, bodies_file, 4, 2)
                drain(url + path, bodies_file)
        runs: dict[tuple, list[dict]] = {}
        for round_index in range(options.rounds):
            for endpoint, path, bodies_file, concurrency in cases:
                order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
                for system in order:
                    result = wrk(systems[system] + path, bodies_file, concurrency, options.duration)
                    drain(systems[system] + path, bodies_file)
                    runs.setdefault((endpoint, concurrency, system), []).append(result)

        report: dict = {
            "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
            "setup": {
                "data": source,
                "train_rows": len(train),
                "trees": 200,
                "max_depth": 7,
                "duration_s": options.duration,
                "rounds": options.rounds,
                "ingress": options.ingress,
                "ray_env": ray_env,
                "serve_config": str(options.serve_config.resolve()).removeprefix(f"{REPO}/"),
            },
        }
        for endpoint in ("predict", "explain"):
            by_concurrency = {}
            for concurrency in concurrencies:
                serve_stats = summarize(runs[(endpoint, concurrency, "serve")])
                base_stats = summarize(runs[(endpoint, concurrency, "baseline")])
                by_concurrency[str(concurrency)] = {
                    "serve": serve_stats,
                    "baseline": base_stats,
                    "ratio": round(serve_stats["rps"] / base_stats["rps"], 3) if base_stats["rps"] else None,
                }
            report[endpoint] = {
                "ratio": by_concurrency[str(HEADLINE_CONCURRENCY)]["ratio"],
                "concurrency": HEADLINE_CONCURRENCY,
                "by_concurrency": by_concurrency,
            }
        batch_serve = summarize(runs[("batch_1000", 1, "serve")])
        batch_base = summarize(runs[("batch_1000", 1, "baseline")])
        report["batch_1000_p50_ms"] = batch_serve["p50_ms"]
        report["batch_1000"] = {"serve": batch_serve, "baseline": batch_base}
        report["failed_requests"] = sum(r["failed"] for key, rs in runs.items() if key[2] == "serve" for r in rs)
        report["baseline_failed_requests"] = sum(
            r["failed"] for key, rs in runs.items() if key[2] == "baseline" for r in rs
        )
        print(json.dumps(report), file=report_to, flush=True)
    finally:
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            for process in reversed(processes):
                stop(process)
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(haproxy_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: the Ray Serve app against the strongest single-box alternative, on the real champion.

Both systems serve the champion the pipeline trains on the real sample with default settings
(benchmarks/real_champion.py) and answer real held-out listings as they appear, missing fields
included (benchmarks/bench_stack.py). The baseline (benchmarks/serve_baseline.py) does the same
work with the same code: validation, features, warnings, response models, inference log, the
model and explainer loaded once; uvicorn runs one worker per core. The baseline explains a bag two
ways, its boosters on threads of their own (as Serve does for a lone listing) or one after
another: a worker computes on its event loop and cannot see requests waiting, so it cannot switch
with load, and at 16 connections the second is often the faster. /explain runs on both baselines
and each concurrency is compared with the faster. wrk drives every system with the same closed-loop load at 1, 4 and 16
connections, each system going first in turn, and the script prints ONE JSON object:

    .venv/bin/python benchmarks/serve_bench.py [--duration 10] [--rounds 2] [--concurrency 1,4,16]

Keys: predict.ratio / explain.ratio (Serve / baseline requests/s at 16 connections), per-concurrency
requests/s, p50, p99 and CPU ms per request for Serve and the baseline (for /explain ``baseline`` is
the faster one, named by ``baseline_explain_bag``; ``baselines`` holds both), extra_cpu_ms_per_request
(what Serve spends beyond the baseline on each request, the part no model change removes),
batch_1000_p50_ms (/predict/batch of 1,000 real listings), explain_p50_ms_c1, floor (GET /health on
both systems at 16 connections: Serve's request path with no model, and the predict/explain ratios
it caps),
predict_one_in_process_ms (one listing through predict_rows, no HTTP, one thread: CPU ms, median
pass over 200 real listings; measured with both systems up and idle, before any load, and again
after the runs as predict_one_in_process_ms_after_load: on 2 vCPUs the replicas' leftover work
inflates the thread's CPU time by up to 2x; predict_one_alone_ms is the same measurement before
Ray and the baseline start, with only the MLflow server idle beside it),
failed_requests, model {trees, max_depth, bag_size}. Load averages before and after are included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import real_champion  # noqa: E402
from benchmarks.bench_stack import (  # noqa: E402
    DEFAULT_INGRESS,
    INGRESSES,
    ServeStack,
    ingress_env,
    model_shape,
    ray_serve_env,
    real_listings,
    write_bodies,
)
from benchmarks.serve_baseline import EXPLAIN_BAG_MODES  # noqa: E402
from rayestate import localstack  # noqa: E402
from rayestate.schema import Listing  # noqa: E402
from serve_app.inference import predict_rows  # noqa: E402

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
#: Each of the baseline's ways to explain a bag, and its system's name in the report.
BASELINES = {mode: "baseline" if mode == "threads" else f"baseline_{mode}" for mode in EXPLAIN_BAG_MODES}
HEADLINE_CONCURRENCY = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- measuring -----------------------------------------------------------------------------------


def wrk(url: str, bodies: Path | None, concurrency: int, duration: int) -> dict:
    """A closed-loop wrk run: POSTs the bodies in turn, or GETs the URL when there are none."""
    command = [
        shutil.which("wrk") or "wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{duration}s",
        "--timeout", "30s", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "WRK_BODIES": str(bodies or "")}
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    raw = json.loads(line[len("WRK_JSON ") :])
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "failed": raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
    }


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def measured(url: str, bodies: Path | None, concurrency: int, duration: int, processes) -> dict:
    """One wrk run plus the CPU the system's processes (``processes()`` lists them) spent on it, per request."""
    pids = processes()
    before = cpu_seconds(pids)
    result = wrk(url, bodies, concurrency, duration)
    spent = cpu_seconds(pids) - before
    drain(url, bodies)
    return {**result, "cpu_ms_per_request": 1000 * spent / max(result["requests"], 1)}


def drain(url: str, bodies: Path | None) -> None:
    """Wait until requests a finished wrk run left in flight are answered, so runs don't overlap."""
    if bodies is None:
        httpx.get(url, timeout=300)
        return
    body = bodies.read_text().splitlines()[0]
    httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=300)


def summarize(runs: list[dict]) -> dict:
    return {
        "rps": round(statistics.mean(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
        "cpu_ms_per_request": round(statistics.median(r["cpu_ms_per_request"] for r in runs), 2),
        "requests": sum(r["requests"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
    }


def one_listing_ms(model, listings: list[dict], passes: int = 5) -> float:
    """In-process CPU time of predict_rows on one listing (one thread), as a replica runs it: ms.

    Each listing is priced alone, a pass per listing in ``listings``; the median pass is reported.
    The thread's CPU time, not the wall clock: the benchmark's own stack is still up beside it.
    """
    rows = [[Listing.model_validate(listing).to_raw_row()] for listing in listings]
    for row in rows:
        predict_rows(model, row)
    per_pass = []
    for _ in range(passes):
        started = time.thread_time()
        for row in rows:
            predict_rows(model, row)
        per_pass.append((time.thread_time() - started) / len(rows))
    return round(1000 * statistics.median(per_pass), 3)


# --- the run ---------------------------------------------------------------------------------------


def start_baseline(stack: ServeStack, workers: int, explain_bag: str = "threads") -> tuple[str, subprocess.Popen]:
    """The baseline on a free port; ``explain_bag``: how its workers explain a bag (serve_baseline.EXPLAIN_BAG_MODES)."""
    port = localstack.free_port()
    env = {
        **os.environ, "RAYESTATE_MLFLOW_TRACKING_URI": stack.mlflow.uri,
        "RAYESTATE_MODEL_NAME": real_champion.MODEL_NAME,
        "RAYESTATE_STATE_DIR": str(stack.root / f"baseline-state-{explain_bag}"),
        "RAYESTATE_INFERENCE_LOG": str(stack.inference_log), "PYTHONPATH": str(REPO),
        "BASELINE_EXPLAIN_BAG": explain_bag,
    }  # fmt: skip
    command = [
        str(localstack.BIN / "uvicorn"), "serve_baseline:app", "--app-dir", str(Path(__file__).parent),
        "--host", localstack.LOOPBACK, "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    process = localstack.start_process(command, stack.root / "baseline.log", env=env)
    url = f"http://{localstack.LOOPBACK}:{port}"
    localstack.wait_http(f"{url}/openapi.json", timeout=300, process=process)
    return url, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per measurement")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated connection counts")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="baseline uvicorn workers")
    parser.add_argument("--ingress", choices=INGRESSES, default=DEFAULT_INGRESS, help="Serve's proxy or HAProxy")
    parser.add_argument("--ray-env", action="append", default=[], help="extra KEY=VALUE for the Ray cluster")
    parser.add_argument("--serve-config", type=Path, default=localstack.SERVE_CONFIG)
    options = parser.parse_args()
    concurrencies = sorted({int(c) for c in options.concurrency.split(",")} | {HEADLINE_CONCURRENCY})
    report_to, sys.stdout = sys.stdout, sys.stderr  # MLflow and Ray print progress; stdout is the JSON only
    load_before = os.getloadavg()

    bodies, rejected = real_listings()
    baselines: list[subprocess.Popen] = []
    with ingress_env(options.ingress) as ray_env:
        ray_env.update(item.split("=", 1) for item in options.ray_env)
        try:
            one_ms: dict[str, float] = {}

            def measure_alone(model) -> None:
                one_ms["alone"] = one_listing_ms(model, bodies[:200])

            with ServeStack(serve_config=options.serve_config, ray_env=ray_env, before_ray=measure_alone) as stack:
                predict_file = write_bodies(stack.root / "listings.jsonl", bodies[:500])
                batch_file = write_bodies(stack.root / "batch1000.jsonl", [{"listings": bodies[:1000]}])

                # Ray's processes (GCS, raylet, proxy, replicas) are this process's descendants, and so are the
                # baselines: Serve's CPU is everything below this process but the baselines and this driver.
                def serve_processes() -> list[int]:
                    theirs = {pid for process in baselines for pid in descendants(process.pid)}
                    return sorted(set(descendants(os.getpid())) - theirs - {os.getpid()})

                systems = {"serve": (stack.url, serve_processes)}
                for mode in EXPLAIN_BAG_MODES:  # "baseline": threads, as Serve; "baseline_sequential"
                    url, process = start_baseline(stack, options.workers, mode)
                    baselines.append(process)
                    systems[BASELINES[mode]] = (url, lambda pid=process.pid: descendants(pid))
                both = ("serve", "baseline")
                cases = [("predict", "/predict", predict_file, c, both) for c in concurrencies]
                # The bag's threads matter only to explanations: there each baseline runs, and the faster counts.
                cases += [("explain", "/explain", predict_file, c, tuple(systems)) for c in concurrencies]
                cases += [("batch_1000", "/predict/batch", batch_file, 1, both)]
                # Each system's floor: GET /health answers from the ingress alone (no model, no second hop).
                cases += [("health", "/health", None, HEADLINE_CONCURRENCY, both)]
                one_ms_idle = one_listing_ms(stack.model, bodies[:200])
                for _, path, bodies_file, _, names in cases:  # warm-up: first calls, batch queues, caches
                    for name in names:
                        wrk(systems[name][0] + path, bodies_file, 4, 2)
                        drain(systems[name][0] + path, bodies_file)
                runs: dict[tuple, list[dict]] = {}
                for round_index in range(options.rounds):
                    for endpoint, path, bodies_file, concurrency, names in cases:
                        turn = round_index % len(names)  # each system goes first in turn
                        for system in names[turn:] + names[:turn]:
                            url, processes = systems[system]
                            result = measured(url + path, bodies_file, concurrency, options.duration, processes)
                            runs.setdefault((endpoint, concurrency, system), []).append(result)
                one_ms.update(idle=one_ms_idle, after_load=one_listing_ms(stack.model, bodies[:200]))
                report = _report(runs, concurrencies, stack, options, one_ms, rejected, len(bodies), load_before)
            print(json.dumps(report), file=report_to, flush=True)
        finally:
            for process in baselines:
                localstack.stop_process(process)


def compare(runs: dict[tuple, list[dict]], endpoint: str, concurrency: int) -> dict:
    """Serve against the faster of the baselines measured on ``endpoint`` at ``concurrency``.

    ``runs``: per (endpoint, concurrency, system name), that system's measured runs.
    """
    serve = summarize(runs[(endpoint, concurrency, "serve")])
    baselines = {
        mode: summarize(runs[(endpoint, concurrency, name)])
        for mode, name in BASELINES.items()
        if (endpoint, concurrency, name) in runs
    }
    strongest = max(baselines, key=lambda mode: baselines[mode]["rps"])
    baseline = baselines[strongest]
    return {
        "serve": serve,
        "baseline": baseline,
        "baseline_explain_bag": strongest,
        "baselines": baselines,
        "ratio": round(serve["rps"] / baseline["rps"], 3) if baseline["rps"] else None,
        "extra_cpu_ms_per_request": round(serve["cpu_ms_per_request"] - baseline["cpu_ms_per_request"], 2),
    }


def _report(runs, concurrencies, stack, options, one_ms, rejected, listings, load_before) -> dict:
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "model": {**model_shape(stack.model), "test_metrics": stack.champion.get("metrics", {})},
        "setup": {
            "data": "real sample rows 80,000-99,999 as they appear (missing fields left out)",
            "listings_rejected_by_the_api": rejected,
            "listings_sent": listings,
            "duration_s": options.duration,
            "rounds": options.rounds,
            "baseline_workers": options.workers,
            "ingress": options.ingress,
            "ray_serve_env": ray_serve_env(),
            "serve_config": str(Path(options.serve_config).resolve()).removeprefix(f"{REPO}/"),
        },
    }
    for endpoint in ("predict", "explain"):
        by_concurrency = {}
        for concurrency in concurrencies:
            by_concurrency[str(concurrency)] = compare(runs, endpoint, concurrency)
        report[endpoint] = {
            "ratio": by_concurrency[str(HEADLINE_CONCURRENCY)]["ratio"],
            "concurrency": HEADLINE_CONCURRENCY,
            "by_concurrency": by_concurrency,
        }
    batch_serve = summarize(runs[("batch_1000", 1, "serve")])
    batch_base = summarize(runs[("batch_1000", 1, "baseline")])
    report["batch_1000_p50_ms"] = batch_serve["p50_ms"]
    report["batch_1000"] = {"serve": batch_serve, "baseline": batch_base}
    report["explain_p50_ms_c1"] = (
        report["explain"]["by_concurrency"]["1"]["serve"]["p50_ms"] if 1 in concurrencies else None
    )
    report["floor"] = _floor(runs, report)
    report["predict_one_in_process_ms"] = one_ms["idle"]
    report["predict_one_in_process_ms_after_load"] = one_ms["after_load"]
    report["predict_one_alone_ms"] = one_ms["alone"]
    report["failed_requests"] = sum(r["failed"] for key, rs in runs.items() if key[2] == "serve" for r in rs)
    report["baseline_failed_requests"] = sum(r["failed"] for key, rs in runs.items() if key[2] != "serve" for r in rs)
    return report


def _floor(runs, report) -> dict:
    """What a request costs each system with no model work at all, and the ratios it caps.

    Serve's /health crosses the HTTP proxy and the ingress replica (Serve's request path) but no
    model: its requests/s bound any endpoint's, so against the baseline's /predict and /explain it
    is the highest ratio those endpoints could reach if the model were free.
    """
    serve, baseline = (
        summarize(runs[("health", HEADLINE_CONCURRENCY, "serve")]),
        summarize(runs[("health", HEADLINE_CONCURRENCY, "baseline")]),
    )
    at = str(HEADLINE_CONCURRENCY)
    ceilings = {
        f"{endpoint}_ratio_ceiling": round(serve["rps"] / report[endpoint]["by_concurrency"][at]["baseline"]["rps"], 3)
        for endpoint in ("predict", "explain")
    }
    return {"concurrency": HEADLINE_CONCURRENCY, "serve": serve, "baseline": baseline, **ceilings,
            "extra_cpu_ms_per_request": round(serve["cpu_ms_per_request"] - baseline["cpu_ms_per_request"], 2)}  # fmt: skip


if __name__ == "__main__":
    main()

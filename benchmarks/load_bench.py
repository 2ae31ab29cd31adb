"""Load benchmark: a mixed workload ramped past saturation on the local Serve app, serving the real champion.

Starts a throwaway stack on loopback (benchmarks/bench_stack.py: its own MLflow with the champion
the pipeline trains on the real sample, its own 2-CPU Ray cluster, the Serve app from
serve_app/serve_config.yaml) and sends real held-out listings as they appear; it drives it open-loop — requests arrive at
the offered rate whether or not earlier ones were answered, as real clients do — with
80% /predict, 10% /explain and 10% /predict/batch (100 listings). The rate steps up stage by
stage until the app cannot keep up; then the load stops and the run waits for Serve's
autoscaler to remove the extra replicas (it has downscale_delay_s to do so). Prints ONE JSON
object:

    .venv/bin/python benchmarks/load_bench.py [--stages 10,25,50,100,200,400] [--stage-seconds 20]
        [--max-queued N] [--cooldown 420] [--no-inference-log]

Keys: capacity (the highest offered rate at which under 1% of requests were not answered 200, and
its p99), sustained_ok_rps (2xx/s over the whole ramp), peak_ok_rps (best stage), saturation_stage
(first stage where over 5% of requests were not answered 200, or
the 2xx p50 rose past 4x stage 1's), stages[] (offered vs answered,
status counts), endpoints{} (p50/p99 of 2xx and of 503 answers), errors_by_status, replicas
(timeline of running / target replicas per deployment), autoscaling (did each deployment scale
up under load and back down after, and how long it took vs its configured delays),
shedding (were overload answers fast 503s; any 5xx other than 503, any client timeouts).
The baseline measured in the same run is stage 1's latency (far below saturation).

``--compare-inference-log N`` runs the ramp 2N times, alternating a stack with and without the
inference log, and reports both capacities per run (a claim about the log's cost needs N >= 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
MIX = (("/predict", 0.8), ("/explain", 0.1), ("/predict/batch", 0.1))
BATCH_LISTINGS = 100
CLIENT_TIMEOUT_S = 90.0  # longer than Serve's request_timeout_s, so the server's own answer is seen
MAX_IN_FLIGHT = 3000  # client-side cap: past it a request is counted as not sent, never silently dropped

sys.path.insert(0, str(REPO))
from benchmarks.bench_stack import (  # noqa: E402
    DEFAULT_INGRESS,
    INGRESSES,
    ServeStack,
    ingress_env,
    model_shape,
    ray_serve_env,
    real_listings,
)

SHED_LIMIT = 0.01  # capacity: the highest offered rate with fewer than 1% of requests not answered 200


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


# --- replicas over time ------------------------------------------------------------------------


class ReplicaSampler(threading.Thread):
    """Polls the Serve REST API every `every_s`; keeps a timeline of running/target replicas."""

    def __init__(self, dashboard_url: str, app: str, every_s: float = 2.0):
        super().__init__(daemon=True)
        from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

        self.client, self.app, self.every_s = ServeSubmissionClient(dashboard_url), app, every_s
        self.started = time.monotonic()
        self.timeline: list[dict] = []
        self.halt = threading.Event()

    def sample(self) -> dict:
        details = self.client.get_serve_details()["applications"][self.app]["deployments"]
        return {
            name: {
                "running": sum(r["state"] == "RUNNING" for r in d.get("replicas", [])),
                "target": d.get("target_num_replicas"),
            }
            for name, d in details.items()
        }

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.timeline.append({"t": round(time.monotonic() - self.started, 1), **self.sample()})
            except Exception as exc:  # a slow dashboard under load must not end the run
                self.timeline.append({"t": round(time.monotonic() - self.started, 1), "error": repr(exc)[:200]})
            self.halt.wait(self.every_s)

    def changes(self) -> list[dict]:
        """The timeline reduced to the samples where a replica count changed (plus first and last)."""
        kept, last = [], None
        for point in self.timeline:
            counts = {k: v for k, v in point.items() if k != "t"}
            if counts != last:
                kept.append(point)
                last = counts
        if self.timeline and kept[-1] is not self.timeline[-1]:
            kept.append(self.timeline[-1])
        return kept


# --- the open-loop load ------------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.records: list[tuple[int, str, object, float]] = []  # (stage, endpoint, status, latency ms)
        self.not_sent: Counter = Counter()


async def one_request(session, url, path, body, stage, recorder: Recorder):
    started = time.perf_counter()
    try:
        async with session.post(url + path, data=body, headers={"content-type": "application/json"}) as response:
            await response.read()
            status: object = response.status
    except TimeoutError:
        status = "client_timeout"
    except aiohttp.ClientError as exc:
        status = f"connection:{type(exc).__name__}"
    recorder.records.append((stage, path, status, (time.perf_counter() - started) * 1000.0))


async def drive(url: str, bodies: dict[str, list[bytes]], stages: list[float], stage_s: float, seed: int) -> Recorder:
    """Poisson arrivals at each stage's rate; every request is recorded with its stage."""
    rng = random.Random(seed)
    recorder = Recorder()
    paths, weights = zip(*MIX, strict=True)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    tasks: set[asyncio.Task] = set()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for stage, rate in enumerate(stages):
            end = time.monotonic() + stage_s
            next_at = time.monotonic()
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                path = rng.choices(paths, weights)[0]
                if len(tasks) >= MAX_IN_FLIGHT:
                    recorder.not_sent[stage] += 1
                else:
                    body = rng.choice(bodies[path])
                    task = asyncio.create_task(one_request(session, url, path, body, stage, recorder))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                next_at += rng.expovariate(rate)
        if tasks:
            await asyncio.wait(tasks)
    return recorder


# --- the report --------------------------------------------------------------------------------


def summarize(recorder: Recorder, stages: list[float], stage_s: float) -> dict:
    by_stage = defaultdict(list)
    for stage, path, status, latency in recorder.records:
        by_stage[stage].append((path, status, latency))
    stage_rows = []
    for stage, rate in enumerate(stages):
        rows = by_stage[stage]
        ok = sum(1 for _, s, _ in rows if s == 200)
        stage_rows.append({
            "offered_rps": rate,
            "sent": len(rows),
            "not_sent_client_cap": recorder.not_sent[stage],
            "ok_rps": round(ok / stage_s, 1),
            "statuses": dict(Counter(str(s) for _, s, _ in rows)),
            "ok_p50_ms": percentile([lat for _, s, lat in rows if s == 200], 0.5),
            "ok_p99_ms": percentile([lat for _, s, lat in rows if s == 200], 0.99),
        })  # fmt: skip
    baseline_p50 = stage_rows[0]["ok_p50_ms"] or 0.0

    def saturated(row: dict) -> bool:
        """Requests failing or shed, or answers slowed to several times the unloaded latency."""
        ok = row["statuses"].get("200", 0)
        slow = row["ok_p50_ms"] is not None and row["ok_p50_ms"] > 4 * baseline_p50
        return ok < 0.95 * (row["sent"] + row["not_sent_client_cap"]) or slow

    saturation = next((i for i, row in enumerate(stage_rows) if saturated(row)), None)
    within = [
        row
        for row in stage_rows
        if 1 - row["statuses"].get("200", 0) / max(row["sent"] + row["not_sent_client_cap"], 1) < SHED_LIMIT
    ]
    best = max(within, key=lambda row: row["offered_rps"], default=None)
    capacity = {
        "offered_rps": best["offered_rps"] if best else None,
        "ok_rps": best["ok_rps"] if best else None,
        "ok_p99_ms": best["ok_p99_ms"] if best else None,
        "shed_limit": SHED_LIMIT,
    }
    endpoints = {}
    for path, _ in MIX:
        ok = [lat for _, p, s, lat in recorder.records if p == path and s == 200]
        shed = [lat for _, p, s, lat in recorder.records if p == path and s == 503]
        endpoints[path] = {
            "ok": len(ok),
            "ok_p50_ms": percentile(ok, 0.5),
            "ok_p99_ms": percentile(ok, 0.99),
            "baseline_p50_ms": stage_rows[0]["ok_p50_ms"] if path == "/predict" else None,
            "shed_503": len(shed),
            "shed_p50_ms": percentile(shed, 0.5),
            "shed_p99_ms": percentile(shed, 0.99),
        }
    statuses = Counter(str(s) for _, _, s, _ in recorder.records)
    errors = {status: n for status, n in statuses.items() if status != "200"}
    total_ok = statuses.get("200", 0)
    shed = [lat for _, _, s, lat in recorder.records if s == 503]
    return {
        "capacity": capacity,
        "sustained_ok_rps": round(total_ok / (stage_s * len(stages)), 1),
        "peak_ok_rps": max(row["ok_rps"] for row in stage_rows),
        "saturation_stage": saturation,
        "saturated_at_offered_rps": stages[saturation] if saturation is not None else None,
        "requests": len(recorder.records),
        "errors_by_status": errors,
        "endpoints": endpoints,
        "stages": stage_rows,
        "shedding": {
            "fast_503s": bool(shed) and statistics.median(shed) < 1000,
            "other_5xx": sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500 and s != "503"),
            "client_timeouts": statuses.get("client_timeout", 0),
            "connection_errors": sum(n for s, n in statuses.items() if s.startswith("connection")),
        },
    }


def at_minimum(counts: dict, deployment: dict) -> bool:
    """Running and target replicas are both back at min_replicas (no scale-up still pending)."""
    floor = deployment["autoscaling_config"]["min_replicas"]
    return counts.get("running") == floor and counts.get("target", floor) == floor


def autoscaling_summary(timeline: list[dict], config: dict, load_end_t: float) -> dict:
    summary = {}
    for deployment in config["applications"][0]["deployments"]:
        name, scaling = deployment["name"], deployment["autoscaling_config"]
        counts = [(p["t"], p[name]["running"]) for p in timeline if name in p]
        if not counts:
            continue
        peak = max(n for _, n in counts)
        during = [n for t, n in counts if t <= load_end_t]
        back_at = next(
            (t for t, n in counts if t > load_end_t and n <= scaling["min_replicas"]),
            None,
        )
        summary[name] = {
            "min_replicas": scaling["min_replicas"],
            "max_replicas": scaling["max_replicas"],
            "peak_running": peak,
            "scaled_up": bool(during) and max(during) > scaling["min_replicas"],
            "scaled_down_after_s": (
                round(back_at - load_end_t, 1) if back_at is not None and peak > scaling["min_replicas"] else None
            ),
            "downscale_delay_s": scaling.get("downscale_delay_s"),
            "upscale_delay_s": scaling.get("upscale_delay_s"),
        }
    return summary


def ramp(options, stages: list[float], *, inference_log: bool) -> dict:
    """One stack, one ramp past saturation, then the wait for downscaling; the ramp's report."""
    with (
        ingress_env(options.ingress) as ray_env,
        ServeStack(
            inference_log=inference_log, serve_config=options.serve_config, max_queued=options.max_queued,
            ray_env=ray_env,
        ) as stack,
    ):  # fmt: skip
        listing_bodies, rejected = real_listings(1_500)
        batch = [json.dumps({"listings": listing_bodies[i : i + BATCH_LISTINGS]}).encode() for i in range(0, 1000, 100)]
        singles = [json.dumps(b).encode() for b in listing_bodies[:500]]
        bodies = {"/predict": singles, "/explain": singles, "/predict/batch": batch}
        asyncio.run(drive(stack.url, bodies, [5.0], 5.0, options.seed + 1))  # warm-up
        config = stack.config
        sampler = ReplicaSampler(stack.dashboard_url, config["applications"][0]["name"])
        sampler.start()
        load_start = time.monotonic()
        recorder = asyncio.run(drive(stack.url, bodies, stages, options.stage_seconds, options.seed))
        load_end_t = round(time.monotonic() - sampler.started, 1)
        load_s = time.monotonic() - load_start
        delays = [
            d["autoscaling_config"].get("downscale_delay_s", 600) for d in config["applications"][0]["deployments"]
        ]
        deadline = time.monotonic() + (options.cooldown if options.cooldown is not None else max(delays) + 90)
        while time.monotonic() < deadline:  # wait for the extra replicas to go
            time.sleep(5)
            last = sampler.timeline[-1] if sampler.timeline else {}
            if all(at_minimum(last.get(d["name"], {}), d) for d in config["applications"][0]["deployments"]):
                break
        time.sleep(2 * sampler.every_s)
        sampler.halt.set()
        sampler.join(timeout=30)
        return {
            **summarize(recorder, stages, options.stage_seconds),
            "load_seconds": round(load_s, 1),
            "replicas": sampler.changes(),
            "load_ended_at_t": load_end_t,
            "autoscaling": autoscaling_summary(sampler.timeline, config, load_end_t),
            "model": model_shape(stack.model),
            "ray_serve_env": ray_serve_env(),
            "listings_rejected_by_the_api": rejected,
            "inference_log": inference_log,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default="10,25,50,100,200,400", help="offered requests/s per stage")
    parser.add_argument("--stage-seconds", type=float, default=20.0, help="past saturation for >= 60 s")
    parser.add_argument("--serve-config", type=Path, default=REPO / "serve_app" / "serve_config.yaml")
    parser.add_argument("--ingress", choices=INGRESSES, default=DEFAULT_INGRESS, help="Serve's proxy or HAProxy")
    parser.add_argument("--max-queued", type=int, default=None, help="override max_queued_requests everywhere")
    parser.add_argument(
        "--cooldown", type=float, default=None, help="seconds to wait for downscaling (default: delay + 90)"
    )
    parser.add_argument(
        "--no-inference-log", action="store_true", help="serve without the inference log (to measure its cost)"
    )
    parser.add_argument(
        "--compare-inference-log", type=int, default=0, metavar="N",
        help="N ramps with the inference log and N without, alternated (cooldown 0 between)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    stages = [float(s) for s in options.stages.split(",")]
    report_to, sys.stdout = sys.stdout, sys.stderr  # MLflow and Ray print progress; stdout is the JSON only
    load_before = os.getloadavg()
    setup = {
        "mix": dict(MIX),
        "batch_listings": BATCH_LISTINGS,
        "stage_seconds": options.stage_seconds,
        "max_queued_requests_override": options.max_queued,
        "serve_config": str(options.serve_config),
        "ingress": options.ingress,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "data": "real sample rows 80,000+ as they appear (missing fields left out)",
    }
    if options.compare_inference_log:
        runs = []
        for i in range(options.compare_inference_log):
            for with_log in (True, False) if i % 2 == 0 else (False, True):
                result = ramp(options, stages, inference_log=with_log)
                runs.append({"inference_log": with_log, "capacity": result["capacity"],
                             "sustained_ok_rps": result["sustained_ok_rps"], "peak_ok_rps": result["peak_ok_rps"]})  # fmt: skip
        by_log = {
            label: [r["capacity"]["offered_rps"] for r in runs if r["inference_log"] is flag]
            for label, flag in (("with_log", True), ("without_log", False))
        }
        report = {"inference_log_comparison": {"runs": runs, "capacity_offered_rps": by_log}, "setup": setup}
    else:
        report = {**ramp(options, stages, inference_log=not options.no_inference_log), "setup": setup}
    report["machine"] = {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(json.dumps(report), file=report_to, flush=True)


if __name__ == "__main__":
    main()

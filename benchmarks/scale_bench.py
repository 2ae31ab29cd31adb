"""How the pipeline's time and memory grow with its data: the real pipeline, on a two-node Ray cluster.

For each size it resamples the real sample to that many rows and runs the whole pipeline on it
as the product runs: its own data API serves the file over the real HTTP contract, its own MLflow
server registers the model, and a fresh two-node Ray cluster on this machine (a head and a second
node joined with ``ray start --address``, each with capped CPUs and object-store memory) runs
``python -m ray_jobs.pipeline`` submitted with ``ray job submit``:

    ingest (HTTP) -> clean -> (drift: none, there is no champion yet) -> split -> tune -> fit
    -> evaluate -> register

**Resampling.** The pool is rows 0-79,999 of ../shared/data/realtor/realtor.parquet, as they
appear (the pipeline cleans them). Rows are drawn with replacement (seeded) and three numeric
columns are jittered so that no drawn row is an exact copy of another: ``price`` and ``house_size``
times a uniform factor in [0.99, 1.01] rounded to whole dollars and square feet, ``acre_lot`` the
same to 4 decimals (missing values stay missing; bed and bath stay whole numbers). The real test
rows (80,000-99,999) are never in the pool: the model's quality (``mdape``) is measured on them,
all with a valid price, as they appear. The data API serves the file in random batches of at most
320k rows (the course API's largest), as many as the size needs.

**Measured.** Wall seconds of the job (submit to finish) and of each stage (the pipeline's own
JSON summary, ray_jobs.stages); peak resident memory of the driver and of the largest Ray worker,
sampled from /proc every 0.5 s over every process of the cluster. Resident memory here is VmRSS
less RssShmem: object-store pages a process maps are shared memory, capped by the cluster's
object-store size and counted there, not once per process that reads them (``peak_vmrss_gib`` has
them in). Prints ONE JSON object:

    .venv/bin/python benchmarks/scale_bench.py --sizes 100k,500k [--parity 500k] [--workdir DIR]

``--parity SIZE`` checks the data-parallel fit against the one-process fit on the same rows: SIZE
runs with the data-parallel path forced on (or the size's run is reused if it was data-parallel),
then this process reads that run's clean batches, splits them with the same hash and refits its
training and validation rows in one process with the registered model's parameters, rounds and bag
size (ray_jobs.fit.refit, the one-process path's own final fit), twice with different seeds. Both
refits and the data-parallel model are scored on the real test rows (``parity``): the difference
between the paths is read against the difference between the two seeds (``seed_noise``). Comparing
whole pipeline runs instead would mix in the search's run-to-run variation (time-budgeted Tune on
2 cores), which is larger than what is being measured. The 2.2M and 10M sizes need a quiet machine
and most of an hour each; see README "Scaling".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_stack import model_shape  # noqa: E402
from benchmarks.real_data import SAMPLE, TRAIN_ROWS, held_out_rows  # noqa: E402
from ray_jobs.evaluate import evaluate  # noqa: E402
from rayestate import localstack  # noqa: E402
from rayestate.schema import RAW_COLUMNS  # noqa: E402

SIZES = {"100k": 100_000, "500k": 500_000, "2.2M": 2_226_382, "10M": 10_000_000}
API_BATCH_ROWS = 320_000
JITTER = 0.01
JITTERED = {"price": 0, "house_size": 0, "acre_lot": 4}  # column -> decimals kept
CHUNK_ROWS = 1_000_000
GIB = 2**30
#: The cluster: two nodes of 2 logical CPUs on this 2-core machine (the Ray Train workers take one
#: each, leaving one per node for Ray Data and the Tune trials), object stores capped.
HEAD_CPUS, WORKER_CPUS = 2, 2
OBJECT_STORE_BYTES = 2 * GIB


def size_rows(text: str) -> int:
    """'500k', '2.2M' (the full dataset's 2,226,382 rows), '10M' or a plain number."""
    if text in SIZES:
        return SIZES[text]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


# --- data ---------------------------------------------------------------------------------------


def resample(pool: pd.DataFrame, rows: int, path: Path, *, seed: int) -> Path:
    """``rows`` rows drawn from ``pool`` with replacement, jittered (module docstring), written in chunks."""
    if path.exists():
        return path
    rng = np.random.default_rng([seed, rows])
    partial = path.with_suffix(".partial")
    writer = None
    try:
        for start in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - start)
            chunk = pool.iloc[rng.integers(0, len(pool), count)].reset_index(drop=True)
            for column, decimals in JITTERED.items():
                factor = rng.uniform(1 - JITTER, 1 + JITTER, count)
                chunk[column] = (chunk[column].astype("float64") * factor).round(decimals)
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(partial, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    partial.rename(path)
    return path


def api_plan(rows: int) -> tuple[int, int]:
    """(batches, rows per batch): as few batches as rows / 320k, the rows spread evenly over them."""
    batches = math.ceil(rows / API_BATCH_ROWS)
    return batches, math.ceil(rows / batches)


# --- memory ---------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and RssShmem of a process, bytes (empty if it is gone)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssShmem", "PPid"):
                values[name] = int(rest.split()[0]) * (1024 if name != "PPid" else 1)
    except (OSError, ValueError, IndexError):
        return {}
    return values


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class MemorySampler:
    """Peak memory of every process descending from ``roots`` (the cluster's nodes), sampled in a thread."""

    roots: list[int]
    interval: float = 0.5
    peaks: dict[str, float] = field(default_factory=dict)  # "driver", "worker", "any" -> bytes (private)
    peak_worker_name: str = ""
    peak_vmrss: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _descendants(self) -> list[int]:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                status = _status(int(entry.name))
                if status:
                    parents[int(entry.name)] = status.get("PPid", 0)
        found, frontier = set(), set(self.roots)
        while frontier:
            found |= frontier
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        return sorted(found)

    def sample(self) -> None:
        for pid in self._descendants():
            status = _status(pid)
            if not status:
                continue
            private = status.get("VmRSS", 0) - status.get("RssShmem", 0)
            command = _cmdline(pid)
            self.peak_vmrss = max(self.peak_vmrss, status.get("VmRSS", 0))
            self.peaks["any"] = max(self.peaks.get("any", 0), private)
            if "ray_jobs.pipeline" in command and not command.startswith(("/bin/sh", "sh ")):
                self.peaks["driver"] = max(self.peaks.get("driver", 0), private)
            elif command.startswith("ray::") and private > self.peaks.get("worker", 0):
                self.peaks["worker"] = private
                self.peak_worker_name = command.split()[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self) -> dict:
        gib = {name: round(value / GIB, 3) for name, value in self.peaks.items()}
        return {
            "driver": gib.get("driver"),
            "largest_worker": gib.get("worker"),
            "largest_worker_process": self.peak_worker_name,
            "any_process": gib.get("any"),
            "peak_vmrss_gib": round(self.peak_vmrss / GIB, 3),
        }


# --- one run -------------------------------------------------------------------------------------


def _summary(log: str) -> dict:
    """The pipeline's last JSON line (its summary) in the job's output."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"outcome"' in line:
            return json.loads(line)
    raise RuntimeError("the job printed no pipeline summary; its log ends:\n" + log[-3000:])


def run_size(rows: int, data: Path, root: Path, args, *, env_extra: dict | None = None) -> dict:
    """One pipeline run on ``rows`` resampled rows, on a fresh two-node cluster, MLflow and data API."""
    from mlflow.tracking import MlflowClient

    from rayestate.model_io import load_model_version

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    batches, batch_rows = api_plan(rows)
    api_port = localstack.free_port()
    with localstack.MlflowServer(root / "mlflow") as mlflow_server:
        settings_env = {
            "RAYESTATE_STATE_DIR": str(root / "state"),
            "RAYESTATE_MLFLOW_TRACKING_URI": mlflow_server.uri,
            "RAYESTATE_DATA_API_URL": f"http://{localstack.LOOPBACK}:{api_port}",
            "RAYESTATE_DATA_API_BATCH_ROWS": str(batch_rows),
            "RAYESTATE_MAX_BATCHES_PER_RUN": str(batches),
            "RAYESTATE_TUNE_TIME_BUDGET_S": str(args.tune_time_budget),
            "RAYESTATE_SEED": str(args.seed),
            **(env_extra or {}),
        }
        env = {**os.environ, **settings_env, "RAY_AUTH_MODE": "token"}
        env["PATH"] = os.pathsep.join([str(localstack.BIN), env.get("PATH", "")])
        api = [str(localstack.BIN / "rayestate"), "data-api", "--dataset", str(data), "--mode", "random",
               "--batches", str(batches), "--port", str(api_port)]  # fmt: skip
        health = f"http://{localstack.LOOPBACK}:{api_port}/health"
        with localstack.running(api, health, root / "logs" / "data-api.log", env=env, timeout=1800):
            cluster = localstack.LocalCluster(
                root / "cluster", head_cpus=HEAD_CPUS, worker_cpus=(WORKER_CPUS,),
                object_store_bytes=OBJECT_STORE_BYTES, env=env,
            )  # fmt: skip
            with cluster:
                nodes = cluster.alive_nodes()
                submit = [str(localstack.BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url,
                          "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"env_vars": settings_env}),
                          "--", "python", "-m", "ray_jobs.pipeline"]  # fmt: skip
                started = time.monotonic()
                with MemorySampler([p.pid for p in cluster.processes]) as sampler:
                    job = subprocess.run(submit, capture_output=True, text=True, env=env, cwd=REPO)
                seconds = time.monotonic() - started
                (root / "logs" / "job.log").write_text(job.stdout + job.stderr)
                if job.returncode != 0:
                    raise RuntimeError(f"pipeline job failed ({job.returncode}); see {root / 'logs' / 'job.log'}")
        summary = _summary(job.stdout)
        version = summary.get("model_version")
        quality = {}
        if version:
            client = MlflowClient(tracking_uri=mlflow_server.uri)
            model = load_model_version(client, "rayestate-price", str(version)).model
            test, _ = held_out_rows(pd.read_parquet(SAMPLE))
            metrics = evaluate(model, test)
            quality = {"mdape": round(metrics["mdape"], 4), "r2_log": round(metrics["r2_log"], 4)}
            quality["data_parallel"] = bool(model.meta.get("data_parallel"))
            quality["training_rows"] = model.meta.get("training_rows")
            quality["model"] = {**model_shape(model), "params": model.meta.get("params")}
    return {
        "rows": rows,
        "seconds": round(seconds, 1),
        "stages": summary.get("stages", {}),
        "peak_rss_gib": sampler.report(),
        "rows_per_second": round(rows / seconds, 1),
        **quality,
        "rows_ingested": summary.get("rows_ingested"),
        "batches": summary.get("batches"),
        "api_batches": batches,
        "outcome": summary.get("outcome"),
        "nodes": nodes,
    }


def refit_parity(run: dict, root: Path, *, seed: int) -> dict:
    """The data-parallel model of ``run`` against one-process refits of its rows (see the module's docstring)."""
    from ray_jobs.fit import refit
    from ray_jobs.split import split_frame
    from rayestate import store
    from rayestate.settings import Settings

    if not run.get("data_parallel"):
        raise RuntimeError(f"the parity run did not train data-parallel: {run}")
    settings = Settings(state_dir=root / "state")
    splits = split_frame(store.read_frame(settings, "clean", run["batches"]))
    rows = pd.concat([splits.train, splits.valid], ignore_index=True)
    test, _ = held_out_rows(pd.read_parquet(SAMPLE))
    fitted = run["model"]
    refits = []
    for refit_seed in (seed, seed + 1):
        started = time.monotonic()
        model = refit(
            rows, fitted["params"], fitted["rounds"], seed=refit_seed, nthread=os.cpu_count(),
            bag_size=fitted["bag_size"], augment=settings.augment_missing_sizes, comparables_rows=1,
        )  # fmt: skip
        metrics = evaluate(model, test)
        refits.append({
            "seed": refit_seed, "mdape": round(metrics["mdape"], 4), "r2_log": round(metrics["r2_log"], 4),
            "fit_seconds": round(time.monotonic() - started, 1),
        })  # fmt: skip
    return {
        "rows": run["rows"],
        "fit_rows": {"data_parallel": run["training_rows"], "one_process": len(rows)},
        "model": {k: v for k, v in fitted.items() if k != "params"},
        "data_parallel": {"mdape": run["mdape"], "r2_log": run["r2_log"], "fit_seconds": run["stages"].get("fit")},
        "one_process": refits,
        "mdape_difference": round(run["mdape"] - refits[0]["mdape"], 4),
        "seed_noise": round(abs(refits[0]["mdape"] - refits[1]["mdape"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,500k,2.2M,10M", help="comma-separated: 100k, 500k, 2.2M, 10M, 750k...")
    parser.add_argument("--parity", type=size_rows, help="also run this size one-process and data-parallel")
    parser.add_argument("--tune-time-budget", type=float, default=480.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, help="keep resampled files and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [size_rows(s) for s in args.sizes.split(",") if s]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rayestate-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    pool = pd.read_parquet(SAMPLE).iloc[:TRAIN_ROWS][list(RAW_COLUMNS)].reset_index(drop=True)
    load_before = os.getloadavg()[0]
    results = {}
    for rows in sizes:
        data = resample(pool, rows, workdir / f"resampled-{rows}.parquet", seed=args.seed)
        print(f"[scale] {rows:,} rows ...", file=sys.stderr, flush=True)
        results[str(rows)] = run_size(rows, data, workdir / f"run-{rows}", args)
        print(f"[scale] {rows:,} rows: {json.dumps(results[str(rows)])}", file=sys.stderr, flush=True)
    parity = None
    if args.parity:
        run = results.get(str(args.parity))
        if run is None or not run.get("data_parallel"):
            data = resample(pool, args.parity, workdir / f"resampled-{args.parity}.parquet", seed=args.seed)
            forced = {"RAYESTATE_DATA_PARALLEL_MIN_ROWS": "1"}
            run = run_size(args.parity, data, workdir / f"parity-{args.parity}", args, env_extra=forced)
            root = workdir / f"parity-{args.parity}"
        else:
            root = workdir / f"run-{args.parity}"
        parity = refit_parity(run, root, seed=args.seed)
        print(f"[scale] parity: {json.dumps(parity)}", file=sys.stderr, flush=True)
    seconds = {int(k): v["seconds"] for k, v in results.items()}
    growth = None
    if 500_000 in seconds and SIZES["2.2M"] in seconds:
        growth = round(seconds[SIZES["2.2M"]] / seconds[500_000], 2)
    report = {
        "sizes": results,
        "growth_500k_to_2m": growth,
        "growth_linear_bound": round(SIZES["2.2M"] / 500_000, 2),
        "nodes": max((r["nodes"] for r in results.values()), default=None),
        "parity": parity,
        "cluster": {"head_cpus": HEAD_CPUS, "worker_cpus": WORKER_CPUS, "object_store_gib": OBJECT_STORE_BYTES / GIB},
        "resampling": f"rows 0-{TRAIN_ROWS - 1:,} with replacement, seed {args.seed}; price, house_size x U[0.99, 1.01]"
        " (whole), acre_lot x U[0.99, 1.01] (4 decimals)",
        "tune_time_budget_s": args.tune_time_budget,
        "machine": {"cpus": os.cpu_count(), "load_average_before": round(load_before, 2)},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

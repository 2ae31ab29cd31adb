"""Rows/s of fetch + validate + clean + write: the product's Ray path vs a plain pandas path.

Prints ONE JSON object. Both paths pull the same batch over loopback HTTP from the real data
API (`rayestate data-api --mode random` in its own process; one batch holds every row), then
  ray:    fetch_batch (Arrow JSON parse + checks) -> ingest_batch (raw Parquet + manifest)
          -> clean_batch (Ray Data tasks on a local 2-CPU Ray) -> clean Parquet + manifest
  pandas: httpx .json() -> DataFrame -> column/type checks -> the same rules in one process
          -> raw and clean Parquet files (no manifests, no content hashes)
Each path runs --repeats times per size (alternating; best reported, all listed), because the
machine is shared. Sizes: 100k rows (the real sample) and 1M rows (the real sample resampled with a seed, each
copy given a fresh street id so it is a distinct listing rather than a duplicate). Without
../shared both come from the synthetic generator and "data" says so. Ray workers are warmed
up on a small batch first; cluster start-up is not timed.

    .venv/bin/python benchmarks/ingest_bench.py [--sizes 100000 1000000] [--seed 7] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ray_jobs.clean import clean_batch, clean_table_pandas  # noqa: E402
from ray_jobs.ingest import ingest_batch  # noqa: E402
from ray_jobs.source import Batch, fetch_batch  # noqa: E402
from rayestate import store  # noqa: E402
from rayestate.devstack.synthetic import generate_listings  # noqa: E402
from rayestate.localstack import free_port, start_process, stop_process, wait_http  # noqa: E402
from rayestate.schema import NUMERIC_COLUMNS, RAW_COLUMNS, SchemaError, conform_table  # noqa: E402
from rayestate.settings import Settings  # noqa: E402

SAMPLE = Path(os.environ.get("RAYESTATE_SHARED_DIR", REPO.parent / "shared")) / "data" / "realtor" / "realtor.parquet"
GROUP = {"group_number": 1, "day": "Tuesday"}


def dataset(rows: int, seed: int) -> tuple[pd.DataFrame, str]:
    if not SAMPLE.is_file():
        return generate_listings(rows, seed=seed), "synthetic (../shared absent)"
    real = pd.read_parquet(SAMPLE)
    if rows == len(real):
        return real, "real sample"
    rng = np.random.default_rng(seed)
    resampled = real.iloc[rng.integers(0, len(real), rows)].reset_index(drop=True)
    resampled["street"] = rng.permutation(rows).astype("float64") + 3_000_000  # distinct listings
    return resampled, f"real sample resampled with seed {seed}"


class DataAPI:
    """`rayestate data-api` serving ``frame`` as one random batch, in its own process."""

    def __init__(self, frame: pd.DataFrame, workdir: Path):
        path = workdir / "dataset.parquet"
        frame.to_parquet(path)
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "RAYESTATE_DATA_API_BATCH_ROWS": str(len(frame))}
        command = [str(Path(sys.executable).parent / "rayestate"), "--state-dir", str(workdir / "api-state")]
        command += ["data-api", "--dataset", str(path), "--mode", "random", "--port", self.url.rsplit(":", 1)[1]]
        self.process = start_process(command, workdir / "data-api.log", env=env)
        wait_http(f"{self.url}/health", timeout=300, process=self.process)

    def restart(self) -> None:
        httpx.get(f"{self.url}/restart_data_generation", params=GROUP, timeout=30).raise_for_status()


def timed(stages: dict, name: str, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    stages[name] = round(time.perf_counter() - start, 3)
    return result


def ray_path(settings: Settings) -> tuple[dict, int]:
    stages: dict[str, float] = {}
    batch = timed(stages, "fetch_validate", fetch_batch, settings)
    raw = timed(stages, "ingest_write", ingest_batch, settings, batch)
    clean = timed(stages, "clean_write", clean_batch, settings, raw.batch_id)
    return stages, clean.rows


def pandas_validate(payload: dict) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(payload["data"])
    missing = set(RAW_COLUMNS) - set(frame.columns)
    if missing or len(frame) == 0:
        raise SchemaError(f"bad batch: missing {missing} or empty")
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype("float64")
    return frame[list(RAW_COLUMNS)]


def pandas_path(settings: Settings, out: Path) -> tuple[dict, int]:
    stages: dict[str, float] = {}

    def fetch_validate():
        response = httpx.get(f"{settings.data_api_url}/data", params=GROUP, timeout=600)
        response.raise_for_status()
        return pandas_validate(response.json())

    frame = timed(stages, "fetch_validate", fetch_validate)
    timed(stages, "ingest_write", frame.to_parquet, out / "raw.parquet")
    table = conform_table(pa.Table.from_pandas(frame, preserve_index=False))
    clean, _, _ = timed(stages, "clean", clean_table_pandas, table)
    timed(stages, "clean_write", pq.write_table, clean, out / "clean.parquet")
    return stages, clean.num_rows


def summary(stages: dict, clean_rows: int, rows: int) -> dict:
    seconds = round(sum(stages.values()), 3)
    return {"seconds": seconds, "rows_per_s": round(rows / seconds), "clean_rows": clean_rows, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="runs per path and size; the best is reported")
    args = parser.parse_args()

    import ray
    import ray.data

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results, sources = {}, set()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        warm = Settings(state_dir=Path(tmp) / "warm")
        clean_batch(
            warm,
            ingest_batch(warm, Batch("api", 1, "Tuesday", 1, pa.Table.from_pandas(generate_listings(2_000)))).batch_id,
        )
        for rows in args.sizes:
            frame, source = dataset(rows, args.seed)
            sources.add(source)
            workdir = Path(tmp) / str(rows)
            workdir.mkdir()
            api = DataAPI(frame, workdir)
            runs: dict[str, list[dict]] = {"ray": [], "pandas": []}
            try:
                for repeat in range(args.repeats):  # alternate the paths so load spikes hit both
                    settings = Settings(state_dir=workdir / f"state-{repeat}", data_api_url=api.url, http_timeout_s=600)
                    api.restart()
                    runs["ray"].append(summary(*ray_path(settings), rows))
                    api.restart()
                    runs["pandas"].append(summary(*pandas_path(settings, workdir), rows))
            finally:
                stop_process(api.process)
            best = {path: min(found, key=lambda r: r["seconds"]) for path, found in runs.items()}
            results[str(rows)] = {
                **best,
                "all_seconds": {path: [r["seconds"] for r in found] for path, found in runs.items()},
                "ray_vs_pandas_speedup": round(best["ray"]["rows_per_s"] / best["pandas"]["rows_per_s"], 2),
                "same_clean_rows": best["ray"]["clean_rows"] == best["pandas"]["clean_rows"],
            }
    ray.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "ingest: fetch + validate + clean + write",
                "data": sorted(sources),
                "cpus": os.cpu_count(),
                "ray_cluster_cpus": 2,
                "repeats": args.repeats,
                "load_average_at_end": os.getloadavg()[0],
                "rows_per_part": store.ROWS_PER_PART,
                "results": results,
                "note": "ray = product path (Arrow JSON, content hashes, manifests, Ray Data cleaning); "
                "pandas = plain single-process baseline over the same HTTP batch",
            }
        )
    )


if __name__ == "__main__":
    main()

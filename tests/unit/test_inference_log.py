"""The inference log (batched, asynchronous Parquet writes to the store) and the live drift check
(`python -m ray_jobs.live_drift --reference champion --current inference-log`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from ray_jobs.live_drift import parse_since
from rayestate import store
from rayestate.devstack.synthetic import generate_listings
from rayestate.inference_log import InferenceLogWriter, read_inference_log
from rayestate.schema import RAW_COLUMNS, conform_table
from tests.support.jobs import last_json_line

REPO = Path(__file__).resolve().parents[1]


def raw_rows(n: int, seed: int = 0, **changes) -> list[dict]:
    frame = generate_listings(n, seed=seed).assign(**changes)
    rows = json.loads(frame[list(RAW_COLUMNS)].to_json(orient="records"))
    return [{**row, "price": None} for row in rows]  # what the Serve app sends the model


def log_files(settings) -> list[Path]:
    root = Path(store.open_store(settings).root) / "inference_log"
    return sorted(root.rglob("*")) if root.exists() else []


def test_rows_are_written_in_batches_with_prediction_and_version(settings):
    writer = InferenceLogWriter(settings)
    rows = raw_rows(30)
    for start in range(0, 30, 10):
        writer.add(rows[start : start + 10], [100_000.0 + i for i in range(10)], model_version="7",
                   endpoint="/predict", latency_ms=3.5)  # fmt: skip
    writer.add(raw_rows(2, seed=9), [None, 250_000.0], model_version="7", endpoint="/predict/batch", latency_ms=9)
    assert asyncio.run(writer.flush()) == 31  # the rejected row (no price) is not logged
    files = [f for f in log_files(settings) if f.is_file()]
    assert len(files) == 1 and files[0].suffix == ".parquet" and "date=" in str(files[0])  # one file per flush
    frame = read_inference_log(settings)
    assert len(frame) == 31 and set(frame["model_version"]) == {"7"}
    assert frame["price"].iloc[0] == 100_000.0 and frame["latency_ms"].iloc[0] == 3.5
    assert frame["bed"].head(30).fillna(-1).tolist() == [-1 if r["bed"] is None else r["bed"] for r in rows]
    assert list(frame.columns[: len(RAW_COLUMNS)]) == list(RAW_COLUMNS)
    assert writer.status() == {"rows_written": 31, "rows_buffered": 0, "rows_dropped": 0, "last_error": None}


def test_the_background_task_flushes_without_the_request_path_waiting(settings):
    async def scenario():
        writer = InferenceLogWriter(settings, flush_s=0.2, max_rows=1_000)
        writer.start()
        writer.add(raw_rows(5), [1.0] * 5, model_version="1", endpoint="/predict", latency_ms=1)
        assert writer.status()["rows_buffered"] == 5  # add() only buffers
        for _ in range(100):
            await asyncio.sleep(0.1)
            if writer.rows_written == 5:
                break
        await writer.close()
        return writer.rows_written

    assert asyncio.run(scenario()) == 5
    assert len(read_inference_log(settings)) == 5


def test_a_store_outage_keeps_rows_until_it_is_back_and_bounds_memory(settings):
    writer = InferenceLogWriter(settings, max_buffer=8)
    root = Path(store.open_store(settings).root)
    (root / "inference_log").write_text("not a directory")  # the store refuses writes under this prefix
    writer.add(raw_rows(6), [1.0] * 6, model_version="1", endpoint="/predict", latency_ms=1)
    assert asyncio.run(writer.flush()) == 0
    assert writer.status()["rows_buffered"] == 6 and writer.last_error
    writer.add(raw_rows(4, seed=3), [2.0] * 4, model_version="1", endpoint="/predict", latency_ms=1)
    assert writer.status()["rows_buffered"] == 8 and writer.rows_dropped == 2  # the oldest went
    (root / "inference_log").unlink()  # the store is back
    assert asyncio.run(writer.flush()) == 8
    assert read_inference_log(settings)["price"].tolist() == [1.0] * 4 + [2.0] * 4
    assert not [f for f in log_files(settings) if f.name.endswith(".tmp")]


@pytest.mark.integration
def test_the_log_works_on_s3(s3_settings):
    writer = InferenceLogWriter(s3_settings)
    writer.add(raw_rows(3), [5.0, 6.0, 7.0], model_version="2", endpoint="/explain", latency_ms=4)
    assert asyncio.run(writer.flush()) == 3
    assert read_inference_log(s3_settings)["price"].tolist() == [5.0, 6.0, 7.0]


def test_since_parsing():
    assert parse_since("30m").total_seconds() == 1800 and parse_since("2d").days == 2
    with pytest.raises(ValueError, match="30m, 24h"):
        parse_since("yesterday")


# --- the running Serve app writes it ------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_serve_app_logs_what_it_answered(serve_app_url, serve_state_dir):
    import httpx

    from rayestate.localstack import wait_ready
    from rayestate.settings import Settings

    wait_ready(serve_app_url)
    marker = 4321.0  # a house size no other test sends, to find these rows among the others
    listing = {"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": marker, "state": "Ohio", "zip_code": "43004"}
    single = httpx.post(f"{serve_app_url}/predict", json=listing, timeout=60).json()
    batch = httpx.post(
        f"{serve_app_url}/predict/batch", json={"listings": [listing, {**listing, "bed": -1}, listing]}, timeout=60
    ).json()
    explained = httpx.post(f"{serve_app_url}/explain", json=listing, timeout=60).json()

    settings = Settings(state_dir=serve_state_dir)
    deadline = time.monotonic() + 60
    while True:
        frame = read_inference_log(settings)
        mine = frame[frame["house_size"] == marker]
        if len(mine) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # the rejected row (bed -1) is not logged: it was never priced
    assert sorted(mine["endpoint"]) == ["/explain", "/predict", "/predict/batch", "/predict/batch"], mine
    by_endpoint = mine.groupby("endpoint")["price"].first()
    assert by_endpoint["/predict"] == pytest.approx(single["price"])
    assert by_endpoint["/predict/batch"] == pytest.approx(batch["prices"][0])
    assert by_endpoint["/explain"] == pytest.approx(explained["price"])
    assert set(mine["model_version"]) == {single["model_version"]}
    assert (mine["latency_ms"] > 0).all() and (mine["state"] == "Ohio").all() and (mine["zip_code"] == 43004).all()
    ready = httpx.get(f"{serve_app_url}/ready", timeout=30).json()
    assert ready["inference_log"]["last_error"] is None


# --- live drift against the champion's training data ------------------------------------------


def publish_clean_batch(settings, batch_id: str, table) -> None:
    record = store.CleanRecord(
        batch_id=batch_id, source="file-t", group_number=0, day="file", batch_number=1, rows=table.num_rows,
        sha256=store.content_sha256(table), fetched_at=store.now(),
    )  # fmt: skip
    store.publish(settings, "clean", record, table)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_live_traffic_drift_vs_the_champion(mlflow_server, settings, tmp_path):
    from serve_app.sample_model import register_champion, train_price_model

    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_server, "model_name": f"live-{tmp_path.name}"})
    frame = generate_listings(5000, seed=1)
    frame = frame[frame["price"].between(1_000, 1e8)].reset_index(drop=True)  # as the cleaning job leaves it
    publish_clean_batch(settings, "file-t.g0.file.b000001", conform_table(pa.Table.from_pandas(frame)))
    register_champion(
        mlflow_server, train_price_model(frame, rounds=20), frame, name=settings.model_name,
        tags={"training_batches": json.dumps(["file-t.g0.file.b000001"]), "decision": "first_model"},
    )  # fmt: skip
    env = {
        **os.environ,
        "RAYESTATE_STATE_DIR": str(settings.state_dir),
        "RAYESTATE_MLFLOW_TRACKING_URI": mlflow_server,
        "RAYESTATE_MODEL_NAME": settings.model_name,
    }
    command = [sys.executable, "-m", "ray_jobs.live_drift", "--reference", "champion", "--current", "inference-log"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *extra], env=env, cwd=REPO, capture_output=True, text=True, timeout=240)

    empty = run()
    assert empty.returncode == 1 and "no rows" in empty.stderr

    writer = InferenceLogWriter(settings)
    same = generate_listings(1500, seed=2)  # live traffic like the training data; price = a fair prediction
    writer.add(raw_rows(1500, seed=2), same["price"].tolist(), model_version="1", endpoint="/predict", latency_ms=2)
    asyncio.run(writer.flush())
    calm = run("--since", "1h")
    assert calm.returncode == 0, calm.stderr[-2000:]
    summary = last_json_line(calm.stdout)
    assert summary["verdict"] == "no_drift" and summary["n_current"] == 1500, summary

    shifted = generate_listings(1500, seed=3)
    writer.add(raw_rows(1500, seed=3, house_size=shifted["house_size"] * 1.8), shifted["price"].tolist(),
               model_version="1", endpoint="/predict", latency_ms=2)  # fmt: skip
    asyncio.run(writer.flush())
    moved = last_json_line(run().stdout)
    assert moved["verdict"] == "drift" and "house_size" in moved["reason"], moved
    from ray_jobs.drift import load_drift_history

    assert load_drift_history(settings, limit=1)[0].batch_id == moved["report"]

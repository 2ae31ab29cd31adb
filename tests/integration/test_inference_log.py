"""The inference log on S3 and written by the running Serve app, and the live drift check reading it
(`python -m ray_jobs.live_drift --reference champion --current inference-log`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pyarrow as pa
import pytest

from ray_jobs.drift import load_drift_history
from rayestate import store
from rayestate.devstack.synthetic import generate_listings
from rayestate.inference_log import InferenceLogWriter, read_inference_log
from rayestate.localstack import REPO, wait_ready
from rayestate.schema import conform_table
from rayestate.settings import Settings
from tests.support.champion import make_sample_champion
from tests.support.jobs import last_json_line
from tests.support.listings import raw_rows
from tests.support.models import sample_listings


def test_the_log_works_on_s3(s3_settings):
    writer = InferenceLogWriter(s3_settings)
    writer.add(raw_rows(3), [5.0, 6.0, 7.0], model_version="2", endpoint="/explain", latency_ms=4)
    assert asyncio.run(writer.flush()) == 3
    assert read_inference_log(s3_settings)["price"].tolist() == [5.0, 6.0, 7.0]


# --- the running Serve app writes it ------------------------------------------------------------


@pytest.mark.timeout(300)
def test_the_serve_app_logs_what_it_answered(serve_app_url, serve_state_dir):
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


@pytest.mark.timeout(300)
def test_live_traffic_drift_vs_the_champion(mlflow_server, settings, tmp_path):
    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_server, "model_name": f"live-{tmp_path.name}"})
    batch_id = "file-t.g0.file.b000001"  # the champion's training rows, as the cleaning job leaves them
    publish_clean_batch(settings, batch_id, conform_table(pa.Table.from_pandas(sample_listings(5000, seed=1))))
    make_sample_champion(mlflow_server, settings.model_name, rows=5000, seed=1, training_batches=[batch_id])
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
    assert load_drift_history(settings, limit=1)[0].batch_id == moved["report"]

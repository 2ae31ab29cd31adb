"""The inference log on a local store: batched, asynchronous Parquet writes, outages, reading it back.

S3, the running Serve app writing it, and the live drift job reading it are in
integration/test_inference_log.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.live_drift import parse_since
from rayestate import store
from rayestate.inference_log import InferenceLogWriter, read_inference_log
from rayestate.schema import RAW_COLUMNS
from tests.support.listings import raw_rows


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


def test_since_parsing():
    assert parse_since("30m").total_seconds() == 1800 and parse_since("2d").days == 2
    with pytest.raises(ValueError, match="30m, 24h"):
        parse_since("yesterday")


def test_a_naive_since_is_utc_and_selects_the_rows_logged_from_then_on(settings):
    """Issue 14 bug: a naive ``since`` (as ``datetime.utcnow()``-style callers pass) used to index
    the frame with the datetime itself (KeyError). It is UTC, like every time the log writes."""
    writer = InferenceLogWriter(settings)
    writer.add(raw_rows(3), [1.0] * 3, model_version="1", endpoint="/predict", latency_ms=1)
    assert asyncio.run(writer.flush()) == 3
    # logged_at is kept to the millisecond: a few ms either side of `since` keep the two sets apart.
    time.sleep(0.01)
    since = datetime.now(UTC).replace(tzinfo=None)  # naive, UTC: after the first rows, before the next
    time.sleep(0.01)
    writer.add(raw_rows(2, seed=5), [2.0] * 2, model_version="1", endpoint="/predict", latency_ms=1)
    assert asyncio.run(writer.flush()) == 2

    later = read_inference_log(settings, since=since)
    assert later["price"].tolist() == [2.0, 2.0]
    assert (later["logged_at"] >= since.replace(tzinfo=UTC)).all()
    assert read_inference_log(settings, since=since.replace(tzinfo=UTC))["price"].tolist() == [2.0, 2.0]
    assert len(read_inference_log(settings, since=since - timedelta(hours=1))) == 5  # naive and earlier: all
    assert read_inference_log(settings, since=since + timedelta(hours=1)).empty


def test_a_batch_is_queued_as_columns_and_logged_as_the_same_rows(settings):
    rows = raw_rows(5, seed=4)
    columns = {name: [row.get(name) for row in rows] for name in RAW_COLUMNS if name != "price"}
    writer = InferenceLogWriter(settings)
    writer.add(columns, [1.0, None, 3.0, 4.0, 5.0], lows=[0.5] * 5, highs=[2.0] * 5, model_version="2",
               endpoint="/predict/batch", latency_ms=7)  # fmt: skip
    writer.add(rows, [1.0, None, 3.0, 4.0, 5.0], model_version="2", endpoint="/predict/batch", latency_ms=7)
    assert asyncio.run(writer.flush()) == 8  # the unpriced row of each call is left out
    frame = read_inference_log(settings)
    from_columns, from_rows = frame.iloc[:4].reset_index(drop=True), frame.iloc[4:].reset_index(drop=True)
    listing_fields = [name for name in RAW_COLUMNS if name != "price"]
    pd.testing.assert_frame_equal(from_columns[listing_fields], from_rows[listing_fields])
    assert from_columns["house_size"].tolist() == [rows[i]["house_size"] for i in (0, 2, 3, 4)]
    assert from_columns["price_low"].tolist() == [0.5] * 4 and from_rows["price_low"].isna().all()
    with pytest.raises(ValueError, match="3 prices for listings of \\[5\\] rows"):
        writer.add(columns, [1.0] * 3, model_version="2", endpoint="/predict/batch", latency_ms=7)


def test_the_bound_drops_the_oldest_rows_even_inside_one_queued_batch(settings):
    writer = InferenceLogWriter(settings, max_buffer=5)
    writer.add(raw_rows(4), [1.0, 2.0, 3.0, 4.0], model_version="1", endpoint="/predict/batch", latency_ms=1)
    writer.add(raw_rows(3, seed=2), [5.0, 6.0, 7.0], model_version="1", endpoint="/predict/batch", latency_ms=1)
    assert writer.status()["rows_buffered"] == 5 and writer.rows_dropped == 2
    assert asyncio.run(writer.flush()) == 5
    assert read_inference_log(settings)["price"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]

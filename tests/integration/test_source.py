"""The batch client against the real data API over loopback HTTP, plus retries and bad payloads.

Flaky behaviour of the outside API (500s, stalls, dropped connections, malformed bodies) is
played by FaultProxy, a tiny HTTP server on loopback in front of the real data API server.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.source import BatchError, DataAPIUnavailable, fetch_batch, file_source_id, parse_batch, read_file_batches
from rayestate.devstack.synthetic import generate_listings, generate_table
from rayestate.localstack import free_port
from rayestate.schema import RAW_COLUMNS, RAW_SCHEMA
from tests.support.servers import FaultProxy

HEADER = {"group_number": 1, "day": "Tuesday", "batch_number": 1}


def client_settings(settings, url: str, **overrides):
    return settings.model_copy(update={"data_api_url": url, "http_backoff_s": 0.01, "http_timeout_s": 5, **overrides})


def body(rows: list[dict] | None = None, **header) -> bytes:
    payload = {**HEADER, **header}
    if rows is not None:
        payload["data"] = rows
    return json.dumps(payload).encode()


def good_rows(n: int = 3) -> list[dict]:
    return json.loads(generate_listings(n, seed=1).to_json(orient="records"))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fetches_every_batch_then_none_and_restarts(settings, data_api_factory):
    import httpx

    with data_api_factory(batch_rows=700) as server:
        config = client_settings(settings, server.url)
        batches = []
        while (batch := fetch_batch(config)) is not None:
            batches.append(batch)
        assert fetch_batch(config) is None  # exhausted stays exhausted
        httpx.get(f"{server.url}/restart_data_generation", params={"group_number": 1, "day": "Tuesday"})
        replay = fetch_batch(config)
    assert [b.batch_number for b in batches] == list(range(1, 9))
    assert len({b.batch_id for b in batches}) == 8
    first = batches[0]
    assert first.batch_id == "api.g1.Tuesday.b000001" and first.source == "api"
    assert first.table.schema.equals(RAW_SCHEMA) and 0 < first.rows <= 700
    assert replay.batch_id == first.batch_id and replay.table.equals(first.table)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "script",
    [[500, 500], [("sleep", 1.5)], ["drop"], [500, "drop", ("sleep", 1.5)]],
    ids=["500s", "timeout", "dropped", "mixed"],
)
def test_retries_transient_failures(settings, data_api_factory, script):
    with data_api_factory() as server, FaultProxy(server.url, script) as proxy:
        batch = fetch_batch(client_settings(settings, proxy.url, http_timeout_s=0.5, http_retries=4))
    assert batch is not None and batch.rows > 0
    assert proxy.requests == len(script) + 1


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_gives_up_after_the_configured_retries(settings):
    with FaultProxy(None, [500] * 10) as proxy, pytest.raises(DataAPIUnavailable, match="3 attempt"):
        fetch_batch(client_settings(settings, proxy.url, http_retries=2))
    assert proxy.requests == 3
    with pytest.raises(DataAPIUnavailable, match="ConnectError"):  # nothing listens on this port
        fetch_batch(client_settings(settings, f"http://127.0.0.1:{free_port()}", http_retries=1))


BAD_PAYLOADS = {
    "html": (b"<html>502 Bad Gateway</html>", "not one valid JSON object"),
    "truncated": (body(good_rows())[:-60], "not one valid JSON object"),
    "empty body": (b"", "empty response body"),
    "no data": (body(None), "'data' is missing"),
    "data not a list": (json.dumps({**HEADER, "data": {"price": 1}}).encode(), "'data' must be a list"),
    "rows not objects": (body([1, 2, 3]), "'data' must hold row objects"),
    "empty batch": (body([]), "empty batch"),
    "missing column": (body([{k: v for k, v in r.items() if k != "bed"} for r in good_rows()]), "missing column.*bed"),
    "renamed column": (body([{**r, "bedrooms": r["bed"]} for r in good_rows()]), "unexpected column.*bedrooms"),
    "price as text": (body([{**r, "price": "cheap"} for r in good_rows()]), "'price' must hold numbers"),
    "price as bool": (body([{**r, "price": True} for r in good_rows()]), "'price' must hold numbers"),
    "city as number": (body([{**r, "city": 7} for r in good_rows()]), "'city' must hold strings"),
    "one price as text": (
        body([{**r, "price": "cheap" if i == 1 else r["price"]} for i, r in enumerate(good_rows())]),
        r"/data/\[\]/price mixes number and string",
    ),
    "no batch_number": (
        json.dumps({"group_number": 1, "day": "Tuesday", "data": good_rows()}).encode(),
        "'batch_number' is missing",
    ),
    "batch_number text": (body(good_rows(), batch_number="3"), "'batch_number' must be an integer"),
    "other group": (body(good_rows(), group_number=2), "group 2"),
    "too many rows": (body(good_rows(12)), "more than max_batch_rows=10"),
}


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_rejects_malformed_payloads_naming_the_problem(settings, case):
    payload, message = BAD_PAYLOADS[case]
    with FaultProxy(None, [(200, payload)]) as proxy, pytest.raises(BatchError, match=message):
        fetch_batch(client_settings(settings, proxy.url, max_batch_rows=10))
    assert proxy.requests == 1  # a malformed answer is not retried


@pytest.mark.integration
def test_client_errors_are_reported_not_retried(settings):
    answer = (422, b'{"detail": "group_number: Input should be >= 1"}')
    with FaultProxy(None, [answer]) as proxy, pytest.raises(BatchError, match=r"HTTP 422.*group_number"):
        fetch_batch(client_settings(settings, proxy.url))
    assert proxy.requests == 1


def test_parse_keeps_values_and_nulls():
    rows = good_rows(50)
    rows[0]["bed"], rows[1]["prev_sold_date"], rows[2]["bath"] = None, None, 3  # an int where floats are
    header, table = parse_batch(body(rows), max_rows=100)
    assert header == HEADER and table.schema.equals(RAW_SCHEMA) and table.num_rows == 50
    assert table.column("bed")[0].as_py() is None and table.column("bath")[2].as_py() == 3.0
    assert table.column("prev_sold_date").to_pylist()[3:] == [r["prev_sold_date"] for r in rows[3:]]
    assert table.column("zip_code").to_pylist() == [r["zip_code"] for r in rows]


def test_file_batches_are_deterministic(tmp_path):
    table = generate_table(2_500, seed=4)
    parquet, csv = tmp_path / "listings.parquet", tmp_path / "listings.csv"
    pq.write_table(table, parquet)
    generate_listings(2_500, seed=4).to_csv(csv, index=False)
    for path in (parquet, csv):
        batches = list(read_file_batches(path, 1_000))
        assert [(b.batch_number, b.rows) for b in batches] == [(1, 1_000), (2, 1_000), (3, 500)]
        assert batches[0].batch_id == "file-listings.g0.file.b000001" == next(read_file_batches(path, 1_000)).batch_id
        assert pa.concat_tables([b.table for b in batches]).equals(table)
    with pytest.raises(ValueError, match="batch_rows"):
        next(read_file_batches(parquet, 0))


def test_file_source_id_is_store_safe(tmp_path):
    assert file_source_id(tmp_path / "my data (v2).csv.gz") == "file-my_data_v2_"


@pytest.mark.data
def test_reads_the_real_api_batch_file(api_batch):
    (batch,) = read_file_batches(api_batch, 10_000)
    assert batch.rows == 4_055 and batch.table.column_names == list(RAW_COLUMNS)
    assert set(batch.table.column("state").to_pylist()) == {"Massachusetts"}

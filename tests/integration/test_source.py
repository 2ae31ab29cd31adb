"""The batch client against the real data API over loopback HTTP, plus retries and bad payloads.

Flaky behaviour of the outside API (500s, stalls, dropped connections, malformed bodies) is
played by FaultProxy, a tiny HTTP server on loopback in front of the real data API server. A stall
holds its request until the client gives up and retries (an event, not a sleep), so the client's
timeout only has to exceed a normal answer, and every request the proxy sees is one the test scripted.
"""

from __future__ import annotations

import json

import pytest

from ray_jobs.source import BatchError, DataAPIUnavailable, fetch_batch
from rayestate.localstack import free_port
from rayestate.schema import RAW_SCHEMA
from tests.support.listings import API_HEADER, api_body, api_rows
from tests.support.servers import STALL, FaultProxy

#: Long enough for any normal answer on a busy machine; a stall lasts exactly this long.
TIMEOUT_S = 5


def client_settings(settings, url: str, **overrides):
    return settings.model_copy(
        update={"data_api_url": url, "http_backoff_s": 0.01, "http_timeout_s": TIMEOUT_S, **overrides}
    )


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


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "script",
    [[500, 500], [STALL], ["drop"], [500, "drop", STALL]],
    ids=["500s", "timeout", "dropped", "mixed"],
)
def test_retries_transient_failures(settings, data_api_factory, script):
    with data_api_factory() as server, FaultProxy(server.url, script) as proxy:
        batch = fetch_batch(client_settings(settings, proxy.url, http_retries=4))
    assert batch is not None and batch.rows > 0
    # Exactly the scripted failures, then the one request that passed: batch 1, never consumed by a
    # stalled request (a stall never reaches the data API).
    assert proxy.arrivals == [*script, "pass"]
    assert batch.batch_number == 1


@pytest.mark.timeout(60)
def test_gives_up_after_the_configured_retries(settings):
    with FaultProxy(None, [500] * 10) as proxy, pytest.raises(DataAPIUnavailable, match="3 attempt"):
        fetch_batch(client_settings(settings, proxy.url, http_retries=2))
    assert proxy.requests == 3
    with pytest.raises(DataAPIUnavailable, match="ConnectError"):  # nothing listens on this port
        fetch_batch(client_settings(settings, f"http://127.0.0.1:{free_port()}", http_retries=1))


BAD_PAYLOADS = {
    "html": (b"<html>502 Bad Gateway</html>", "not one valid JSON object"),
    "truncated": (api_body(api_rows(3))[:-60], "not one valid JSON object"),
    "empty body": (b"", "empty response body"),
    "no data": (api_body(None), "'data' is missing"),
    "data not a list": (json.dumps({**API_HEADER, "data": {"price": 1}}).encode(), "'data' must be a list"),
    "rows not objects": (api_body([1, 2, 3]), "'data' must hold row objects"),
    "empty batch": (api_body([]), "empty batch"),
    "missing column": (
        api_body([{k: v for k, v in r.items() if k != "bed"} for r in api_rows(3)]),
        "missing column.*bed",
    ),
    "renamed column": (api_body([{**r, "bedrooms": r["bed"]} for r in api_rows(3)]), "unexpected column.*bedrooms"),
    "price as text": (api_body([{**r, "price": "cheap"} for r in api_rows(3)]), "'price' must hold numbers"),
    "price as bool": (api_body([{**r, "price": True} for r in api_rows(3)]), "'price' must hold numbers"),
    "city as number": (api_body([{**r, "city": 7} for r in api_rows(3)]), "'city' must hold strings"),
    "one price as text": (
        api_body([{**r, "price": "cheap" if i == 1 else r["price"]} for i, r in enumerate(api_rows(3))]),
        r"/data/\[\]/price mixes number and string",
    ),
    "no batch_number": (
        json.dumps({"group_number": 1, "day": "Tuesday", "data": api_rows(3)}).encode(),
        "'batch_number' is missing",
    ),
    "batch_number text": (api_body(api_rows(3), batch_number="3"), "'batch_number' must be an integer"),
    "other group": (api_body(api_rows(3), group_number=2), "group 2"),
    "too many rows": (api_body(api_rows(12)), "more than max_batch_rows=10"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
def test_rejects_malformed_payloads_naming_the_problem(settings, case):
    payload, message = BAD_PAYLOADS[case]
    with FaultProxy(None, [(200, payload)]) as proxy, pytest.raises(BatchError, match=message):
        fetch_batch(client_settings(settings, proxy.url, max_batch_rows=10))
    assert proxy.requests == 1  # a malformed answer is not retried


def test_client_errors_are_reported_not_retried(settings):
    answer = (422, b'{"detail": "group_number: Input should be >= 1"}')
    with FaultProxy(None, [answer]) as proxy, pytest.raises(BatchError, match=r"HTTP 422.*group_number"):
        fetch_batch(client_settings(settings, proxy.url))
    assert proxy.requests == 1

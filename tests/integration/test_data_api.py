"""The course-compatible data API, served by real uvicorn over loopback HTTP."""

from __future__ import annotations

import os
import subprocess

import httpx
import pandas as pd
import pytest

from rayestate.devstack.data_api import COURSE_SLICES, EXHAUSTED_DETAIL
from rayestate.devstack.synthetic import generate_listings
from rayestate.localstack import BIN, free_port, stop_process, wait_http
from rayestate.schema import RAW_COLUMNS

pytestmark = pytest.mark.timeout(180)
G1 = {"group_number": 1, "day": "Tuesday"}


def fetch_all(url: str, params: dict = G1) -> list[dict]:
    """Every batch until the API says it is exhausted (checking that final answer)."""
    batches = []
    while True:
        response = httpx.get(f"{url}/data", params=params, timeout=30)
        if response.status_code == 400:
            assert response.json() == {"detail": EXHAUSTED_DETAIL}
            return batches
        assert response.status_code == 200, response.text
        batches.append(response.json())


def test_course_sequence_contract_and_exhaustion(data_api_factory):
    with data_api_factory(batch_rows=1_500) as server:
        health = httpx.get(f"{server.url}/health").json()
        batches = fetch_all(server.url)
        again = httpx.get(f"{server.url}/data", params=G1)  # still exhausted, not reset by asking
    assert again.status_code == 400 and again.json()["detail"] == EXHAUSTED_DETAIL
    assert [b["batch_number"] for b in batches] == list(range(1, len(COURSE_SLICES) + 1))
    assert [s["slice"] for s in health["sequence"]] == [s.name for s in COURSE_SLICES]
    for batch, slice_info in zip(batches, health["sequence"], strict=True):
        assert (batch["group_number"], batch["day"]) == (1, "Tuesday")
        frame = pd.DataFrame(batch["data"])
        assert list(frame.columns) == list(RAW_COLUMNS)
        assert 0 < len(frame) <= 1_500 and len(frame) == min(1_500, slice_info["rows"])
        assert not frame.isna().any().any()  # course mode serves complete rows, like the real API
    cheap, large, massachusetts = (pd.DataFrame(batches[i]["data"]) for i in range(3))
    assert cheap["price"].max() <= 300_000
    assert large["price"].max() <= 300_000 and large["house_size"].min() >= 1_500
    assert set(massachusetts["state"]) == {"Massachusetts"} and massachusetts["price"].max() <= 300_000
    assert pd.DataFrame(batches[4]["data"])["price"].between(300_001, 500_000).all()


def test_restart_replays_the_same_sequence_and_groups_are_independent(data_api_factory):
    with data_api_factory() as server:
        first = httpx.get(f"{server.url}/data", params=G1).json()
        second = httpx.get(f"{server.url}/data", params=G1).json()
        other_group = httpx.get(f"{server.url}/data", params={"group_number": 2, "day": "Tuesday"}).json()
        other_day = httpx.get(f"{server.url}/data", params={"group_number": 1, "day": "Wednesday"}).json()
        restarted = httpx.get(f"{server.url}/restart_data_generation", params=G1)
        replay = httpx.get(f"{server.url}/data", params=G1).json()
    assert (first["batch_number"], second["batch_number"]) == (1, 2)
    assert other_group["batch_number"] == other_day["batch_number"] == 1
    assert restarted.status_code == 200 and restarted.json()["ok"] is True
    assert replay == first  # deterministic: same rows after a restart
    assert other_group["data"] != first["data"]  # each group gets its own sample of the slice


def test_position_survives_a_server_restart(data_api_factory):
    with data_api_factory() as server:
        served = [httpx.get(f"{server.url}/data", params=G1).json()["batch_number"] for _ in range(2)]
    with data_api_factory() as server:  # a new process-equivalent: new app, same state file
        resumed = httpx.get(f"{server.url}/data", params=G1).json()["batch_number"]
    with data_api_factory(mode="random") as server:  # another sequence: old positions do not apply
        fresh = httpx.get(f"{server.url}/data", params=G1).json()["batch_number"]
    assert served == [1, 2] and resumed == 3 and fresh == 1


def test_random_mode_serves_uniform_batches_with_nulls(data_api_factory):
    with data_api_factory(mode="random", random_batches=3, batch_rows=3_000) as server:
        batches = fetch_all(server.url)
    assert [b["batch_number"] for b in batches] == [1, 2, 3]
    frame = pd.DataFrame(batches[0]["data"])
    assert len(frame) == 3_000
    assert frame["bed"].isna().mean() == pytest.approx(0.215, abs=0.04)  # NaN travels as JSON null
    assert frame["price"].median() == pytest.approx(325_000, rel=0.2)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_number": 0, "day": "Tuesday"}, "group_number"),
        ({"group_number": "one", "day": "Tuesday"}, "group_number"),
        ({"group_number": 1, "day": "Monday"}, "day"),
        ({"day": "Tuesday"}, "group_number"),
        ({"group_number": 1}, "day"),
    ],
)
def test_bad_query_parameters_are_422_naming_the_field(data_api_factory, params, field):
    with data_api_factory() as server:
        for path in ("/data", "/restart_data_generation"):
            response = httpx.get(f"{server.url}{path}", params=params)
            assert response.status_code == 422
            assert field in [error["loc"][-1] for error in response.json()["detail"]]


def test_given_dataset_is_served_not_synthetic(data_api_factory):
    dataset = generate_listings(3_000, seed=99).assign(state="Vermont", zip_code=5001.0)
    with data_api_factory(dataset, mode="random", random_batches=1, batch_rows=500) as server:
        batch = httpx.get(f"{server.url}/data", params=G1).json()
    assert {row["state"] for row in batch["data"]} == {"Vermont"}


def test_cli_runner_serves_on_the_requested_port(tmp_path):
    """`rayestate data-api` (run_data_api) as a real process; the state file lands in the state dir."""
    port = free_port()
    env = {**os.environ, "RAYESTATE_DATA_API_SYNTHETIC_ROWS": "5000", "RAYESTATE_DATA_API_BATCH_ROWS": "300"}
    process = subprocess.Popen(
        [str(BIN / "rayestate"), "--state-dir", str(tmp_path), "data-api", "--port", str(port), "--mode", "random"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=90, process=process)
        batch = httpx.get(f"http://127.0.0.1:{port}/data", params=G1).json()
    finally:
        stop_process(process)
    assert len(batch["data"]) == 300
    assert (tmp_path / "data_api" / "state.json").is_file()

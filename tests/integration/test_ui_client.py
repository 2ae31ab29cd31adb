"""The UI's API client against the real Serve app: answers, typed errors, a closed port."""

from __future__ import annotations

import math

import pytest

from rayestate.localstack import free_port
from ui.client import ApiClient, ApiError, ApiUnavailable
from ui.listings import DEFAULT_LISTING, price_in_chunks

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def client(serve_app_url):
    client = ApiClient(serve_app_url, timeout_s=60)
    yield client
    client.close()


def test_predict_and_explain_agree(client, champion):
    prediction = client.predict(DEFAULT_LISTING)
    explanation = client.explain(DEFAULT_LISTING)
    assert prediction["model_version"] == explanation["model_version"] == champion.version
    assert explanation["price"] == pytest.approx(prediction["price"], rel=1e-6)
    total = explanation["base_value"] + math.fsum(c["shap"] for c in explanation["contributions"])
    assert total == pytest.approx(math.log(prediction["price"]), abs=1e-4)


def test_rejected_listing_is_an_api_error_naming_the_field(client):
    with pytest.raises(ApiError) as raised:
        client.predict({**DEFAULT_LISTING, "bed": 500})
    assert raised.value.status == 422
    assert not isinstance(raised.value, ApiUnavailable)
    assert "bed: " in str(raised.value) and "50" in str(raised.value)


def test_batch_in_chunks_matches_one_call(client):
    listings = [{**DEFAULT_LISTING, "house_size": 900.0 + 150 * i} for i in range(7)]
    listings[4] = {**listings[4], "state": ""}  # rejected by the API
    whole = client.predict_batch(listings)
    chunked = price_in_chunks(client.predict_batch, listings, chunk=3)
    assert chunked["prices"] == whole["prices"]
    assert [e["index"] for e in chunked["errors"]] == [e["index"] for e in whole["errors"]] == [4]
    assert chunked["prices"][4] is None


def test_status_endpoints(client, champion):
    assert client.health()["status"] == "ok"
    ready = client.ready()
    assert ready["ready"] is True and ready["model_version"] == champion.version
    report = client.model()  # read as rayestate.api.ModelReport
    assert report.champion.version == champion.version and report.registry_available


def test_nothing_listening_is_api_unavailable():
    port = free_port()  # bound and released: nothing listens there
    client = ApiClient(f"http://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(ApiUnavailable, match=f"127.0.0.1:{port} is not reachable"):
        client.predict(DEFAULT_LISTING)
    with pytest.raises(ApiUnavailable):
        client.model()

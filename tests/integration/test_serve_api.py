"""The HTTP contract of the running Serve app (real Ray Serve, real MLflow, real HTTP on loopback)."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
from mlflow.tracking import MlflowClient

from ray_jobs.drift import drift_report, save_drift_report
from rayestate.registry import VersionRecord
from rayestate.settings import Settings
from tests.support.listings import known_location
from tests.support.models import sample_listings

pytestmark = pytest.mark.timeout(600)

#: Every field set, the location one the champion was trained on, so it is priced without warnings.
LISTING = {
    "bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500, **known_location("Texas"),
    "status": "for_sale", "prev_sold_date": "2015-06-01",
}  # fmt: skip


@pytest.fixture(scope="module")
def api(serve_app_url):
    with httpx.Client(base_url=serve_app_url, timeout=60) as client:
        yield client


def served_version(api) -> str:
    return api.get("/ready").json()["model_version"]


def assert_json_error(response, status: int) -> list | str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    return response.json()["detail"]


def test_predict_returns_the_contract_fields(api, champion):
    response = api.post("/predict", json=LISTING)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"price", "price_low", "price_high", "coverage", "model_version", "model_alias", "request_id",
                         "warnings"}  # fmt: skip
    assert body["price"] > 0 and math.isfinite(body["price"])
    assert body["price_low"] < body["price"] < body["price_high"] and body["coverage"] == 0.8
    assert body["model_alias"] == "champion"
    assert body["model_version"] == served_version(api)
    assert body["request_id"]
    assert body["warnings"] == []


def test_unknown_state_zip_and_city_are_priced_with_warnings(api):
    response = api.post("/predict", json={**LISTING, "state": "Atlantis", "zip_code": "00999", "city": "Nowhere"})
    assert response.status_code == 200, response.text
    warnings = " ".join(response.json()["warnings"])
    assert "Atlantis" in warnings and "00999" in warnings and "Nowhere" in warnings


@pytest.mark.parametrize(
    ("field", "value"),
    [("bed", 10_000), ("house_size", -5), ("acre_lot", -1), ("zip_code", "12ab"), ("status", "stolen")],
)
def test_impossible_values_are_rejected_with_the_field_named(api, field, value):
    detail = assert_json_error(api.post("/predict", json={**LISTING, field: value}), 422)
    assert detail[0]["loc"][-1] == field


def test_missing_required_field_is_named(api):
    listing = {k: v for k, v in LISTING.items() if k != "state"}
    detail = assert_json_error(api.post("/predict", json=listing), 422)
    assert detail[0]["loc"][-1] == "state" and detail[0]["type"] == "missing"


def test_a_listing_without_sizes_is_priced_with_a_wider_range_and_says_why(api):
    full = api.post("/predict", json=LISTING).json()
    bare = api.post("/predict", json={k: v for k, v in LISTING.items() if k not in ("house_size", "bed")}).json()
    assert bare["price"] > 0
    assert [w for w in bare["warnings"] if "missing" in w] == [
        "bed missing: the model prices without it; expect a wider error",
        "house_size missing: the model prices without it; expect a wider error",
    ]
    assert bare["price_high"] / bare["price_low"] > full["price_high"] / full["price_low"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_json_numbers_are_a_clear_422(api, token):
    body = json.dumps(LISTING).replace('"bed": 3', f'"bed": {token}')
    response = api.post("/predict", content=body, headers={"content-type": "application/json"})
    detail = assert_json_error(response, 422)
    assert detail[0]["loc"][-1] == "bed" and detail[0]["type"] == "finite_number"


def test_malformed_json_is_a_422(api):
    response = api.post("/predict", content=b'{"bed": 3,', headers={"content-type": "application/json"})
    assert assert_json_error(response, 422)[0]["type"] == "json_invalid"


def test_oversized_body_is_refused_with_413(api):
    response = api.post("/predict", content=b" " * (17 * 1024 * 1024), headers={"content-type": "application/json"})
    assert "exceeds" in assert_json_error(response, 413)


def test_batch_prices_good_rows_and_reports_bad_ones_by_index(api):
    listings = [
        LISTING,
        {**LISTING, "bed": -2},
        {**LISTING, "house_size": 2500},
        {"bed": 3},
        LISTING,
        {"state": "Ohio"},
    ]
    response = api.post("/predict/batch", json={"listings": listings})
    assert response.status_code == 200, response.text
    body = response.json()
    prices = body["prices"]
    assert len(prices) == 6
    assert prices[1] is None and prices[3] is None
    assert all(p > 0 for p in (prices[0], prices[2], prices[4], prices[5]))  # a bare listing is priced too
    assert prices[0] == pytest.approx(prices[4])
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert body["price_low"][1] is None and body["price_low"][0] < prices[0] < body["price_high"][0]
    assert body["errors"][0]["detail"][0]["loc"] == ["bed"]
    single = api.post("/predict", json=LISTING).json()["price"]
    assert prices[0] == pytest.approx(single, rel=1e-9)
    assert body["model_version"] == served_version(api)


def test_big_batches_are_priced_in_chunks_in_order(api):
    listings = [{**LISTING, "house_size": 800 + 2 * i} for i in range(2_500)]  # spans chunk edges (500 or 1,000)
    listings[700] = {**LISTING, "bed": -1}
    body = api.post("/predict/batch", json={"listings": listings}).json()
    assert [e["index"] for e in body["errors"]] == [700]
    prices = body["prices"]
    assert prices[700] is None and all(p is not None for i, p in enumerate(prices) if i != 700)
    for index in (0, 499, 500, 999, 1_000, 2_499):
        single = api.post("/predict", json=listings[index]).json()["price"]
        assert prices[index] == pytest.approx(single, rel=1e-9)


def test_batch_over_the_configured_maximum_is_413(api):
    listing = {"bed": 1, "bath": 1, "acre_lot": 0, "house_size": 500, "state": "Ohio"}
    detail = assert_json_error(api.post("/predict/batch", json={"listings": [listing] * 10_001}), 413)
    assert "10000" in detail


def test_batch_that_is_not_a_list_is_a_422(api):
    assert_json_error(api.post("/predict/batch", json={"listings": {"bed": 1}}), 422)


def test_explain_is_exact_and_additive(api):
    response = api.post("/explain", json=LISTING)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output_space"] == "log_price"
    assert {"price", "base_value", "contributions", "dollar_effects", "model_version"} <= set(body)
    shap_sum = math.fsum(c["shap"] for c in body["contributions"])
    assert body["base_value"] + shap_sum == pytest.approx(math.log(body["price"]), abs=1e-4)
    assert body["log_price"] == pytest.approx(math.log(body["price"]), abs=1e-9)
    dollars = math.fsum(e["dollars"] for e in body["dollar_effects"])
    assert body["base_price"] + dollars == pytest.approx(body["price"], rel=1e-4)
    assert body["base_price"] == pytest.approx(math.exp(body["base_value"]))
    assert {c["feature"] for c in body["contributions"]} == {e["feature"] for e in body["dollar_effects"]}
    house = next(c for c in body["contributions"] if c["feature"] == "house_size")
    assert house["value"] == 1500
    predicted = api.post("/predict", json=LISTING).json()
    assert body["price"] == pytest.approx(predicted["price"], rel=1e-9)
    assert body["model_version"] == predicted["model_version"]


def test_explain_validates_like_predict(api):
    detail = assert_json_error(api.post("/explain", json={**LISTING, "bath": -1}), 422)
    assert detail[0]["loc"][-1] == "bath"


def test_health_and_ready(api, champion):
    assert api.get("/health").json() == {"status": "ok"}
    ready = api.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["registry_reachable"] is True
    assert body["predictor"]["model_name"] == champion.name
    assert body["predictor"]["model_version"] == body["model_version"]
    assert "explainer" not in body  # the ingress explains: no separate deployment to report
    # The ingress prices /predict itself, so it holds the champion too and answers for its version.
    assert body["api"]["loaded"] is True and body["api"]["model_name"] == champion.name
    assert (
        body["api"]["model_version"]
        == body["model_version"]
        == api.post("/predict", json=LISTING).json()["model_version"]
    )


def test_model_card_reads_the_registry_and_drift_reports(api, champion, serve_state_dir):
    store = Settings(state_dir=serve_state_dir)
    shifted = sample_listings(800, seed=4).assign(house_size=lambda d: d["house_size"] * 1.6)
    save_drift_report(store, "batch-test-1", drift_report(sample_listings(800, seed=3), shifted, store))
    deadline = time.monotonic() + 30  # /model is cached for a few seconds
    while True:
        body = api.get("/model").json()
        if body["drift_reports"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert body["registry_available"] is True
    assert body["model_name"] == champion.name and body["model_alias"] == "champion"
    assert body["champion"]["version"] == served_version(api) == champion.version
    assert body["champion"]["run_id"] and body["champion"]["trained_at"]
    # The champion's numbers are the ones the pipeline's decision path recorded on its version
    # (held-out test metrics, exactly), and its decision is the first-model one, with its reason.
    recorded = VersionRecord.of(MlflowClient(champion.tracking_uri).get_model_version(champion.name, champion.version))
    assert recorded.metrics and {"mdape", "r2_log", "rows"} <= set(recorded.metrics)
    assert body["champion"]["metrics"] == recorded.metrics
    assert body["champion"]["run_id"] == recorded.run_id
    history = {h["version"]: h for h in body["promotion_history"]}
    first = history[champion.version]
    assert (first["decision"], first["reason"]) == ("first_model", "no champion yet: the first model becomes champion")
    assert first["metrics"] == recorded.metrics and first["registration"] == "complete"
    assert "champion" in first["aliases"]
    assert body["drift_note"] is None
    (report,) = body["drift_reports"]
    assert report["batch_id"] == "batch-test-1" and report["verdict"] == "drift"
    assert {f["name"] for f in body["features"]} >= {"house_size", "te_zip"}


def test_openapi_docs_describe_the_contract(api):
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/explain", "/health", "/ready", "/model", "/reload"} <= set(paths)


def test_unknown_routes_and_methods_are_json_errors(api):
    assert assert_json_error(api.get("/nope"), 404)
    assert assert_json_error(api.get("/predict"), 405)


def test_autoscaling_config_is_deployed_as_configured(dashboard_url, serve_app_url):
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from rayestate.localstack import load_serve_config

    wanted = {d["name"]: d for d in load_serve_config()["applications"][0]["deployments"]}
    details = ServeSubmissionClient(dashboard_url).get_serve_details()
    deployments = details["applications"]["rayestate"]["deployments"]
    for name, spec in wanted.items():
        deployed = deployments[name]["deployment_config"]
        assert deployed["max_ongoing_requests"] == spec["max_ongoing_requests"]
        for key, value in spec["autoscaling_config"].items():
            assert deployed["autoscaling_config"][key] == value
        for key, value in spec.get("user_config", {}).items():
            if key != "reload_poll_s":  # tests poll faster
                assert deployed["user_config"][key] == value


def test_request_metrics_are_exported(api, ray_cluster):
    port = ray_cluster.address_info["metrics_export_port"]
    assert api.post("/predict", json=LISTING).status_code == 200
    assert api.post("/predict", json={**LISTING, "bed": -1}).status_code == 422
    wanted = ("rayestate_requests_total", "rayestate_request_latency_ms", "rayestate_rejected_inputs_total")
    deadline = time.monotonic() + 90  # Ray pushes metrics to the node's exporter every few seconds
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        if all(name in text for name in wanted) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name in wanted:
        assert name in text
    assert 'endpoint="/predict"' in text


def test_serve_runs_in_its_throughput_mode_behind_the_loopback_proxy(serve_app_url, ray_cluster):
    """The Serve controller started with localstack.SERVE_THROUGHPUT_ENV (as `make up` starts it):
    gRPC between deployments, user code on the replicas' loop, unbuffered request logs and no
    direct ingress, so the app answers only through the proxy on loopback."""
    from pathlib import Path

    # The controller reports the mode before its own log file is set up: on its worker's stderr.
    logs = Path(ray_cluster.address_info["session_dir"]) / "logs"
    reports = [
        text[text.index("Throughput optimized Ray Serve enabled") :]
        for path in logs.glob("worker-*.err")
        if "Throughput optimized Ray Serve enabled" in (text := path.read_text(errors="replace"))
    ]
    assert reports, f"no Serve controller in {logs} reported the throughput mode"
    report = reports[-1][:1000]
    assert "gRPC communication enabled" in report
    assert "User code running in main thread" in report
    assert "Request path log buffer size: 1\n" in report
    assert "Direct ingress enabled" not in report
    assert serve_app_url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{serve_app_url}/health", timeout=30).json() == {"status": "ok"}

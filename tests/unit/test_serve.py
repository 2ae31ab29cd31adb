"""Unit tests of the Serve app's pure parts: inference maths, validation, model swaps, config."""

from __future__ import annotations

import asyncio
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from ray_jobs.split import split_frame
from rayestate import dense_predict
from rayestate.inference_log import InferenceLogWriter, read_inference_log
from rayestate.localstack import adapt_serve_config, load_serve_config
from rayestate.model_io import LoadedModel
from rayestate.schema import MAX_BATH, MAX_BED, MAX_HOUSE_SIZE, MIN_HOUSE_SIZE, RAW_COLUMNS, STATES, Listing
from rayestate.settings import Settings
from serve_app.app import Api
from serve_app.contract import (
    BatchRequest,
    batch_rows,
    field_errors,
    raw_columns,
    valid_batch,
    validate_listings,
    validated_columns,
)
from serve_app.http_guard import endpoint_label
from serve_app.inference import MISSING_FIELD_WARNINGS, XGB_THREADS, dollar_effects, explain_rows, predict_rows
from serve_app.served_model import ServedModel
from tests.support.listings import known_location
from tests.support.models import sample_listings, train_sample_model, with_sample_range

LISTING = {"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500, "state": "Texas", "city": "Austin"}


@pytest.fixture(scope="module")
def small_model():
    frame = sample_listings(1500, seed=3)
    return train_sample_model(frame, rounds=30, max_depth=4), frame


def raw_row(**overrides) -> dict:
    return Listing.model_validate({**LISTING, **overrides}).to_raw_row()


# --- explanations -------------------------------------------------------------------------


def test_dollar_effects_add_up_to_the_price_and_keep_signs():
    shap = {"a": 0.3, "b": -0.1, "c": 0.05}
    base = 12.0
    effects = dollar_effects(base, shap)
    price = math.exp(base + sum(shap.values()))
    assert math.fsum(e["dollars"] for e in effects) == pytest.approx(price - math.exp(base), rel=1e-12)
    for effect in effects:
        assert np.sign(effect["dollars"]) == np.sign(shap[effect["feature"]])
        assert effect["factor"] == pytest.approx(math.exp(shap[effect["feature"]]))


def test_dollar_effects_when_shap_values_cancel_out():
    effects = dollar_effects(11.0, {"a": 0.2, "b": -0.2})
    assert math.fsum(e["dollars"] for e in effects) == pytest.approx(0.0, abs=1e-6)
    assert effects[0]["dollars"] == pytest.approx(0.2 * math.exp(11.0))


def test_explanations_are_additive_in_log_space_and_in_dollars(small_model):
    model, frame = small_model
    rows = frame.drop(columns=["price"]).head(25).to_dict("records")
    for result in explain_rows(model, rows):
        shap_sum = math.fsum(c["shap"] for c in result["contributions"])
        assert result["base_value"] + shap_sum == pytest.approx(result["log_price"], abs=1e-4)
        assert math.log(result["price"]) == pytest.approx(result["log_price"], abs=1e-9)
        dollars = math.fsum(e["dollars"] for e in result["dollar_effects"])
        assert result["base_price"] + dollars == pytest.approx(result["price"], rel=1e-4)
        assert result["output_space"] == "log_price"


def test_explain_and_predict_agree(small_model):
    model, frame = small_model
    rows = frame.drop(columns=["price"]).head(10).to_dict("records")
    prices = predict_rows(model, rows)["prices"]
    explained = [r["price"] for r in explain_rows(model, rows)]
    assert explained == pytest.approx(prices, rel=1e-9)


def test_an_explanation_carries_the_same_price_range_and_warnings_as_the_prediction(small_model):
    """explain_rows prices from the explanation's own feature matrix (one prediction, not two)."""
    base, frame = small_model
    model = with_sample_range(base, split_frame(frame), rounds=10)
    rows = frame.drop(columns=["price"]).head(12).to_dict("records")
    rows[0] = {**rows[0], "house_size": None, "state": "Narnia"}
    predicted = predict_rows(model, rows)
    explained = explain_rows(model, rows)
    assert [r["price"] for r in explained] == predicted["prices"]
    assert [r["price_low"] for r in explained] == predicted["price_low"]
    assert [r["price_high"] for r in explained] == predicted["price_high"]
    bounds = zip(predicted["price_low"], predicted["prices"], predicted["price_high"], strict=True)
    assert all(low < price < high for low, price, high in bounds)
    assert [r["warnings"] for r in explained] == predicted["warnings"]
    assert MISSING_FIELD_WARNINGS["house_size"] in explained[0]["warnings"]
    assert any("'Narnia' was not seen" in text for text in explained[0]["warnings"])


def test_unseen_state_zip_and_city_are_priced_with_warnings(small_model):
    model, _ = small_model
    seen = known_location("Texas", rows=1500, seed=3)  # a city and zip of the model's training rows
    answer = predict_rows(model, [raw_row(state="Narnia", zip_code="99999", city="Oz"), raw_row(**seen)])
    prices, warnings = answer["prices"], answer["warnings"]
    assert all(math.isfinite(p) and p > 0 for p in prices)
    assert any("Narnia" in w for w in warnings[0])
    assert any("99999" in w for w in warnings[0])
    assert any("Oz" in w for w in warnings[0])
    assert warnings[1] == []


# --- validation ---------------------------------------------------------------------------


def test_batch_validation_reports_bad_rows_by_index():
    rows = [LISTING, {**LISTING, "bed": -1}, LISTING, {"state": "Ohio"}, {**LISTING, "house_size": float("nan")},
            {"bed": 3}]  # fmt: skip
    good, errors = validate_listings(rows)
    assert [i for i, _ in good] == [0, 2, 3]  # a listing with only its state is priced as it comes
    assert [e["index"] for e in errors] == [1, 4, 5]
    assert errors[0]["detail"][0]["loc"] == ["bed"]
    assert errors[1]["detail"][0]["type"] == "finite_number"  # NaN is not "missing": leave the field out
    assert [d["loc"][0] for d in errors[2]["detail"]] == ["state"]


def _batch_bodies():
    """(content type, body) pairs: valid, bad rows, bad JSON, wrong kinds, hostile nesting."""
    good = json.dumps({"listings": [LISTING, {**LISTING, "zip_code": 2101, "city": " Akron ", "status": "sold"}]})
    nested = "[" * 100_000 + "]" * 100_000
    json_bodies = [
        good,
        json.dumps({"listings": [LISTING, {**LISTING, "bed": -1}, "text", None]}),
        json.dumps({"listings": [LISTING, {**LISTING, "bed": 1.5}]}).replace("1.5", "Infinity"),
        json.dumps({"listings": [LISTING, {**LISTING, "bed": 1.5}]}).replace("1.5", "NaN"),
        json.dumps({"listings": [{**LISTING, "bed": 1.5}]}).replace("1.5", "1e400"),
        json.dumps({"listings": [{**LISTING, "zip_code": True}, {**LISTING, "zip_code": 2101.5}, {**LISTING, "bed": "3"}]}),
        json.dumps({"listings": [{**LISTING, "state": 5}, {**LISTING, "extra": {"a": {}}}, {**LISTING, "bed": 10**30}]}),
        '{"listings": [{"bed": 1, "bed": 2, "bath": 1, "acre_lot": 1, "house_size": 900, "state": "Ohio"}]}',
        json.dumps({"listings": {"bed": 1}}),
        json.dumps({"listings": []}),
        json.dumps({"listings": [LISTING], "extra": 1}),
        json.dumps({"items": [LISTING]}),
        '{"listings": [' + json.dumps(LISTING) + ",]}",
        '{"listings": [{"bed": ' + "[" * 100 + "]" * 100 + "}]}",
        '{"listings": [{"bed": ' + nested + "}]}",
        "", "null", "[]", "\x00\xff\xfe",
    ]  # fmt: skip
    kinds = ["text/plain", None, "application/vnd.api+json", "application/json; charset=utf-8"]
    return [("application/json", body) for body in json_bodies] + [(kind, good) for kind in kinds]


def test_batch_bodies_are_read_as_fastapi_reads_them_and_valid_ones_in_one_pass():
    """/predict/batch reads its own body: for every body, the same answer FastAPI's parsing gave.

    The reference is an app declaring the body as ``BatchRequest`` (how /predict/batch read it
    before), then validating row by row; the checked path is the one-pass ``valid_batch`` with
    ``batch_rows`` + ``validate_listings`` behind it, as in the Serve app.
    """

    def answer(count: int, good: list, errors: list) -> dict:
        return {"count": count, "good": [(i, listing.model_dump()) for i, listing in good], "errors": errors}

    def client(reads_its_own_body: bool) -> TestClient:
        app = FastAPI()
        app.add_exception_handler(
            RequestValidationError, lambda _, exc: JSONResponse({"detail": field_errors(exc)}, status_code=422)
        )
        if reads_its_own_body:

            @app.post("/batch")
            async def own(request: Request) -> dict:
                body, content_type = await request.body(), request.headers.get("content-type")
                listings = valid_batch(body, content_type)
                if listings is not None:
                    return answer(len(listings), list(enumerate(listings)), []) | {"one_pass": True}
                rows = batch_rows(body, content_type)
                return answer(len(rows), *validate_listings(rows)) | {"one_pass": False}
        else:

            @app.post("/batch")
            async def declared(body: BatchRequest) -> dict:
                return answer(len(body.listings), *validate_listings(body.listings))

        return TestClient(app)

    reference, own = client(False), client(True)
    one_pass = 0
    for content_type, body in _batch_bodies():
        headers = {"content-type": content_type} if content_type else {}
        content = body.encode("latin-1")
        expected, got = (
            reference.post("/batch", content=content, headers=headers),
            own.post("/batch", content=content, headers=headers),
        )
        assert got.status_code == expected.status_code, (content_type, body[:80], got.text[:300])
        result = got.json()
        one_pass += bool(result.pop("one_pass", False))
        assert result == expected.json(), (content_type, body[:80])
        if result.get("errors") or got.status_code != 200:
            assert valid_batch(content, content_type) is None  # anything but an all-valid batch goes row by row
    assert one_pass == 6  # all-valid: 4 JSON bodies (incl. empty, extra key, duplicate key), 2 JSON content types


valid_listings = st.fixed_dictionaries(
    {
        "bed": st.integers(0, MAX_BED),
        "bath": st.floats(0, MAX_BATH, allow_nan=False),
        "acre_lot": st.floats(0, 1000, allow_nan=False),
        "house_size": st.floats(MIN_HOUSE_SIZE, MAX_HOUSE_SIZE, allow_nan=False),
        "state": st.sampled_from(STATES) | st.text(min_size=2, max_size=40).filter(lambda s: len(s.strip()) >= 2),
    },
    optional={
        "status": st.sampled_from(["for_sale", "sold", "ready_to_build"]),
        "city": st.text(max_size=80),
        "zip_code": st.integers(0, 99_999) | st.from_regex(r"\A\d{3,5}\Z"),
        "prev_sold_date": st.dates().map(lambda d: d.strftime("%Y-%m-%d")).filter(lambda s: len(s) == 10),
        "brokered_by": st.floats(0, 1e9, allow_nan=False),
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(valid_listings)
def test_any_plausible_listing_is_accepted_and_becomes_a_raw_row(listing):
    row = Listing.model_validate(listing).to_raw_row()
    assert row["price"] is None
    assert row["bed"] == listing["bed"]
    if "zip_code" in listing:
        assert row["zip_code"] == float(int(listing["zip_code"]))


impossible = st.sampled_from(
    [
        ("bed", -1), ("bed", 10_000), ("bath", -0.5), ("acre_lot", -3), ("house_size", 0),
        ("house_size", 10_000_000), ("bed", float("nan")), ("house_size", float("inf")),
        ("acre_lot", float("-inf")), ("zip_code", "ABCDE"), ("zip_code", -5), ("zip_code", 1.5),
        ("prev_sold_date", "yesterday"), ("status", "stolen"), ("state", "X"), ("city", "x" * 81),
        ("bed", "three"), ("bed", [3]), ("street", -1.0), ("brokered_by", 1e12),
    ]
)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(valid_listings, impossible)
def test_impossible_values_are_rejected_naming_the_field(listing, bad):
    field, value = bad
    with pytest.raises(ValidationError) as error:
        Listing.model_validate({**listing, field: value})
    assert field in {str(e["loc"][0]) for e in error.value.errors()}


@settings(max_examples=50, deadline=None)
@given(valid_listings, st.text(min_size=1, max_size=20).filter(lambda k: k not in Listing.model_fields))
def test_unknown_fields_are_rejected(listing, key):
    with pytest.raises(ValidationError):
        Listing.model_validate({**listing, key: 1})


# --- model lifecycle ----------------------------------------------------------------------


class RegistryDouble:
    """In-memory stand-in for the registry (unit test of the swap logic; integration tests use MLflow)."""

    alias = "champion"

    def __init__(self, models: dict[str, LoadedModel], version: str):
        self.models, self.version, self.down, self.loads = models, version, False, 0

    def current_version(self) -> str:
        if self.down:
            raise ConnectionError("registry is down")
        return self.version

    def load(self, version: str) -> LoadedModel:
        self.loads += 1
        return self.models[version]


def loaded(model, version: str) -> LoadedModel:
    return LoadedModel(model=model, name="m", version=version, run_id=f"run{version}", alias="champion")


def test_swap_only_when_the_alias_moves_and_keep_the_last_good_model(small_model):
    model, _ = small_model
    registry = RegistryDouble({"1": loaded(model, "1"), "2": loaded(model, "2")}, "1")
    swaps = []
    served = ServedModel(registry, on_swap=lambda old, new: swaps.append((old, new)))

    async def scenario():
        first = await served.wait_until_loaded(timeout_s=5)
        assert first.version == "1"
        assert await served.refresh() is False  # alias unchanged: nothing reloaded
        registry.version = "2"
        assert await served.refresh() is True
        assert first.version == "1"  # the object an in-flight batch holds is untouched
        registry.down = True
        assert await served.refresh() is False
        return served.status()

    status = asyncio.run(scenario())
    assert swaps == [("none", "1"), ("1", "2")]
    assert registry.loads == 2
    assert status["model_version"] == "2"
    assert status["registry_reachable"] is False
    assert "still serving version 2" in status["last_error"]


def test_a_served_model_predicts_on_one_thread_with_every_booster_the_range_included(small_model):
    """Serving sets the thread count once at load (predict_rows no longer wraps each call in a config context),
    and builds each booster's one-row leaf table then, not on the first one-listing request."""
    base, frame = small_model
    model = with_sample_range(base, split_frame(frame), rounds=10)
    boosters = [*model.boosters, model.interval.scale]

    def threads() -> set[str]:
        return {json.loads(b.save_config())["learner"]["generic_param"]["nthread"] for b in boosters}

    for booster in boosters:
        booster.set_param({"nthread": 0})  # as trained elsewhere: all cores
    assert threads() == {"0"}
    asyncio.run(ServedModel(RegistryDouble({"1": loaded(model, "1")}, "1")).wait_until_loaded(timeout_s=5))
    assert threads() == {str(XGB_THREADS)}
    assert all(dense_predict._leaf_sums.get(b) is not None for b in boosters)


def test_a_replica_that_cannot_load_any_model_fails_to_start():
    registry = RegistryDouble({}, "1")
    registry.down = True
    served = ServedModel(registry)
    with pytest.raises(RuntimeError, match="no model loaded"):
        asyncio.run(served.wait_until_loaded(timeout_s=0.3, retry_s=0.1))
    assert served.status()["loaded"] is False


# --- configuration ------------------------------------------------------------------------


def test_serve_config_is_a_valid_deploy_config_with_autoscaling_everywhere():
    config = ServeDeploySchema.model_validate(load_serve_config())
    (app,) = config.applications
    assert app.import_path == "serve_app.app:build_app"
    assert app.args["model_alias"] == "champion"
    assert {d.name for d in app.deployments} == {"Api", "Predictor"}
    for deployment in app.deployments:
        autoscaling = AutoscalingConfig.model_validate(deployment.autoscaling_config)
        assert 1 <= autoscaling.min_replicas <= autoscaling.max_replicas
        assert deployment.max_ongoing_requests >= autoscaling.target_ongoing_requests
        if isinstance(deployment.user_config, dict) and "max_batch_size" in deployment.user_config:
            assert deployment.max_ongoing_requests > deployment.user_config["max_batch_size"]


def test_builder_args_are_settings_and_the_graph_builds():
    from rayestate.settings import Settings
    from serve_app.app import build_app

    args = load_serve_config()["applications"][0]["args"]
    Settings(**args)  # every arg is a known, valid setting
    assert build_app(args) is not None


def test_adapted_config_only_changes_what_it_is_asked_to():
    original = load_serve_config()
    adapted = adapt_serve_config(
        original, port=1234, args={"model_name": "x"}, extra_apps={"down": {"model_name": "y"}}
    )
    assert adapted["http_options"]["port"] == 1234
    assert [a["route_prefix"] for a in adapted["applications"]] == ["/", "/down"]
    assert adapted["applications"][1]["args"]["model_name"] == "y"
    assert original["applications"][0]["args"]["model_name"] == "rayestate-price"
    ServeDeploySchema.model_validate(adapted)


def test_metric_labels_are_bounded():
    assert endpoint_label({"path": "/predict"}) == "/predict"
    assert endpoint_label({"path": "/down/explain", "root_path": "/down"}) == "/explain"
    assert endpoint_label({"path": "/wp-admin/../../etc"}) == "other"


def test_columns_and_rows_give_the_same_prices(small_model):

    model, _ = small_model
    listings = [Listing.model_validate({**LISTING, "zip_code": z, "bed": b}) for z, b in [("02101", 2), (None, 4)]]
    by_rows = predict_rows(model, [listing.to_raw_row() for listing in listings])
    by_columns = predict_rows(model, validated_columns(listings))
    assert by_columns["prices"] == pytest.approx(by_rows["prices"], rel=1e-12)
    assert by_columns["warnings"] == by_rows["warnings"]


def test_a_failing_row_fails_alone_in_a_batch():
    from serve_app.deployments import isolate_failures

    def compute(rows):
        if any(row.get("poison") for row in rows):
            raise ValueError("cannot price this")
        return [{"price": row["x"] * 2} for row in rows]

    results = isolate_failures(compute, [{"x": 1}, {"x": 2, "poison": True}, {"x": 3}])
    assert results[0] == {"price": 2} and results[2] == {"price": 6}
    assert "cannot price this" in results[1]["error"]
    assert isolate_failures(compute, [{"x": 5}]) == [{"price": 10}]


def test_a_wait_for_the_explanation_batcher_is_refused_naming_the_key():
    """The explainer's DrainBatcher has no wait (stop 33's serve_config had one): a clear error, not an AttributeError."""
    from serve_app.deployments import ListingReplica

    replica = ListingReplica.__new__(ListingReplica)  # reconfigure needs no model
    replica._settings = Settings()
    asyncio.run(replica.reconfigure({"explain_max_batch_size": 8, "batch_wait_timeout_s": 0.002}))
    assert replica._explainer.max_batch_size == 8
    with pytest.raises(ValueError, match="user_config explain_batch_wait_timeout_s: this batcher never waits"):
        asyncio.run(replica.reconfigure({"explain_batch_wait_timeout_s": 0.003}))


def test_a_missing_alias_is_not_reported_as_an_unreachable_registry():
    class NoAlias(RegistryDouble):
        def current_version(self) -> str:
            raise LookupError("m@champion: alias not found")

    served = ServedModel(NoAlias({}, "1"))
    assert asyncio.run(served.refresh()) is False
    status = served.status()
    assert status["registry_reachable"] is True and "alias names no model" in status["last_error"]


def test_batch_columns_turn_back_into_the_raw_columns_the_model_and_the_log_see():
    listings = [
        Listing.model_validate({"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500, "state": "Texas",
                                "zip_code": "00601", "city": "Austin", "prev_sold_date": "2019-05-01"}),
        Listing.model_validate({"bed": 1, "bath": 1, "acre_lot": 0.1, "house_size": 500, "state": "Ohio"}),
    ]  # fmt: skip
    rows = [listing.to_raw_row() for listing in listings]
    expected = {name: [row[name] for row in rows] for name in RAW_COLUMNS if name != "price"}
    assert raw_columns(validated_columns(listings)) == expected
    assert raw_columns(validated_columns([])) == {name: [] for name in expected}


def test_a_call_whose_replica_died_is_sent_again_and_gives_up_with_a_503():
    """The ingress's retry of idempotent model calls (a stand-in for the DeploymentHandle call)."""
    from fastapi import HTTPException
    from ray.exceptions import ActorDiedError

    from serve_app.app import REPLICA_LOST_ATTEMPTS, _answer

    def flaky(failures: int, attempts: list):
        def call():
            attempts.append(1)

            async def answer():
                if len(attempts) <= failures:
                    raise ActorDiedError()
                return {"price": 1.0, "model_version": "3"}

            return answer()

        return call

    attempts: list = []
    assert asyncio.run(_answer(flaky(1, attempts), "predictor")) == {"price": 1.0, "model_version": "3"}
    assert len(attempts) == 2
    attempts = []
    with pytest.raises(HTTPException) as lost:
        asyncio.run(_answer(flaky(99, attempts), "explainer"))
    assert lost.value.status_code == 503 and "explainer" in lost.value.detail
    assert len(attempts) == REPLICA_LOST_ATTEMPTS


def test_a_batch_logged_after_its_response_reaches_the_store(tmp_path):
    """/predict/batch logs in a background task: that must run where the log's flush loop can start.

    Starlette runs a plain background function in a worker thread, with no event loop: a batch-only
    replica then buffered its rows for ever. The Api's own ``_log_batch`` runs here under Starlette.
    """
    api_class = Api.func_or_class
    state = Settings(state_dir=tmp_path)
    api = SimpleNamespace(_inference_log=InferenceLogWriter(state, flush_s=0.1))
    api._log = lambda *args: api_class._log(api, *args)
    listings = [Listing.model_validate(LISTING), Listing.model_validate({**LISTING, "bed": 4})]
    columns = validated_columns(listings)
    app = FastAPI()

    @app.post("/batch")
    async def batch(background: BackgroundTasks) -> dict:
        answer = {"prices": [300_000.0, 350_000.0], "price_low": [1.0, 2.0], "price_high": [3.0, 4.0]}
        background.add_task(api_class._log_batch, api, columns, answer, "3", 0.0)
        return {}

    with TestClient(app) as client:
        assert client.post("/batch").status_code == 200
        for _ in range(100):
            client.get("/docs")  # keeps the app's event loop turning
            if api._inference_log.rows_written == 2:
                break
            asyncio.run(asyncio.sleep(0.05))
    frame = read_inference_log(state)
    assert frame["price"].tolist() == [300_000.0, 350_000.0] and set(frame["endpoint"]) == {"/predict/batch"}

"""Hostile input against the running Serve app: schemathesis on its own OpenAPI spec, plus the limits.

Every request, however malformed, must get a 2xx or a 4xx whose body is JSON with a ``detail``;
never a 5xx, a hang or a stack trace. Schemathesis generates both schema-valid and schema-violating
requests (its default modes) from the spec the app publishes at /openapi.json.
"""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

pytestmark = pytest.mark.timeout(600)

#: Examples per operation: enough to hit each field's bounds and types, small enough for `make test`.
EXAMPLES_PER_OPERATION = 25
LISTING = {"bed": 3, "bath": 2, "acre_lot": 0.2, "house_size": 1500, "state": "Texas", "city": "Austin"}


def client_errors_are_json_with_detail(ctx, response, case) -> None:
    """A 4xx says what was wrong, as JSON: {"detail": ...} (FastAPI's convention, which the UI reads)."""
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
        body = json.loads(response.content)
        assert isinstance(body, dict) and body.get("detail"), f"{response.status_code} without a detail: {body}"
        assert "Traceback" not in response.text


CHECKS = [not_a_server_error, response_schema_conformance, client_errors_are_json_with_detail]


@pytest.fixture(scope="module")
def live_schema(serve_app_url):
    """The OpenAPI document the running app serves (not a copy in the repo)."""
    schema = schemathesis.openapi.from_url(f"{serve_app_url}/openapi.json")
    schema.config.update(base_url=serve_app_url)
    return schema


#: (method, path, takes a body). schemathesis.pytest.from_fixture would find these itself, but it
#: touches a pytest internal (Node._nodeid) that pytest 9 removed, so the operations are listed here
#: and the first test checks the list against the live spec.
OPERATIONS = [
    ("POST", "/predict", True),
    ("POST", "/predict/batch", True),
    ("POST", "/explain", True),
    ("GET", "/health", False),
    ("GET", "/ready", False),
    ("GET", "/model", False),
    ("POST", "/reload", False),
]
CASES = [
    (m, p, mode) for m, p, body in OPERATIONS for mode in GenerationMode if body or mode is GenerationMode.POSITIVE
]


def test_the_fuzzed_operations_are_exactly_the_published_ones(live_schema):
    published = {(op.ok().method.upper(), op.ok().path) for op in live_schema.get_all_operations()}
    assert published == {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_generated_requests_never_get_a_server_error(live_schema, method, path, mode):
    operation = live_schema[path][method]
    statuses = []

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,  # the same examples in every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case):
        response = case.call(timeout=90)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()
    assert statuses, "no request was generated"
    if mode is GenerationMode.NEGATIVE:  # the invalid requests did reach validation and were refused
        assert any(400 <= status < 500 for status in statuses), statuses


# --- limits: each a clear 4xx naming the problem ------------------------------------------------


@pytest.fixture(scope="module")
def api(serve_app_url):
    with httpx.Client(base_url=serve_app_url, timeout=60) as client:
        yield client


def detail_of(response, status: int):
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    return response.json()["detail"]


def post_raw(api, path: str, body: str | bytes):
    return api.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("field", "length"), [("state", 41), ("city", 81), ("zip_code", 6)])
def test_strings_over_their_limit_are_422_naming_the_field(api, field, length):
    detail = detail_of(api.post("/predict", json={**LISTING, field: "1" * length}), 422)
    assert detail[0]["loc"][-1] == field


def test_a_megabyte_string_is_refused_without_echoing_it(api):
    response = api.post("/explain", json={**LISTING, "city": "x" * 1_000_000})
    detail = detail_of(response, 422)
    assert detail[0]["loc"][-1] == "city"
    assert len(response.content) < 2_000  # the input is never reflected back


@pytest.mark.parametrize("path", ["/predict", "/explain"])
@pytest.mark.parametrize("token", ["NaN", "-Infinity"])
def test_non_finite_numbers_in_every_numeric_field_are_422(api, path, token):
    for field in ("bath", "acre_lot", "house_size", "brokered_by", "street"):
        body = json.dumps({**LISTING, field: 1.5}).replace("1.5", token)
        detail = detail_of(post_raw(api, path, body), 422)
        assert detail[0]["loc"][-1] == field


def test_non_finite_numbers_inside_a_batch_reject_only_that_row(api):
    body = json.dumps({"listings": [LISTING, {**LISTING, "bed": 1.5}]}).replace("1.5", "Infinity")
    response = post_raw(api, "/predict/batch", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["prices"][0] > 0 and result["prices"][1] is None
    assert result["errors"][0]["index"] == 1 and result["errors"][0]["detail"][0]["loc"] == ["bed"]


@pytest.mark.parametrize("depth", [100, 100_000])
@pytest.mark.parametrize("path", ["/predict", "/explain"])
def test_deeply_nested_json_is_a_4xx(api, path, depth):
    nested = "[" * depth + "]" * depth
    response = post_raw(api, path, f'{{"bed": {nested}}}')
    assert 400 <= response.status_code < 500, response.text[:300]
    assert detail_of(response, response.status_code)


def test_deeply_nested_json_in_a_batch_is_a_row_error_or_a_4xx(api):
    nested = "[" * 100 + "]" * 100
    row = post_raw(api, "/predict/batch", f'{{"listings": [{{"bed": {nested}}}]}}')
    assert row.status_code == 200 and row.json()["errors"][0]["detail"][0]["loc"] == ["bed"], row.text[:300]
    nested = "[" * 100_000 + "]" * 100_000  # past any parser's recursion limit: the body as a whole is refused
    whole = post_raw(api, "/predict/batch", f'{{"listings": [{{"bed": {nested}}}]}}')
    assert 400 <= whole.status_code < 500, whole.text[:300]
    assert detail_of(whole, whole.status_code)


def test_deeply_nested_objects_in_a_batch_row_are_reported_for_that_row(api):
    nested: dict = {}
    for _ in range(500):
        nested = {"a": nested}
    response = api.post("/predict/batch", json={"listings": [LISTING, {**LISTING, "extra": nested}]})
    assert response.status_code == 200, response.text[:300]
    assert [e["index"] for e in response.json()["errors"]] == [1]


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])  # /predict/batch reads its body itself
def test_chunked_upload_over_the_body_limit_is_413(api, path):
    def chunks():
        piece = b" " * (1024 * 1024)
        for _ in range(17):  # 17 MiB against the 16 MiB default, with no Content-Length
            yield piece

    response = api.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert "exceeds" in detail_of(response, 413)


def test_many_bad_rows_in_one_batch_are_each_reported(api):
    listings = [{**LISTING, "bed": -1}] * 2_000
    response = api.post("/predict/batch", json={"listings": listings})
    assert response.status_code == 200
    body = response.json()
    assert body["prices"] == [None] * 2_000 and len(body["errors"]) == 2_000 and body["model_version"] is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", json.dumps(LISTING)), ("application/json", "\x00\xff\xfe"), ("application/json", "[]")],
    ids=["not-json-type", "binary", "array"],
)
def test_wrong_body_kinds_are_4xx(api, content_type, body):
    response = api.post("/predict", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text[:300]
    assert detail_of(response, response.status_code)


def test_lone_surrogates_in_strings_never_break_the_response(api):
    # Valid JSON escapes for an unpaired UTF-16 surrogate: not encodable as UTF-8 on the way out.
    body = json.dumps({**LISTING, "city": "A"}).replace('"A"', '"\\ud800x"')
    response = post_raw(api, "/predict", body)
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 422:
        assert detail_of(response, 422)[0]["loc"][-1] == "city"

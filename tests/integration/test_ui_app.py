"""Every UI page through streamlit's AppTest, against the real Serve app on loopback.

Expected numbers come from the same API, asked directly over HTTP, so a page that shows a
stale, rounded-wrong or mixed-up answer fails. The API-down path points the UI at a loopback
port nothing listens on.
"""

from __future__ import annotations

import math
import time
import uuid

import pytest
from streamlit.testing.v1 import AppTest

from rayestate.localstack import free_port
from serve_app.app import MODEL_REPORT_TTL_S
from tests.support.ui import APP, PAGES, api, charts, click, metrics, no_exception, shifted_drift_report
from ui.charts import money
from ui.listings import DEFAULT_LISTING

pytestmark = pytest.mark.timeout(900)


# --- price a home ----------------------------------------------------------------------------


def test_price_page_prices_and_explains_the_home(ui, serve_app_url):
    at = ui.run()
    no_exception(at)
    at.selectbox(key="price.state").set_value("Texas")
    at.number_input(key="price.bed").set_value(4)
    at.text_input(key="price.city").input("Austin")
    click(at, "Price this home")
    no_exception(at)

    listing = {**DEFAULT_LISTING, "state": "Texas", "bed": 4, "city": "Austin"}
    expected = api(serve_app_url, "/predict", listing)["price"]
    shown = metrics(at)
    assert shown["Predicted price"] == money(expected)
    assert shown["Price per sq ft"] == money(expected / listing["house_size"])
    assert shown["Price per bedroom"] == money(expected / 4)
    assert shown["Price per acre of lot"] == money(expected / listing["acre_lot"])
    assert any("Model version" in c.value for c in at.caption)

    assert [h.value for h in at.header] == ["Why this price"]
    (waterfall, steps), (_, dollars), (_, feature_steps) = charts(at)
    assert waterfall["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    assert steps["step"].iloc[0] == "Average home (base value)" and steps["text"].iloc[-1] == money(expected)
    explanation = api(serve_app_url, "/explain", listing)
    assert steps["end"].iloc[0] == pytest.approx(math.exp(explanation["base_value"]))
    biggest = max(explanation["groups"], key=lambda g: abs(g["shap"]))
    assert steps["step"].iloc[1].startswith(biggest["label"])  # the listing's own fields by default
    assert feature_steps["end"].iloc[-1] == steps["end"].iloc[-1]  # the engineered features reach the same price
    comparables, contributions = at.dataframe[0].value, at.dataframe[1].value
    assert len(comparables) == len(explanation["comparables"]) > 0
    assert len(contributions) == len(explanation["contributions"])
    assert dollars["dollars"].sum() == pytest.approx(expected - explanation["base_price"], rel=1e-4)
    range_shown = next(m for m in at.metric if m.label == "Predicted price").delta
    assert range_shown == f"{money(explanation['price_low'])} – {money(explanation['price_high'])}"


def test_price_page_reports_what_the_api_rejects(ui):
    at = ui.run()
    at.text_input(key="price.zip").input("12ab")
    click(at, "Price this home")
    no_exception(at)
    assert "Predicted price" not in metrics(at)
    assert any("zip_code" in w.value and "rejected" in w.value for w in at.warning)


# --- compare ----------------------------------------------------------------------------------


def test_compare_states_in_one_batch(ui, serve_app_url):
    at = ui.run()
    at.switch_page("views/compare.py").run()
    no_exception(at)
    at.multiselect[0].set_value(["Ohio", "California", "Florida"])
    click(at, "Compare")
    no_exception(at)
    table = at.dataframe[0].value
    assert table["variant"].tolist() == ["Ohio", "California", "Florida"]
    listings = [{**DEFAULT_LISTING, "state": s} for s in ("Ohio", "California", "Florida")]
    expected = api(serve_app_url, "/predict/batch", {"listings": listings})["prices"]
    assert table["price"].tolist() == [money(p) for p in expected]
    assert charts(at)


def test_compare_living_areas_and_a_typo(ui, serve_app_url):
    at = ui.run()
    at.switch_page("views/compare.py").run()
    at.radio(key="compare.dimension").set_value("house_size").run()
    at.text_input[-1].input("1000, big")
    click(at, "Compare")
    assert any("'big' is not a number" in w.value for w in at.warning)
    at.text_input[-1].input("1000, 2500")
    click(at, "Compare")
    no_exception(at)
    table = at.dataframe[0].value
    assert table["variant"].tolist() == ["1,000 sq ft", "2,500 sq ft"]
    listings = [{**DEFAULT_LISTING, "house_size": s} for s in (1000.0, 2500.0)]
    assert table["price"].tolist() == [
        money(p) for p in api(serve_app_url, "/predict/batch", {"listings": listings})["prices"]
    ]


# --- batch pricing ----------------------------------------------------------------------------

GOOD_AND_BAD = (
    b"bed,bath,acre_lot,house_size,state,city,zip_code,price,note\n"
    b"3,2,0.25,1800,Florida,Tampa,33602,450000,first\n"
    b"-1,2,0.25,1800,Florida,,,300000,negative beds\n"
    b"4,3,0.5,2600,Texas,Austin,,,no listed price\n"
    b"2,1,,900,Ohio,,,150000,no lot size\n"
)


def test_batch_page_prices_good_rows_and_names_bad_ones(ui, serve_app_url):
    at = ui.run()
    at.switch_page("views/batch.py").run()
    no_exception(at)
    at.file_uploader[0].set_value(("listings.csv", GOOD_AND_BAD, "text/csv"))
    at.run()
    no_exception(at)
    assert metrics(at)["Rows"] == "4" and metrics(at)["Priced"] == "3" and metrics(at)["Rejected"] == "1"
    rejected = at.dataframe[0].value
    assert rejected["note"].tolist() == ["negative beds"]
    assert "bed:" in rejected["error"].iloc[0]
    priced = at.dataframe[1].value
    assert "acre_lot missing" in priced[priced["note"] == "no lot size"]["warnings"].iloc[0]  # priced as it comes
    assert {"price_low", "price_high"} <= set(priced.columns)
    good = [
        {
            "bed": 3.0,
            "bath": 2.0,
            "acre_lot": 0.25,
            "house_size": 1800.0,
            "state": "Florida",
            "city": "Tampa",
            "zip_code": 33602.0,
        },
        {"bed": 4.0, "bath": 3.0, "acre_lot": 0.5, "house_size": 2600.0, "state": "Texas", "city": "Austin"},
    ]
    good.append({"bed": 2.0, "bath": 1.0, "house_size": 900.0, "state": "Ohio"})
    expected = api(serve_app_url, "/predict/batch", {"listings": good})["prices"]
    assert priced["predicted_price"].tolist() == [money(round(p)) for p in expected]
    assert any(d.label == "Download priced CSV" for d in at.get("download_button"))


# --- models and drift -------------------------------------------------------------------------


def test_models_page_shows_the_champion_and_its_history(ui, serve_app_url, champion):
    at = ui.run()
    at.switch_page("views/models.py").run()
    no_exception(at)
    card = api(serve_app_url, "/model")
    shown = metrics(at)
    assert shown["Champion"] == f"v{champion.version}" == f"v{card['champion']['version']}"
    assert shown["Serving now"] == f"v{champion.version}"
    history = next(d.value for d in at.dataframe if "decision" in d.value.columns)
    assert [str(v) for v in history["version"]] == [h["version"] for h in card["promotion_history"]]


@pytest.fixture
def served_drift_report(serve_app_url, serve_state_dir):
    """A real drift report published where the Serve app reads them; removed afterwards."""
    from ray_jobs.drift import save_drift_report
    from rayestate import store
    from rayestate.settings import Settings

    batch_id = f"ui-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(state_dir=serve_state_dir)
    path = save_drift_report(settings, batch_id, shifted_drift_report(1.4))
    saved = time.monotonic()
    try:
        deadline = saved + 60
        while batch_id not in [r.get("batch_id") for r in api(serve_app_url, "/model")["drift_reports"]]:
            assert time.monotonic() < deadline, "the Serve app never listed the saved drift report"
            time.sleep(1)
        # Each ingress replica caches /model for MODEL_REPORT_TTL_S: the one answering above read the
        # new report, a sibling may still hold a copy from just before the save until its TTL runs out.
        time.sleep(max(0.0, saved + MODEL_REPORT_TTL_S + 0.5 - time.monotonic()))
        yield batch_id
    finally:
        store.open_store(settings).fs.delete_file(path)


def test_drift_page_shows_the_reports_the_api_serves(ui, serve_app_url, served_drift_report):
    import streamlit as st

    st.cache_data.clear()  # the UI caches /model briefly; this session must see the new report
    at = ui.run()
    at.switch_page("views/drift.py").run()
    no_exception(at)
    reports = api(serve_app_url, "/model")["drift_reports"]
    index = [r["batch_id"] for r in reports].index(served_drift_report)
    at.selectbox(key="drift.report").set_value(index).run()
    no_exception(at)
    report = reports[index]
    drifted = [c["feature"] for c in report["features"] if c["verdict"] == "drift"]
    assert "house_size" in drifted
    assert at.error[0].value.startswith("**Drift detected.**")
    assert metrics(at)["Checks drifted"] == f"{len(drifted)} of {len(report['features'])}"
    titles = [str(spec.get("title")) for spec, _ in charts(at)]
    assert any(t.startswith("house_size") for t in titles)


# --- the API is down --------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_unreachable_api(page, monkeypatch):
    monkeypatch.setenv("RAYESTATE_API_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    no_exception(at)
    assert at.sidebar.error[0].value == "API not reachable"
    if page == "views/price.py":
        click(at, "Price this home")
        no_exception(at)
        assert "Predicted price" not in metrics(at)
    if page == "views/batch.py":
        at.file_uploader[0].set_value(("listings.csv", GOOD_AND_BAD, "text/csv"))
        at.run()
    if page == "views/compare.py":
        click(at, "Compare")
    no_exception(at)
    messages = [e.value for e in at.main.error]
    assert messages and all("is not reachable" in m for m in messages), messages

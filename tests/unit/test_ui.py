"""UI pure functions: the waterfall arithmetic, dollar view, history metrics, drift charts, CSV shaping.

Explanations and drift reports here are real ones: a small real model explained by the serving
code (serve_app.inference, no Ray) and reports computed by ray_jobs.drift on synthetic listings.
Charts are checked on their Vega-Lite spec (``to_dict()``): the marks, what each encodes, and the
rows they carry, so a chart that plots the wrong field or drops rows fails here.
"""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from rayestate.registry import VersionRecord
from rayestate.schema import Listing
from tests.support.listings import known_location
from ui import charts
from ui.client import describe_detail
from ui.listings import (
    DEFAULT_LISTING,
    listing_from_inputs,
    listings_from_frame,
    missing_columns,
    parse_numbers,
    price_ratios,
    priced_frame,
    read_csv,
    variants,
)

#: A home in the synthetic market the model below is trained on (its city and zip are known to it).
HOME = {**DEFAULT_LISTING, **known_location("Florida", rows=1500, seed=3), "prev_sold_date": "2015-06-01"}


@pytest.fixture(scope="module")
def explanation() -> dict:
    from serve_app.inference import explain_rows
    from tests.support.models import sample_listings, train_sample_model

    model = train_sample_model(sample_listings(1500, seed=3), rounds=30)
    return explain_rows(model, [Listing(**HOME).to_raw_row()])[0]


def layers(spec: dict) -> list[dict]:
    """The layers of a chart spec: a facet's inner layers, a layer chart's, or the chart itself."""
    inner = spec.get("spec", spec)
    return inner.get("layer", [inner])


def marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in layers(spec)]


def rows(spec: dict) -> list[dict]:
    """The data rows a chart spec carries (Altair inlines them once, under ``datasets``)."""
    (data,) = spec["datasets"].values()
    return data


def encoded(layer: dict, channel: str) -> tuple[str, str]:
    """(field, Vega-Lite type) a layer encodes on ``channel``."""
    return layer["encoding"][channel]["field"], layer["encoding"][channel]["type"]


@pytest.fixture(scope="module")
def drift_reports() -> dict:
    from ray_jobs.drift import drift_report
    from rayestate.devstack.synthetic import generate_listings
    from rayestate.settings import Settings

    settings = Settings()
    reference, same = generate_listings(6000, seed=1), generate_listings(6000, seed=2)
    shifted = same.assign(house_size=same["house_size"] * 1.4)
    return {
        "drift": drift_report(reference, shifted, settings).to_dict(),
        "none": drift_report(reference, same, settings).to_dict(),
    }


# --- formatting -------------------------------------------------------------------------------


def test_formatting():
    assert charts.money(1234567.4) == "$1,234,567"
    assert charts.money(-2500, signed=True) == "−$2,500"
    assert charts.money(float("nan")) == "—"
    assert charts.percent_effect(1.123) == "+12.3%"
    assert charts.percent_effect(0.9) == "−10.0%"
    assert [charts.compact(v) for v in (2005.0, 3.5, 1800, 250_000, 1_200_000)] == [
        "2,005",
        "3.5",
        "1,800",
        "250k",
        "1.2M",
    ]
    assert charts.feature_value_text("te_zip", math.log(300_000)) == "≈ $300,000"
    assert charts.feature_value_text("te_city_ppsf", math.log(250)) == "≈ $250 per sq ft"
    assert charts.feature_value_text("status", "ready_to_build") == "ready to build"
    assert charts.feature_value_text("bed", None) == "missing"


# --- the explanation --------------------------------------------------------------------------


def test_waterfall_chains_from_base_value_to_the_prediction(explanation):
    steps = charts.waterfall_steps(explanation, top=4, by="features")
    assert steps["kind"].iloc[0] == "base" and steps["kind"].iloc[-1] == "prediction"
    assert steps["end"].iloc[0] == pytest.approx(math.exp(explanation["base_value"]))
    features = steps[steps["kind"].isin(["up", "down"])]
    assert len(features) == 5  # 4 largest + the rest pooled
    assert features["step"].iloc[-1] == f"{len(explanation['contributions']) - 4} other features"
    # each bar starts where the previous one ended, and multiplies the price by exp(shap)
    assert features["start"].iloc[1:].to_numpy() == pytest.approx(features["end"].iloc[:-1].to_numpy())
    assert (features["end"] / features["start"]).to_numpy() == pytest.approx(features["factor"].to_numpy())
    # float32 SHAP values: base + sum(shap) matches the model's log price to ~1e-6
    assert features["end"].iloc[-1] == pytest.approx(explanation["price"], rel=1e-5)
    assert steps["end"].iloc[-1] == explanation["price"]
    biggest = max(explanation["contributions"], key=lambda c: abs(c["shap"]))
    assert features["text"].iloc[0] == charts.percent_effect(math.exp(biggest["shap"]))
    assert steps["text"].iloc[-1] == charts.money(steps["end"].iloc[-1])


@given(hs.lists(hs.floats(-1.5, 1.5), min_size=1, max_size=25), hs.integers(1, 12))
def test_waterfall_product_of_factors_is_the_price(shaps, top):
    base = 12.0
    explanation = {
        "base_value": base,
        "contributions": [{"feature": f"f{i}", "value": i, "shap": s} for i, s in enumerate(shaps)],
    }
    steps = charts.waterfall_steps(explanation, top=top, by="features")
    features = steps[steps["kind"].isin(["up", "down"])]
    assert len(features) == min(len(shaps), top) + (len(shaps) > top)
    assert math.prod(features["factor"]) * math.exp(base) == pytest.approx(math.exp(base + math.fsum(shaps)), rel=1e-9)
    assert features["end"].iloc[-1] == pytest.approx(math.exp(base + math.fsum(shaps)), rel=1e-9)


def test_the_default_waterfall_walks_the_listings_own_fields(explanation):
    steps = charts.waterfall_steps(explanation, top=3)
    fields = steps[steps["kind"].isin(["up", "down"])]
    groups = sorted((g for g in explanation["groups"] if g["shap"] != 0.0), key=lambda g: -abs(g["shap"]))
    assert fields["step"].iloc[0].startswith(groups[0]["label"])
    assert fields["end"].iloc[-1] == pytest.approx(explanation["price"], rel=1e-5)  # groups add up like features
    assert len(fields) == min(3, len(groups)) + (len(groups) > 3)


def test_waterfall_chart_uses_a_log_price_axis(explanation):
    spec = charts.waterfall_chart(explanation).to_dict()
    bars = spec["layer"][0]["encoding"]
    assert bars["x"]["scale"]["type"] == "log"
    assert bars["x2"]["field"] == "end"


def test_dollar_view_adds_up_to_price_minus_base_price(explanation):
    frame = charts.dollar_frame(explanation, top=3)
    assert len(frame) == 4
    assert frame["dollars"].sum() == pytest.approx(explanation["price"] - explanation["base_price"], rel=1e-4)
    assert set(frame["direction"]) <= {"raises", "lowers"}

    spec = charts.dollar_chart(explanation, top=3).to_dict()
    assert marks(spec) == ["bar", "text", "text"]  # bars, then labels right of gains and left of losses
    bars, right, left = layers(spec)
    assert encoded(bars, "x") == ("dollars", "quantitative") and encoded(bars, "y") == ("feature", "nominal")
    assert encoded(bars, "color") == ("direction", "nominal")
    assert bars["encoding"]["y"]["sort"] == frame["feature"].tolist()  # largest effect on top
    assert right["transform"] == [{"filter": "datum.dollars >= 0"}] and right["mark"]["align"] == "left"
    assert left["transform"] == [{"filter": "datum.dollars < 0"}] and left["mark"]["align"] == "right"
    assert [(r["feature"], r["dollars"], r["text"]) for r in rows(spec)] == list(
        frame[["feature", "dollars", "text"]].itertuples(index=False, name=None)
    )


def test_contributions_table_has_every_feature_largest_first(explanation):
    table = charts.contributions_table(explanation)
    assert len(table) == len(explanation["contributions"])
    shap = table["SHAP (log price)"].abs().to_numpy()
    assert list(shap) == sorted(shap, reverse=True)
    assert (table["dollars"] != "—").all()


# --- model history -----------------------------------------------------------------------------


def test_metrics_over_versions_from_tags():
    history = [
        VersionRecord(version="3", aliases=["champion"], decision="promoted", metrics={"val_mdape": 0.12}),
        VersionRecord(version="2", decision="rejected", metrics={"val_mdape": 0.18, "rmse": float("nan")}),
        VersionRecord(version="1", metrics={"rmse": 0.3}),  # registered, not decided yet
    ]
    frame = charts.metrics_frame(history)
    assert sorted(map(tuple, frame[["version", "metric", "value", "decision"]].to_numpy().tolist())) == [
        (1, "rmse", 0.3, "undecided"),
        (2, "val_mdape", 0.18, "rejected"),  # a NaN metric is left out
        (3, "val_mdape", 0.12, "promoted"),
    ]
    assert charts.default_metrics(["rows", "val_mdape", "seed", "rmse", "decision.diff_mae_log"]) == [
        "val_mdape",
        "rmse",
    ]
    assert charts.default_metrics(["rows", "rmse", "r2_log", "mdape"]) == ["mdape", "r2_log"]
    assert charts.decision_of(VersionRecord(version="4", aliases=["champion"])) == "champion"  # made champion by hand

    spec = charts.metrics_chart(frame).to_dict()
    assert spec["facet"]["row"]["field"] == "metric"  # one panel per metric
    assert marks(spec) == ["line", "point"]
    line, points = layers(spec)
    for layer in (line, points):
        assert encoded(layer, "x") == ("version", "ordinal") and encoded(layer, "y") == ("value", "quantitative")
    assert encoded(points, "color") == ("decision", "nominal")
    assert points["encoding"]["color"]["scale"]["domain"] == list(dict.fromkeys(frame["decision"]))
    assert rows(spec) == frame.to_dict("records")


# --- drift -------------------------------------------------------------------------------------


def test_drift_checks_are_listed_drift_first(drift_reports):
    report = drift_reports["drift"]
    table = charts.drift_checks_frame(report)
    assert len(table) == len(report["features"])
    assert table["verdict"].iloc[0] == "drift"
    assert "house_size" in set(table.loc[table["verdict"] == "drift", "feature"])
    verdicts = table["verdict"].map({"drift": 0, "no_drift": 1, "insufficient_data": 2}).to_numpy()
    assert list(verdicts) == sorted(verdicts)

    spec = charts.effect_chart(report).to_dict()
    assert spec["facet"]["row"]["field"] == "metric"  # one panel per effect metric (PSI, ...)
    assert marks(spec) == ["bar", "tick"]  # each check's effect size, and its threshold as a tick
    bars, ticks = layers(spec)
    assert encoded(bars, "x") == ("effect_size", "quantitative")
    assert encoded(ticks, "x") == ("threshold", "quantitative")
    assert encoded(bars, "y") == encoded(ticks, "y") == ("check", "nominal")
    assert encoded(bars, "color") == ("verdict", "nominal")
    plotted = {(r["check"], r["verdict"]): r["effect_size"] for r in rows(spec)}
    measured = table.dropna(subset=["effect_size"])
    assert len(plotted) == len(measured) and ("house_size", "drift") in plotted  # every check that has one
    drifted = next(f for f in report["features"] if (f["kind"], f["feature"]) == ("numeric", "house_size"))
    assert plotted["house_size", "drift"] == pytest.approx(drifted["effect_size"])


def test_drift_distributions_of_every_kind(drift_reports):
    checks = {(c["kind"], c["feature"]): c for c in drift_reports["drift"]["features"]}
    numeric = checks[("numeric", "house_size")]
    frame = charts.distribution_frame(numeric)
    assert frame["bin"].nunique() == len(numeric["chart"]["edges"]) + 1
    assert frame.groupby("data")["share"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    assert frame["bin"].iloc[0].startswith("< ")
    zip3 = checks[("categorical", "zip3")]
    assert charts.distribution_frame(zip3)["bin"].nunique() == min(
        charts.MAX_SHARE_CATEGORIES, len(zip3["chart"]["categories"])
    )
    missing = next(c for (kind, _), c in checks.items() if kind == "missing")
    assert list(charts.distribution_frame(missing)["bin"].unique()) == ["missing"]
    assert charts.distribution_frame({"feature": "x", "kind": "numeric", "chart": None}) is None
    for check in checks.values():
        chart, expected = charts.distribution_chart(check), charts.distribution_frame(check)
        if expected is None:
            assert chart is None, check["feature"]
            continue
        spec = chart.to_dict()
        assert marks(spec) == ["bar"] and spec["title"].startswith(check["feature"])
        assert encoded(spec, "x") == ("bin", "nominal") and encoded(spec, "y") == ("share", "quantitative")
        assert encoded(spec, "xOffset") == encoded(spec, "color") == ("data", "nominal")  # reference | new batch
        assert spec["encoding"]["x"]["sort"] == list(dict.fromkeys(expected.sort_values("order")["bin"]))
        assert rows(spec) == expected.to_dict("records")


# --- listings and CSV --------------------------------------------------------------------------


def test_form_values_become_a_valid_listing():
    values = {**HOME, "city": "  ", "zip_code": "", "prev_sold_date": date(2015, 6, 1), "brokered_by": None}
    listing = listing_from_inputs(values)
    assert listing == {**DEFAULT_LISTING, "prev_sold_date": "2015-06-01"}
    Listing.model_validate(listing)


def test_price_ratios():
    assert price_ratios({"house_size": 2000, "bed": 0, "acre_lot": 0.5}, 400_000) == {
        "per sq ft": 200.0,
        "per bedroom": None,
        "per acre of lot": 800_000.0,
    }


def test_csv_rows_become_listings_and_keep_what_the_api_must_judge():
    data = b"bed,bath,acre_lot,house_size,state,zip_code,city,price\n3,2,0.2,1500,Ohio,01001,,250000\nthree,1,,900,Ohio,1001.0,Dayton,\n"
    frame = read_csv(data)
    assert frame["zip_code"].tolist() == ["01001", "1001.0"]
    assert missing_columns(frame) == []
    assert missing_columns(frame.drop(columns=["bed", "state"])) == ["state"]  # sizes may be left out
    first, second = listings_from_frame(frame)
    assert first == {
        "bed": 3.0,
        "bath": 2.0,
        "acre_lot": 0.2,
        "house_size": 1500.0,
        "state": "Ohio",
        "zip_code": 1001.0,
    }
    assert second["bed"] == "three" and "acre_lot" not in second and second["city"] == "Dayton"
    Listing.model_validate(first)


def test_priced_frame_puts_errors_and_gaps_on_their_rows():
    frame = read_csv(b"bed,bath,acre_lot,house_size,state,price\n3,2,0.2,1500,Ohio,200000\n-1,2,0.2,1500,Ohio,1\n")
    result = {
        "prices": [250_000.4, None],
        "errors": [{"index": 1, "detail": [{"loc": ["bed"], "msg": "Input should be greater than or equal to 0"}]}],
        "warnings": [{"index": 0, "warnings": ["a", "b"]}],
    }
    out = priced_frame(frame, result)
    assert out["predicted_price"].iloc[0] == 250_000.0 and pd.isna(out["predicted_price"].iloc[1])
    assert out["error"].tolist() == ["", "bed: Input should be greater than or equal to 0"]
    assert out["warnings"].tolist() == ["a | b", ""]
    assert out["predicted_vs_listed"].iloc[0] == pytest.approx(0.25)


def test_variants_across_states_drop_the_local_fields():
    rows = variants(HOME, "state", ["Ohio", "Texas"])
    assert [label for label, _ in rows] == ["Ohio", "Texas"]
    assert all("city" not in row and "zip_code" not in row for _, row in rows)
    sizes = variants(HOME, "house_size", [1000.0, 1500.5])
    assert [label for label, _ in sizes] == ["1,000 sq ft", "1,500.5 sq ft"]
    assert sizes[0][1]["zip_code"] == HOME["zip_code"]
    with pytest.raises(ValueError, match="cannot vary 'price'"):
        variants(HOME, "price", [1])


def test_parse_numbers():
    assert parse_numbers("1000, 1500 2000,") == [1000.0, 1500.0, 2000.0]
    with pytest.raises(ValueError, match="'big' is not a number"):
        parse_numbers("1000, big")


def test_api_detail_is_described_for_people():
    assert describe_detail("the model service is overloaded") == "the model service is overloaded"
    detail = [
        {"loc": ["body", "bed"], "msg": "Input should be less than or equal to 50", "type": "less_than_equal"},
        {"loc": ["state"], "msg": "Field required", "type": "missing"},
    ]
    assert describe_detail(detail) == "bed: Input should be less than or equal to 50; state: Field required"


def test_history_and_runs_tables():
    from dataclasses import asdict

    from ray_jobs.pipeline import PipelineResult
    from ui.components import history_table, runs_table

    history = [
        VersionRecord(version="2", aliases=["challenger"], created_at="2026-01-02T10:00:00+00:00", run_id="abc",
                      decision="rejected", reason="no better", metrics={"mdape": 0.2, "rows": 10.0}),
        VersionRecord(version="1", aliases=["champion"], created_at="2026-01-01T10:00:00+00:00", run_id="def",
                      decision="first_model", reason="no champion yet", metrics={"mdape": 0.15}),
    ]  # fmt: skip
    table = history_table(history)
    assert table["decision"].tolist() == ["rejected", "first_model"]
    assert table["mdape"].tolist() == [0.2, 0.15] and "rows" not in table.columns
    run = PipelineResult(run_key="k", outcome="promoted", reason="better", batches=["b1", "b2"], new_rows=5,
                         drift_verdict="drift", model_version="3", metrics={"mdape": 0.1, "rows": 9.0},
                         finished_at="2026-01-03T00:00:00")  # fmt: skip
    runs = runs_table([asdict(run)])
    assert runs.iloc[0].to_dict() == {
        "finished": "2026-01-03 00:00:00", "outcome": "promoted", "reason": "better", "batches": "b1, b2",
        "new rows": 5, "drift": "drift", "model version": "3", "mdape": 0.1,
    }  # fmt: skip

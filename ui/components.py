"""Streamlit building blocks the pages share: settings, the API client, errors, the listing form,
and the renderers of a prediction, an explanation and a drift report.

Renderers take plain API answers (dicts), so they are exercised with real answers in tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date

import pandas as pd
import pydantic
import streamlit as st

from rayestate.api import ModelReport
from rayestate.registry import VersionRecord
from rayestate.schema import MAX_ACRE_LOT, MAX_BATH, MAX_BED, MAX_HOUSE_SIZE, MIN_HOUSE_SIZE, STATES, STATUSES
from rayestate.settings import Settings
from ui import charts
from ui.charts import money
from ui.client import ApiClient, ApiError, ApiUnavailable
from ui.listings import DEFAULT_LISTING, price_ratios

MODEL_REPORT_TTL_S = 15
STATUS_LABELS = {"for_sale": "for sale", "sold": "sold", "ready_to_build": "ready to build"}
BLANK_HELP = "Leave blank if unknown: the model prices without it (the answer says so)."


# --- configuration and the API ------------------------------------------------------------------


def settings() -> Settings:
    """Settings from RAYESTATE_* (read on each run, so a changed environment is picked up)."""
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        st.error(f"The UI's configuration (RAYESTATE_* environment variables) is invalid:\n\n{exc}")
        st.stop()


@st.cache_resource(show_spinner=False)
def _client(base_url: str, timeout_s: float) -> ApiClient:
    return ApiClient(base_url, timeout_s=timeout_s)


def api(config: Settings) -> ApiClient:
    return _client(config.api_url, config.http_timeout_s)


@st.cache_data(ttl=MODEL_REPORT_TTL_S, show_spinner=False)
def _model_report(base_url: str, timeout_s: float) -> ModelReport:
    return _client(base_url, timeout_s).model()


def model_report(config: Settings) -> ModelReport:
    """GET /model, cached briefly (several widgets on a page need it); raises ApiError."""
    return _model_report(config.api_url, config.http_timeout_s)


def show_error(error: ApiError, *, action: str = "") -> None:
    """One clear message for an API failure: unreachable, rejected input, or a server error."""
    prefix = f"Could not {action}. " if action else ""
    if isinstance(error, ApiUnavailable):
        st.error(f"{prefix}{error}", icon=":material/cloud_off:")
    elif error.status == 422:
        st.warning(f"{prefix}The API rejected the input — {error}", icon=":material/block:")
    elif error.status == 503:
        st.warning(f"{prefix}The model service is not ready — {error}", icon=":material/hourglass_top:")
    else:
        st.error(f"{prefix}{error}", icon=":material/error:")


# --- the listing form ---------------------------------------------------------------------------


def categories(report: ModelReport | None) -> tuple[list[str], list[str]]:
    """States and statuses the served model knows, from /model when it says, else the schema's."""
    found = report.categories if report is not None else {}
    return list(found.get("state") or STATES), list(found.get("status") or STATUSES)


def form_categories(config: Settings) -> tuple[list[str], list[str]]:
    """Categories for the listing form; an unreachable API is reported here, once per page."""
    try:
        report = model_report(config)
    except ApiError as error:
        show_error(error, action="reach the price API")
        report = None
    return categories(report)


def _index(options: list[str], value, fallback: int = 0) -> int:
    return options.index(value) if value in options else fallback


def listing_inputs(key: str, defaults: Mapping, states: list[str], statuses: list[str]) -> dict:
    """The listing fields, bounded like the API's validation; call inside an st.form."""
    defaults = {**DEFAULT_LISTING, **defaults}
    left, middle, right = st.columns(3)
    values = {
        "state": left.selectbox("State", states, index=_index(states, defaults.get("state")), key=f"{key}.state"),
        "city": middle.text_input("City (optional)", defaults.get("city", ""), max_chars=80, key=f"{key}.city"),
        "zip_code": right.text_input(
            "ZIP code (optional)", defaults.get("zip_code", ""), max_chars=5, key=f"{key}.zip",
            placeholder="e.g. 33602", help="3 to 5 digits; leading zeros may be left out",
        ),
        "bed": left.number_input(
            "Bedrooms", 0, MAX_BED, _whole(defaults.get("bed")), 1, key=f"{key}.bed", help=BLANK_HELP
        ),
        "bath": middle.number_input(
            "Bathrooms", 0.0, float(MAX_BATH), _number(defaults.get("bath")), 0.5, key=f"{key}.bath", help=BLANK_HELP
        ),
        "house_size": right.number_input(
            "Living area (sq ft)", MIN_HOUSE_SIZE, MAX_HOUSE_SIZE, _number(defaults.get("house_size")), 50.0,
            format="%.0f", key=f"{key}.size", help=BLANK_HELP,
        ),
        "acre_lot": left.number_input(
            "Lot size (acres)", 0.0, MAX_ACRE_LOT, _number(defaults.get("acre_lot")), 0.05, format="%.2f",
            key=f"{key}.lot", help=BLANK_HELP,
        ),
        "status": middle.selectbox(
            "Listing status", statuses, index=_index(statuses, defaults.get("status")),
            format_func=lambda s: STATUS_LABELS.get(s, s), key=f"{key}.status",
        ),
        "prev_sold_date": right.date_input(
            "Last sold (optional)", _date(defaults.get("prev_sold_date")), min_value=date(1900, 1, 1),
            max_value=date.today(), key=f"{key}.sold",
        ),
    }  # fmt: skip
    with st.expander("Broker and street IDs (optional, as in the dataset)"):
        one, two = st.columns(2)
        values["brokered_by"] = one.number_input(
            "Broker ID", 0, 1_000_000_000, _whole(defaults.get("brokered_by")), 1, key=f"{key}.broker"
        )
        values["street"] = two.number_input(
            "Street ID", 0, 1_000_000_000, _whole(defaults.get("street")), 1, key=f"{key}.street"
        )
    return values


def _whole(value) -> int | None:
    return int(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _date(text) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


# --- renderers ---------------------------------------------------------------------------------


def render_prediction(listing: Mapping, prediction: Mapping) -> None:
    price = prediction["price"]
    low, high = prediction.get("price_low"), prediction.get("price_high")
    cols = st.columns(4)
    cols[0].metric(
        "Predicted price", money(price), border=True,
        delta=f"{money(low)} – {money(high)}" if low is not None and high is not None else None, delta_color="off",
        help=f"The price falls in this range {prediction.get('coverage', 0.8):.0%} of the time (measured on homes "
        "the model was not trained on); it is wider where the model knows less.",
    )  # fmt: skip
    for col, (name, value) in zip(cols[1:], price_ratios(listing, price).items(), strict=True):
        col.metric(f"Price {name}", money(value) if value is not None else "—", border=True)
    st.caption(
        f"Model version {prediction.get('model_version')} ({prediction.get('model_alias', 'champion')}) · "
        f"request {prediction.get('request_id', '—')}"
    )
    for warning in prediction.get("warnings") or []:
        st.warning(warning, icon=":material/info:")


def render_explanation(explanation: Mapping) -> None:
    """Why: the waterfall over the listing's own fields, the dollar view, the engineered features on demand."""
    base_price = explanation.get("base_price") or math.exp(explanation["base_value"])
    top = [g for g in sorted(explanation.get("groups", []), key=lambda g: -abs(g["shap"])) if g["shap"] != 0.0][:3]
    drivers = ", ".join(f"{g['label']} ({charts.percent_effect(math.exp(g['shap']))})" for g in top)
    st.markdown(
        f"The model starts from the **average home in its training data ({money(base_price)})** and what you told "
        f"it **multiplies** that price. Biggest factors here: {drivers}."
    )
    st.altair_chart(charts.waterfall_chart(explanation, by="groups"), width="stretch")
    st.caption(
        "Bars to the right raise the price, bars to the left lower it. The axis is logarithmic because the model "
        "predicts log price: a bar's length is the exact sum of the SHAP values of the features computed from those "
        f"fields, and the percentages multiply ({money(base_price)} × (1 + p₁) × (1 + p₂) × … = "
        f"{money(explanation['price'])}). Where one feature reads two fields (the ZIP's price per sq ft times your "
        "living area), it is shown as that pair, never split by a guess."
    )
    dollars, features, table = st.tabs(["Dollar view", "Engineered features", "All contributions"])
    with dollars:
        st.markdown(
            f"The API also splits the dollar difference **{money(explanation['price'] - base_price, signed=True)}** "
            "between this prediction and the base price among the fields, in proportion to their SHAP values; "
            "the amounts add up exactly to that difference. Because effects multiply, a field's dollar amount "
            "depends on the others — the percentages above are each field's exact effect."
        )
        st.altair_chart(charts.dollar_chart(explanation), width="stretch")
    with features:
        st.caption("The same prediction, step by step through the model's own features.")
        st.altair_chart(charts.waterfall_chart(explanation, by="features"), width="stretch")
    with table:
        st.dataframe(charts.contributions_table(explanation), hide_index=True, width="stretch")
        st.caption(
            f"Base value {explanation['base_value']:.4f} (log price) + sum of SHAP values = "
            f"{explanation.get('log_price', math.log(explanation['price'])):.4f} = log({money(explanation['price'])}). "
            f"Model version {explanation.get('model_version')}."
        )


def render_comparables(comparables: list[Mapping]) -> None:
    """The most similar homes in the model's training data, as an appraiser lists them."""
    if not comparables:
        st.caption("No comparable homes: the model has no training listing in this state.")
        return
    frame = pd.DataFrame(
        {
            "match": [c["match"] for c in comparables],
            "price": [money(c["price"]) for c in comparables],
            "status": [STATUS_LABELS.get(c.get("status"), c.get("status") or "—") for c in comparables],
            "last sold": [c.get("prev_sold_date") or "—" for c in comparables],
            "where": [", ".join(str(v) for v in (c.get("city"), c.get("zip_code")) if v) or "—" for c in comparables],
            "sq ft": [charts.compact(c.get("house_size")) for c in comparables],
            "beds": [charts.compact(c.get("bed")) for c in comparables],
            "baths": [charts.compact(c.get("bath")) for c in comparables],
            "acres": [charts.compact(c.get("acre_lot")) for c in comparables],
            "distance": [round(c["distance"], 3) for c in comparables],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch")


VERDICT_TEXT = {"drift": "drift", "no_drift": "no drift", "insufficient_data": "too few rows"}


def render_drift_report(report: Mapping) -> None:
    """Verdict and reason, effect sizes against thresholds, the checks table, drifted distributions."""
    if report.get("verdict") == "drift":
        st.error(f"**Drift detected.** {report.get('reason', '')}", icon=":material/warning:")
    else:
        st.success(f"**No drift.** {report.get('reason', '')}", icon=":material/check_circle:")
    checks = list(report.get("features") or [])
    drifted = [c for c in checks if c.get("verdict") == "drift"]
    cols = st.columns(4)
    cols[0].metric("Reference rows", f"{report.get('n_reference', 0):,}")
    cols[1].metric("New batch rows", f"{report.get('n_current', 0):,}")
    cols[2].metric("Checks drifted", f"{len(drifted)} of {len(checks)}")
    cols[3].metric("PSI threshold", f"{report.get('effect_threshold', '—')}")
    if not checks:
        return
    st.subheader("Effect size per check")
    st.caption(
        "A check counts as drift only when it is statistically significant after Holm correction "
        f"(α = {report.get('alpha', '—')}) **and** its effect reaches the threshold (black tick): PSI for "
        "distributions, the change in the share of missing values for columns."
    )
    st.altair_chart(charts.effect_chart(report), width="stretch")
    table = charts.drift_checks_frame(report)
    table["verdict"] = table["verdict"].map(lambda v: VERDICT_TEXT.get(v, v))
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "effect_size": st.column_config.NumberColumn("effect", format="%.4f"),
            "threshold": st.column_config.NumberColumn(format="%.3f"),
            "p_adjusted": st.column_config.NumberColumn("p (Holm)", format="%.2e"),
            "p_value": st.column_config.NumberColumn("p (raw)", format="%.2e"),
            "statistic": st.column_config.NumberColumn(format="%.4g"),
        },
    )
    render_attribution(report.get("attribution"))
    st.subheader("Reference vs new batch")
    charted = [c for c in drifted if charts.distribution_frame(c) is not None]
    if not charted:
        names = [c["feature"] + (" (missing share)" if c.get("kind") == "missing" else "") for c in checks]
        pick = st.selectbox("No drifted feature to chart; show any check", names, key="drift.pick")
        charted = [checks[names.index(pick)]]
    for check in charted:
        chart = charts.distribution_chart(check)
        if chart is None:
            st.info(f"{check['feature']}: the report has no distribution data to chart.")
        else:
            st.altair_chart(chart, width="stretch")


def api_status_badge(config: Settings) -> None:
    """Sidebar line: is the API up, and which model does it serve."""
    try:
        ready = _ready(config.api_url, config.http_timeout_s)
    except ApiError as error:
        st.sidebar.error(
            "API not reachable" if isinstance(error, ApiUnavailable) else f"API error: {error}",
            icon=":material/cloud_off:",
        )
        return
    if ready.get("ready"):
        st.sidebar.success(
            f"API ready · model v{ready.get('model_version')} ({ready.get('model_alias')})",
            icon=":material/check_circle:",
        )
    else:
        st.sidebar.warning(f"API up, model not ready: {ready.get('detail')}", icon=":material/hourglass_top:")


@st.cache_data(ttl=10, show_spinner=False)
def _ready(base_url: str, timeout_s: float) -> dict:
    return _client(base_url, timeout_s).ready()


def history_table(history: list[VersionRecord]) -> pd.DataFrame:
    """One row per registered version: decision, reason and its headline test metrics."""
    rows = [
        {
            "version": int(record.version),
            "registered": (record.created_at or "")[:19].replace("T", " "),
            "aliases": ", ".join(record.aliases),
            "decision": charts.decision_of(record),
            "reason": record.reason or "",
            "run": (record.run_id or "")[:12],
            **{name: record.metrics[name] for name in charts.default_metrics(record.metrics)},
        }
        for record in history
    ]
    return pd.DataFrame(rows)


def runs_table(runs: list[Mapping]) -> pd.DataFrame:
    """Pipeline runs (ray_jobs.pipeline ledger entries), newest first, the columns people scan."""
    rows = []
    for run in runs:
        metrics = run.get("metrics") or {}
        rows.append(
            {
                "finished": (run.get("finished_at") or "")[:19].replace("T", " "),
                "outcome": run.get("outcome"),
                "reason": run.get("reason"),
                "batches": ", ".join(map(str, run.get("batches") or [])),
                "new rows": run.get("new_rows"),
                "drift": run.get("drift_verdict") or "—",
                "model version": run.get("model_version") or "—",
                **{k: metrics[k] for k in charts.default_metrics(metrics) if k in metrics},
            }
        )
    return pd.DataFrame(rows)


def render_attribution(attribution: Mapping | None) -> None:
    """What drives the champion's prices: mean |SHAP| per field group on its test rows vs live traffic."""
    if not attribution:
        return
    st.subheader("Attribution drift: what drives the prices")
    moved = attribution.get("significant") or []
    st.caption(
        f"Mean |SHAP| per field group on {attribution['reference_rows']:,} of the champion's held-out test rows vs "
        f"{attribution['live_rows']:,} live requests; Welch's t-test per group, Holm-corrected "
        f"(α = {attribution['alpha']}). " + (f"Moved: {', '.join(moved)}." if moved else "No group moved beyond noise.")
    )
    frame = pd.DataFrame(attribution["groups"])
    st.altair_chart(charts.attribution_chart(frame), width="stretch")
    st.dataframe(
        frame[["label", "reference_mean_abs_shap", "live_mean_abs_shap", "relative_change", "p_adjusted", "significant"]],
        hide_index=True, width="stretch",
        column_config={"p_adjusted": st.column_config.NumberColumn("p (Holm)", format="%.2e"),
                       "relative_change": st.column_config.NumberColumn(format="percent")},
    )  # fmt: skip

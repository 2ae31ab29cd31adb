"""Pure functions from API answers to tables and Altair charts (no Streamlit, no HTTP).

The explanation is shown the way the model computes it. The booster predicts log price and
TreeSHAP is additive there, so in dollars each feature *multiplies* the price by exp(shap).
The waterfall therefore runs on a log price axis: every bar's length is its SHAP value, the
bars chain from the base value to the prediction, and each is labelled with its exact
multiplicative effect (+12.3 % means x1.123). The API's dollar view is shown separately.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import altair as alt
import pandas as pd

from rayestate.features import FEATURE_LABELS
from rayestate.registry import VersionRecord

TOP_FEATURES = 10
UP, DOWN, TOTAL = "#2e7d32", "#c62828", "#1f5fa8"
REFERENCE, CURRENT = "#9e9e9e", "#e65100"
MAX_SHARE_CATEGORIES = 20
METRIC_WORDS = ("mdape", "mape", "rmse", "mae", "r2", "loss", "error")
#: What ray_jobs.evaluate reports on the test split (VersionRecord.metrics), most telling first.
HEADLINE_METRICS = ("mdape", "r2_log", "rmse_log", "mae_log")
DECISION_COLORS = {"promoted": UP, "first_model": UP, "rejected": DOWN, "champion": TOTAL}


# --- formatting -------------------------------------------------------------------------------


def money(value: float | None, *, signed: bool = False) -> str:
    """$1,234,567 (or +$12,345 / −$12,345 when signed)."""
    if value is None or not math.isfinite(value):
        return "—"
    sign = ("+" if value >= 0 else "−") if signed else ("−" if value < 0 else "")
    return f"{sign}${abs(value):,.0f}"


def percent_effect(factor: float) -> str:
    """A price multiplier as a change: 1.123 -> '+12.3%', 0.9 -> '−10.0%'."""
    change = (factor - 1.0) * 100
    return f"{'+' if change >= 0 else '−'}{abs(change):.1f}%"


def compact(value) -> str:
    """Short number for axis bins and table cells: 2005, 3.5, 1,800, 250k, 1.2M."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if not isinstance(value, int | float):
        return str(value)
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


def feature_value_text(feature: str, value) -> str:
    """A feature's value for people; the te_* encodings are log dollars (of a price, $/sq ft or $/acre)."""
    if value is None:
        return "missing"
    if feature.startswith("te_") and isinstance(value, int | float):
        unit = " per sq ft" if feature.endswith("_ppsf") else " per acre" if feature.endswith("_ppa") else ""
        return f"≈ {money(math.exp(value))}{unit}"
    return value.replace("_", " ") if isinstance(value, str) else compact(value)


def _label(item: Mapping) -> str:
    return item.get("label") or FEATURE_LABELS.get(item["feature"], item["feature"])


# --- explanation --------------------------------------------------------------------------------


def _step_name(contribution: Mapping) -> str:
    value = feature_value_text(contribution["feature"], contribution.get("value"))
    return f"{_label(contribution)}{' ' if value.startswith('≈') else ' = '}{value}"


def _group_step_name(group: Mapping) -> str:
    values = [value if isinstance(value, str) else compact(value) for value in (group.get("inputs") or {}).values()]
    return f"{group['label']}: {', '.join(values)}" if values else group["label"]


def waterfall_steps(explanation: Mapping, top: int = TOP_FEATURES, *, by: str = "groups") -> pd.DataFrame:
    """Rows of the waterfall: base, the `top` largest |SHAP| groups (or features), the rest pooled, prediction.

    ``by="groups"`` walks the listing's own fields (the API's ``groups``), ``by="features"`` the
    model's engineered features. ``start``/``end`` are dollars; ``end / start == factor == exp(shap)``
    for every step, and the last step ends at exp(base_value + sum(shap)), the predicted price.
    """
    base = float(explanation["base_value"])
    if by == "groups":
        items = [g for g in explanation.get("groups", []) if g["shap"] != 0.0]
        name, other = _group_step_name, "other fields"
    else:
        items, name, other = explanation["contributions"], _step_name, "other features"
    items = sorted(items, key=lambda c: -abs(c["shap"]))
    kept, rest = items[:top], items[top:]
    rows = [{"step": "Average home (base value)", "kind": "base", "start": None, "end": math.exp(base), "shap": 0.0}]
    steps = [(name(c), c["shap"]) for c in kept]
    if rest:
        steps.append((f"{len(rest)} {other}", math.fsum(c["shap"] for c in rest)))
    level = base
    for name, shap in steps:
        start = math.exp(level)
        level += shap
        kind = "up" if shap >= 0 else "down"
        rows.append({"step": name, "kind": kind, "start": start, "end": math.exp(level), "shap": shap})
    # The API's price (float32 model output) can differ from exp(base + sum(shap)) in the 6th digit.
    price = float(explanation.get("price") or math.exp(level))
    rows.append({"step": "Predicted price", "kind": "prediction", "start": None, "end": price, "shap": 0.0})
    frame = pd.DataFrame(rows)
    frame["factor"] = frame["shap"].map(math.exp)
    frame["order"] = range(len(frame))
    is_total = frame["kind"].isin(["base", "prediction"])
    frame["text"] = [
        money(end) if total else percent_effect(factor)
        for total, end, factor in zip(is_total, frame["end"], frame["factor"], strict=True)
    ]
    return frame


def waterfall_chart(explanation: Mapping, top: int = TOP_FEATURES, *, by: str = "groups") -> alt.LayerChart:
    """Horizontal waterfall on a log price axis: bar length = SHAP value, label = % effect."""
    frame = waterfall_steps(explanation, top, by=by)
    low = min(frame["start"].min(skipna=True), frame["end"].min())
    high = max(frame["start"].max(skipna=True), frame["end"].max())
    floor, ceiling = low / 1.15, high * 1.3  # room for the labels right of the bars
    frame["start"] = frame["start"].fillna(floor)
    frame["label_at"] = frame[["start", "end"]].max(axis=1)
    frame["dollars"] = frame["end"].map(money)
    y = alt.Y("step:N", sort=list(frame["step"]), title=None, axis=alt.Axis(labelLimit=360))
    x = alt.X(
        "start:Q",
        scale=alt.Scale(type="log", domain=[floor, ceiling], nice=False),
        axis=alt.Axis(format="$,.3~s", tickCount=6),
        title="Price (log scale): each bar multiplies the price by the % shown",
    )
    color = alt.Color(
        "kind:N",
        scale=alt.Scale(domain=["base", "up", "down", "prediction"], range=[TOTAL, UP, DOWN, TOTAL]),
        legend=None,
    )
    tooltip = [
        alt.Tooltip("step:N", title="step"),
        alt.Tooltip("text:N", title="effect"),
        alt.Tooltip("shap:Q", title="SHAP (log price)", format="+.4f"),
        alt.Tooltip("dollars:N", title="price after this step"),
    ]
    base = alt.Chart(frame).encode(y=y)
    bars = base.mark_bar(height={"band": 0.7}).encode(x=x, x2="end:Q", color=color, tooltip=tooltip)
    labels = base.mark_text(align="left", dx=4, fontSize=12).encode(
        x=alt.X("label_at:Q", scale=alt.Scale(type="log", domain=[floor, ceiling], nice=False)),
        text="text:N",
        color=color,
    )
    return alt.layer(bars, labels).properties(height=30 * len(frame) + 20)


def dollar_frame(explanation: Mapping, top: int = TOP_FEATURES) -> pd.DataFrame:
    """The API's dollar shares per field group (they add up to price − base price), the largest `top` plus the rest."""
    items = sorted((g for g in explanation.get("groups", []) if g["dollars"] != 0.0), key=lambda e: -abs(e["dollars"]))
    rows = [{"feature": e["label"], "dollars": float(e["dollars"])} for e in items[:top]]
    if len(items) > top:
        rows.append(
            {"feature": f"{len(items) - top} other fields", "dollars": math.fsum(e["dollars"] for e in items[top:])}
        )
    frame = pd.DataFrame(rows, columns=["feature", "dollars"])
    frame["text"] = frame["dollars"].map(lambda d: money(d, signed=True))
    frame["direction"] = frame["dollars"].map(lambda d: "raises" if d >= 0 else "lowers")
    return frame


def dollar_chart(explanation: Mapping, top: int = TOP_FEATURES) -> alt.LayerChart:
    """Dollar shares per field group, raising or lowering the price from the base price."""
    frame = dollar_frame(explanation, top)
    y = alt.Y("feature:N", sort=list(frame["feature"]), title=None, axis=alt.Axis(labelLimit=300))
    color = alt.Color("direction:N", scale=alt.Scale(domain=["raises", "lowers"], range=[UP, DOWN]), legend=None)
    base = alt.Chart(frame).encode(y=y)
    reach = max(frame["dollars"].abs().max(), 1.0) * 1.3  # room for the labels at both ends
    domain = [-reach if (frame["dollars"] < 0).any() else 0.0, reach if (frame["dollars"] > 0).any() else 0.0]
    bars = base.mark_bar().encode(
        x=alt.X(
            "dollars:Q",
            title="Dollars added to / taken from the base price",
            axis=alt.Axis(format="$,.3~s"),
            scale=alt.Scale(domain=domain),
        ),
        color=color,
        tooltip=["feature:N", alt.Tooltip("text:N", title="dollars")],
    )
    right = (
        base.mark_text(dx=4, align="left").encode(x="dollars:Q", text="text:N").transform_filter("datum.dollars >= 0")
    )
    left = (
        base.mark_text(dx=-4, align="right").encode(x="dollars:Q", text="text:N").transform_filter("datum.dollars < 0")
    )
    return alt.layer(bars, right, left).properties(height=28 * len(frame) + 20)


def contributions_table(explanation: Mapping) -> pd.DataFrame:
    """Every feature: its value, SHAP value, exact multiplicative effect and the API's dollar share."""
    dollars = {e["feature"]: e.get("dollars") for e in explanation.get("dollar_effects", [])}
    rows = [
        {
            "feature": _label(c),
            "value": feature_value_text(c["feature"], c.get("value")),
            "SHAP (log price)": round(c["shap"], 5),
            "effect on price": percent_effect(math.exp(c["shap"])),
            "× price": round(math.exp(c["shap"]), 4),
            "dollars": money(dollars.get(c["feature"]), signed=True),
        }
        for c in sorted(explanation["contributions"], key=lambda c: -abs(c["shap"]))
    ]
    return pd.DataFrame(rows)


# --- comparisons --------------------------------------------------------------------------------


def comparison_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Bars of price per variant (frame columns: variant, price); unpriced variants are left out."""
    data = frame.dropna(subset=["price"]).assign(text=lambda f: f["price"].map(money))
    y = alt.Y("variant:N", sort=list(data["variant"]), title=None, axis=alt.Axis(labelLimit=300))
    base = alt.Chart(data).encode(y=y)
    room = alt.Scale(domain=[0, float(data["price"].max() if len(data) else 1) * 1.15])  # for the labels
    bars = base.mark_bar(color=TOTAL).encode(
        x=alt.X("price:Q", title="Predicted price", axis=alt.Axis(format="$,.3~s"), scale=room),
        tooltip=["variant:N", alt.Tooltip("text:N", title="price")],
    )
    labels = base.mark_text(align="left", dx=4).encode(x="price:Q", text="text:N")
    return alt.layer(bars, labels).properties(height=40 * len(data) + 20)


# --- model history ------------------------------------------------------------------------------


def decision_of(record: VersionRecord) -> str:
    """What the pipeline decided on a version (or that it is the champion, or still undecided)."""
    if record.decision:
        return record.decision
    return "champion" if "champion" in record.aliases else "undecided"


def metrics_frame(history: Iterable[VersionRecord]) -> pd.DataFrame:
    """Long (version, metric, value, decision) from each version's held-out test metrics."""
    rows = [
        {"version": int(record.version), "metric": name, "value": value, "decision": decision_of(record)}
        for record in history
        for name, value in record.metrics.items()
        if math.isfinite(value)
    ]
    return pd.DataFrame(rows, columns=["version", "metric", "value", "decision"])


def default_metrics(names: Iterable[str], most: int = 4) -> list[str]:
    """The metrics to show first: the pipeline's headline ones, else metric-looking names (not row counts)."""
    names = list(names)
    headline = [n for n in HEADLINE_METRICS if n in names]
    if headline:
        return headline
    return [n for n in names if "." not in n and any(word in n.lower() for word in METRIC_WORDS)][:most]


def _decision_scale(decisions: pd.Series) -> alt.Scale:
    present = list(dict.fromkeys(decisions))
    return alt.Scale(domain=present, range=[DECISION_COLORS.get(d, REFERENCE) for d in present])


def metrics_chart(frame: pd.DataFrame) -> alt.FacetChart:
    """One small line chart per metric over model versions; points coloured by the decision."""
    x = alt.X("version:O", title="model version", axis=alt.Axis(labelAngle=0))
    line = alt.Chart().mark_line(color=REFERENCE).encode(x=x, y="value:Q")
    points = (
        alt.Chart()
        .mark_point(filled=True, size=90)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("decision:N", title="decision", scale=_decision_scale(frame["decision"])),
            tooltip=["version:O", "metric:N", alt.Tooltip("value:Q", format=".4g"), "decision:N"],
        )
    )
    return (
        alt.layer(line, points, data=frame)
        .properties(height=160, width=520)
        .facet(row=alt.Row("metric:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
        .resolve_scale(y="independent")
    )


# --- drift --------------------------------------------------------------------------------------

EFFECT_METRICS = {"psi": "PSI (distribution shift)", "abs_share_change": "change in missing share"}


def drift_checks_frame(report: Mapping) -> pd.DataFrame:
    """One row per check of a drift report, the columns people compare first."""
    columns = ["feature", "kind", "verdict", "effect_size", "threshold", "effect_metric", "p_adjusted", "p_value",
               "statistic", "test", "detail", "n_reference", "n_current"]  # fmt: skip
    frame = pd.DataFrame([{c: check.get(c) for c in columns} for check in report.get("features", [])], columns=columns)
    # Drifted checks first, then by how close each effect comes to its own threshold.
    rank = frame["verdict"].map({"drift": 0, "no_drift": 1, "insufficient_data": 2}).fillna(3)
    closeness = pd.to_numeric(frame["effect_size"], errors="coerce") / pd.to_numeric(
        frame["threshold"], errors="coerce"
    )
    order = pd.DataFrame({"rank": rank, "closeness": -closeness.fillna(0)}).sort_values(["rank", "closeness"]).index
    return frame.loc[order].reset_index(drop=True)


def effect_chart(report: Mapping) -> alt.FacetChart:
    """Effect size per check against its threshold (tick), one panel per effect metric."""
    frame = drift_checks_frame(report).dropna(subset=["effect_size"])
    frame["check"] = frame["feature"] + frame["kind"].map(lambda k: " (missing share)" if k == "missing" else "")
    frame["metric"] = frame["effect_metric"].map(lambda m: EFFECT_METRICS.get(m, m))
    color = alt.Color(
        "verdict:N",
        scale=alt.Scale(domain=["drift", "no_drift", "insufficient_data"], range=[DOWN, UP, REFERENCE]),
        title="verdict",
    )
    y = alt.Y("check:N", sort="-x", title=None, axis=alt.Axis(labelLimit=240))
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("effect_size:Q", title="effect size"),
        y=y,
        color=color,
        tooltip=["check:N", "verdict:N", alt.Tooltip("effect_size:Q", format=".4f"),
                 alt.Tooltip("threshold:Q", format=".4f"), alt.Tooltip("p_adjusted:Q", format=".2e"), "detail:N"],
    )  # fmt: skip
    ticks = alt.Chart().mark_tick(color="black", thickness=2, size=18).encode(x="threshold:Q", y=y)
    return (
        alt.layer(bars, ticks, data=frame)
        .properties(width=520)
        .facet(row=alt.Row("metric:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
        .resolve_scale(x="independent", y="independent")
    )


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all values"]
    inner = [f"{compact(a)}–{compact(b)}" for a, b in itertools.pairwise(edges)]
    return [f"< {compact(edges[0])}", *inner, f"≥ {compact(edges[-1])}"]


def distribution_frame(check: Mapping) -> pd.DataFrame | None:
    """Reference vs new-batch shares per bin/category of one check, or None if it has no chart data."""
    chart = check.get("chart") or {}
    if chart.get("type") == "histogram":
        labels = _bin_labels(list(chart.get("edges") or []))
    elif chart.get("type") == "shares":
        labels = [str(c) for c in chart.get("categories") or []]
    elif check.get("kind") == "missing" and "reference_share" in (check.get("metrics") or {}):
        metrics = check["metrics"]
        chart = {"reference": [metrics["reference_share"]], "current": [metrics["current_share"]]}
        labels = ["missing"]
    else:
        return None
    reference, current = list(chart.get("reference") or []), list(chart.get("current") or [])
    if not (len(labels) == len(reference) == len(current)) or not labels:
        return None
    frame = pd.DataFrame({"bin": labels, "order": range(len(labels)), "reference": reference, "new batch": current})
    if chart.get("type") == "shares" and len(frame) > MAX_SHARE_CATEGORIES:
        moved = (frame["new batch"] - frame["reference"]).abs()
        frame = frame.loc[moved.nlargest(MAX_SHARE_CATEGORIES).index].sort_values("order")
    return frame.melt(id_vars=["bin", "order"], var_name="data", value_name="share")


def distribution_chart(check: Mapping) -> alt.Chart | None:
    """Grouped bars: the reference (training) distribution next to the new batch's."""
    frame = distribution_frame(check)
    if frame is None:
        return None
    chart = check.get("chart") or {}
    bins = list(dict.fromkeys(frame.sort_values("order")["bin"]))
    kind = {"histogram": "reference decile bins", "shares": "category"}.get(chart.get("type"), "missing values")
    shown = (
        f" (the {MAX_SHARE_CATEGORIES} that moved most)"
        if chart.get("type") == "shares" and len(bins) >= MAX_SHARE_CATEGORIES
        else ""
    )
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(
                "bin:N",
                sort=bins,
                title=f"{check.get('feature')}: {kind}{shown}",
                axis=alt.Axis(labelAngle=-35, labelOverlap=False),
            ),
            xOffset=alt.XOffset("data:N", sort=["reference", "new batch"]),
            y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")),
            color=alt.Color(
                "data:N", scale=alt.Scale(domain=["reference", "new batch"], range=[REFERENCE, CURRENT]), title=None
            ),
            tooltip=["bin:N", "data:N", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=240, title=f"{check.get('feature')}: {check.get('detail') or ''}".rstrip(": "))
    )


# --- live quality -------------------------------------------------------------------------------


def live_quality_frame(report: Mapping | None) -> pd.DataFrame:
    """Per model version and month of sale: live MdAPE with its 95% interval and matched homes."""
    rows = []
    for version, figures in ((report or {}).get("versions") or {}).items():
        for month, monthly in (figures.get("by_month") or {}).items():
            low, high = monthly.get("mdape_ci") or [None, None]
            rows.append({"version": f"v{version}", "month": month, "mdape": monthly.get("mdape"), "low": low,
                         "high": high, "homes": monthly.get("matched_homes"),
                         "offline_mdape": figures.get("offline_mdape")})  # fmt: skip
    return pd.DataFrame(rows, columns=["version", "month", "mdape", "low", "high", "homes", "offline_mdape"])


def live_quality_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Live MdAPE per month (points with 95% intervals) per version; its offline MdAPE as a dashed rule."""
    x = alt.X("month:O", title="month the sales came in", axis=alt.Axis(labelAngle=0))
    color = alt.Color("version:N", title="model version")
    base = alt.Chart(frame)
    points = base.mark_point(filled=True, size=80).encode(
        x=x, y=alt.Y("mdape:Q", title="MdAPE on sold homes", axis=alt.Axis(format=".0%")), color=color,
        tooltip=["version:N", "month:O", alt.Tooltip("mdape:Q", format=".3f"), "homes:Q"],
    )  # fmt: skip
    bars = base.mark_rule().encode(x=x, y="low:Q", y2="high:Q", color=color)
    offline = base.mark_rule(strokeDash=[4, 4]).encode(y="offline_mdape:Q", color=color)
    return alt.layer(bars, points, offline).properties(height=240)


def attribution_chart(frame: pd.DataFrame) -> alt.Chart:
    """Mean |SHAP| per field group, reference (grey) beside live (orange)."""
    long = frame.melt(
        id_vars=["label", "significant"], value_vars=["reference_mean_abs_shap", "live_mean_abs_shap"],
        var_name="side", value_name="mean_abs_shap",
    )  # fmt: skip
    long["side"] = long["side"].map({"reference_mean_abs_shap": "champion's test rows", "live_mean_abs_shap": "live"})
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", title=None, sort=list(frame["label"])),
            x=alt.X("mean_abs_shap:Q", title="mean |SHAP| (log price)"),
            yOffset="side:N",
            color=alt.Color("side:N", scale=alt.Scale(range=[REFERENCE, CURRENT]), title=None),
            tooltip=["label:N", "side:N", alt.Tooltip("mean_abs_shap:Q", format=".4f"), "significant:N"],
        )
        .properties(height=32 * len(frame) + 20)
    )

"""Models: the champion, the pipeline runs, every challenger's metrics and promotion decision."""

import pandas as pd
import streamlit as st

from ui import charts, components
from ui.client import ApiError

config = components.settings()

st.title("Models")
try:
    report = components.model_report(config)
except ApiError as error:
    components.show_error(error, action="load the model registry")
    st.stop()

served = report.served
if not report.registry_available:
    st.error(f"The model registry (MLflow) is not reachable: {report.registry_error}", icon=":material/database:")
    if served is not None and served.model_version:
        st.info(f"The API keeps serving model version {served.model_version} (its last good model).")
    st.stop()

champion = report.champion
mlflow = config.mlflow_tracking_uri.rstrip("/")
dashboard = config.ray_dashboard_url.rstrip("/")
if champion is None:
    st.info(f"No `{report.model_alias}` version of `{report.model_name}` yet: the first pipeline run registers one.")
    st.stop()

st.markdown(
    f"The API serves the **{report.model_alias}** of the registered model `{report.model_name}` "
    f"([open in MLflow]({mlflow}/#/models/{report.model_name}/versions/{champion.version}))."
)
cols = st.columns(4)
cols[0].metric("Champion", f"v{champion.version}", border=True)
trained = champion.trained_at or "—"
cols[1].metric("Trained on", trained[:10], help=f"training finished {trained}", border=True)
cols[2].metric("Training batches", len(champion.training_batches), border=True)
serving = served.model_version if served is not None else None
cols[3].metric("Serving now", f"v{serving or '—'}", border=True)
if serving and serving != champion.version:
    st.info("The API has not picked up the new champion yet; replicas check the alias every few seconds.")

cost = champion.serving_cost
if cost:
    st.subheader("Serving cost")
    one, two, three = st.columns(3)
    one.metric(
        "Explain (exact TreeSHAP)",
        f"{cost.get('explain_ms_per_row', float('nan')):.2f} ms/row",
        help=f"budget {cost.get('explain_budget_ms', float('nan')):g} ms per row, one thread, XGBoost's own time",
        border=True,
    )
    two.metric(
        "Predict",
        f"{cost.get('predict_us_per_row', float('nan')):.1f} µs/row",
        help=f"budget {cost.get('predict_budget_us', float('nan')):g} µs per row, one thread, XGBoost's own time",
        border=True,
    )
    three.metric("Trees", f"{cost.get('trees', 0):,.0f}", border=True)

left, right = st.columns(2)
with left:
    st.subheader("Champion test metrics")
    if champion.metrics:
        metrics = champion.metrics
        st.dataframe(pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())}), hide_index=True)
    else:
        st.caption("The champion records no test metrics.")
with right:
    st.subheader("Champion details")
    details = {
        "decision": f"{charts.decision_of(champion)}: {champion.reason or ''}",
        "run id": champion.run_id,
        "registered": champion.created_at,
        "decided": champion.decided_at,
        "training batches": ", ".join(champion.training_batches) or "—",
        **{f"param {k}": v for k, v in champion.params.items()},
    }
    st.dataframe(pd.DataFrame({"field": list(details), "value": [str(v) for v in details.values()]}), hide_index=True)

st.subheader("Live accuracy on homes that sold")
live = report.live_quality or {}
versions = live.get("versions") or {}
if versions:
    table = pd.DataFrame(
        [
            {"version": f"v{v}", "sold homes": f["matched_homes"], "live MdAPE": f.get("mdape"),
             "95% interval": " – ".join(f"{x:.3f}" for x in f["mdape_ci"] if x is not None),
             "offline MdAPE": f.get("offline_mdape"), "bias": f.get("bias"),
             "range coverage": f.get("range_coverage"), "offline range coverage": f.get("offline_range_coverage")}
            for v, f in versions.items()
        ]
    )  # fmt: skip
    st.dataframe(table, hide_index=True, width="stretch")
    st.altair_chart(charts.live_quality_chart(charts.live_quality_frame(live)), width="stretch")
    st.caption(
        "A listing priced while for sale that later arrives sold is matched by its street and ZIP; MdAPE is the median "
        "error of the price served then against the price paid (dashed: the version's offline MdAPE)."
    )
else:
    st.caption(live.get("note") or "No home the API priced has sold yet (the pipeline joins sales as batches arrive).")

if champion.card:
    with st.expander("Model card", expanded=False):
        st.markdown(champion.card)

st.subheader("Pipeline runs")
if report.pipeline_runs:
    st.dataframe(components.runs_table(report.pipeline_runs), hide_index=True, width="stretch")
elif report.pipeline_runs_note:
    st.caption(f"{report.pipeline_runs_note}. Each run is a Ray job: [Ray jobs]({dashboard}/#/jobs).")
else:
    st.caption("No pipeline run has finished yet.")

history = report.promotion_history
st.subheader("Challengers and promotion decisions")
if not history:
    st.caption("No model versions are registered yet.")
    st.stop()
st.dataframe(components.history_table(history), hide_index=True, width="stretch")

long = charts.metrics_frame(history)
if not long.empty:
    names = sorted(long["metric"].unique())
    chosen = st.multiselect(
        "Metrics over versions", names, default=charts.default_metrics(names) or names[:3], key="models.metrics"
    )
    if chosen:
        st.altair_chart(charts.metrics_chart(long[long["metric"].isin(chosen)]), width="content")
for record in history:
    with st.expander(f"Version {record.version} — {charts.decision_of(record)}"):
        st.json(record.model_dump(mode="json"), expanded=True)

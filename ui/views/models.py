"""Models: the champion, the pipeline runs, every challenger's metrics and promotion decision."""

import pandas as pd
import streamlit as st

from ui import charts, components
from ui.client import ApiError

config = components.settings()

st.title("Models")
try:
    card = components.model_card(config)
except ApiError as error:
    components.show_error(error, action="load the model registry")
    st.stop()

served = card.get("served") or {}
if not card.get("registry_available", True):
    st.error(f"The model registry (MLflow) is not reachable: {card.get('registry_error')}", icon=":material/database:")
    if served.get("model_version"):
        st.info(f"The API keeps serving model version {served['model_version']} (its last good model).")
    st.stop()

champion = card.get("champion") or {}
mlflow = config.mlflow_tracking_uri.rstrip("/")
dashboard = config.ray_dashboard_url.rstrip("/")
name = card.get("model_name", config.model_name)
batches = champion.get("training_batches")
batches = batches if isinstance(batches, list) else [batches] if batches else []

st.markdown(
    f"The API serves the **{card.get('model_alias', 'champion')}** of the registered model `{name}` "
    f"([open in MLflow]({mlflow}/#/models/{name}/versions/{champion.get('version')}))."
)
cols = st.columns(4)
cols[0].metric("Champion", f"v{champion.get('version', '—')}", border=True)
trained = champion.get("trained_at") or "—"
cols[1].metric("Trained on", trained[:10], help=f"training finished {trained}", border=True)
cols[2].metric("Training batches", len(batches), border=True)
cols[3].metric("Serving now", f"v{served.get('model_version', '—')}", border=True)
if served.get("model_version") and str(served["model_version"]) != str(champion.get("version")):
    st.info("The API has not picked up the new champion yet; replicas check the alias every few seconds.")

left, right = st.columns(2)
with left:
    st.subheader("Champion metrics")
    metrics = champion.get("metrics") or {}
    if metrics:
        st.dataframe(pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())}), hide_index=True)
    else:
        st.caption("The champion's run logged no metrics.")
with right:
    st.subheader("Champion details")
    details = {
        "run id": champion.get("run_id"),
        "registered": champion.get("registered_at"),
        "training batches": ", ".join(map(str, batches)) or "—",
        **{f"tag {k}": v for k, v in (champion.get("tags") or {}).items()},
    }
    st.dataframe(pd.DataFrame({"field": list(details), "value": [str(v) for v in details.values()]}), hide_index=True)

st.subheader("Pipeline runs")
runs = card.get("pipeline_runs")
if runs:
    st.dataframe(components.runs_table(runs), hide_index=True, width="stretch")
elif runs is None:
    st.caption(f"This API does not list pipeline runs; each run is a Ray job: [Ray jobs]({dashboard}/#/jobs).")
else:
    st.caption("No pipeline run has finished yet.")

history = card.get("promotion_history") or []
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
for entry in history:
    with st.expander(f"Version {entry.get('version')} — {charts.decision_of(entry)}"):
        st.json(entry, expanded=True)

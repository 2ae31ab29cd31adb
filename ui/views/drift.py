"""Data drift: the latest reports of the pipeline's drift stage, per-feature effects and distributions."""

import pandas as pd
import streamlit as st

from ui import components
from ui.client import ApiError

config = components.settings()

st.title("Data drift")
st.markdown(
    "Each pipeline run compares a new batch with the data the champion was trained on before deciding to retrain."
)
try:
    report = components.model_report(config)
except ApiError as error:
    components.show_error(error, action="load the drift reports")
    st.stop()

reports = report.drift_reports
if not reports:
    note = report.drift_note or "the pipeline has not compared a new batch with the champion's data yet."
    st.info(f"No drift reports yet: {note}")
    st.stop()


def _title(report: dict) -> str:
    when = (report.get("created_at") or "")[:16].replace("T", " ")
    return f"{report.get('batch_id') or 'batch'} · {when} · {report.get('verdict', '').replace('_', ' ')}"


if len(reports) > 1:
    trend = pd.DataFrame(
        {
            "report": [_title(r) for r in reports],
            "checks drifted": [sum(c.get("verdict") == "drift" for c in r.get("features", [])) for r in reports],
        }
    )
    with st.expander(f"All {len(reports)} recent reports"):
        st.dataframe(trend, hide_index=True, width="stretch")
index = st.selectbox("Report", range(len(reports)), format_func=lambda i: _title(reports[i]), key="drift.report")
components.render_drift_report(reports[index])

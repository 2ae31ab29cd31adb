"""Ray Estate's front end: `streamlit run ui/app.py` (started by `make up`).

Only navigation and the sidebar live here; each page is a script under ui/views/. The API's
base URL is the setting RAYESTATE_API_URL (default http://127.0.0.1:8000).
"""

import streamlit as st

from ui import components

st.set_page_config(page_title="Ray Estate", page_icon="🏠", layout="wide")
config = components.settings()

page = st.navigation(
    {
        "Prices": [
            st.Page("views/price.py", title="Price a home", icon=":material/home:", default=True),
            st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
            st.Page("views/batch.py", title="Batch pricing", icon=":material/table_view:"),
        ],
        "Operations": [
            st.Page("views/models.py", title="Models", icon=":material/model_training:"),
            st.Page("views/drift.py", title="Data drift", icon=":material/monitoring:"),
        ],
    }
)

with st.sidebar:
    components.api_status_badge(config)
    dashboard = config.ray_dashboard_url.rstrip("/")
    st.markdown(
        f"[Ray jobs]({dashboard}/#/jobs) · [Ray Serve]({dashboard}/#/serve) · "
        f"[MLflow]({config.mlflow_tracking_uri.rstrip('/')}) · [API docs]({config.api_url.rstrip('/')}/docs)"
    )
    st.caption(f"API: {config.api_url}")

page.run()

"""Price a home: the listing form, the predicted price with quick ratios, and why (SHAP)."""

import streamlit as st

from ui import components
from ui.client import ApiError
from ui.listings import listing_from_inputs

config = components.settings()
client = components.api(config)

st.title("Price a home")
states, statuses = components.form_categories(config)

with st.form("price.form"):
    values = components.listing_inputs("price", st.session_state.get("listing", {}), states, statuses)
    submitted = st.form_submit_button("Price this home", type="primary")

if submitted:
    listing = listing_from_inputs(values)
    st.session_state["listing"] = listing
    result = {"listing": listing}
    with st.spinner("Pricing…"):
        try:
            result["prediction"] = client.predict(listing)
            result["explanation"] = client.explain(listing)
        except ApiError as error:
            result["error"] = error
    st.session_state["priced"] = result

result = st.session_state.get("priced")
if result:
    if "prediction" in result:
        components.render_prediction(result["listing"], result["prediction"])
    if "error" in result:
        action = "explain the price" if "prediction" in result else "price this home"
        components.show_error(result["error"], action=action)
    if "explanation" in result:
        st.subheader("Comparable homes")
        components.render_comparables(result["explanation"].get("comparables") or [])
        st.header("Why this price")
        components.render_explanation(result["explanation"])

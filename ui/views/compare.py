"""Compare: one home priced across several states, sizes or room counts (one /predict/batch call)."""

import pandas as pd
import streamlit as st

from ui import charts, components
from ui.client import ApiError, describe_detail
from ui.listings import listing_from_inputs, parse_numbers, price_ratios, variants

DIMENSION_NAMES = {"state": "states", "house_size": "living areas", "bed": "bedrooms", "bath": "bathrooms"}
DEFAULT_CHOICES = {"house_size": "1000, 1500, 2000, 3000", "bed": "2, 3, 4, 5", "bath": "1, 2, 3"}
DEFAULT_STATES = ("California", "Texas", "Ohio", "New York")

config = components.settings()
client = components.api(config)

st.title("Compare")
st.markdown("The same home priced side by side — across states, living areas, bedrooms or bathrooms.")
states, statuses = components.form_categories(config)
home = st.session_state.get("listing", {})

dimension = st.radio(
    "Compare across", list(DIMENSION_NAMES), format_func=DIMENSION_NAMES.get, horizontal=True, key="compare.dimension"
)
with st.form("compare.form"):
    values = components.listing_inputs("compare", home, states, statuses)
    if dimension == "state":
        wanted = [home.get("state", "Florida"), *DEFAULT_STATES]
        choices = st.multiselect("States", states, default=[s for s in dict.fromkeys(wanted) if s in states])
        st.caption("City and ZIP code are left out when comparing states: they belong to one state.")
    else:
        text = st.text_input(f"{DIMENSION_NAMES[dimension].capitalize()} (comma separated)", DEFAULT_CHOICES[dimension])
    submitted = st.form_submit_button("Compare", type="primary")

if submitted:
    listing = listing_from_inputs(values)
    try:
        choices = choices if dimension == "state" else parse_numbers(text)
    except ValueError as error:
        st.warning(f"Could not read the {DIMENSION_NAMES[dimension]}: {error}.")
        choices = []
    if not choices:
        st.warning(f"Choose at least one value to compare {DIMENSION_NAMES[dimension]}.")
    else:
        rows = variants(listing, dimension, choices)
        try:
            with st.spinner("Pricing…"):
                answer = client.predict_batch([row for _, row in rows])
            st.session_state["compared"] = {"rows": rows, "answer": answer}
        except ApiError as error:
            st.session_state.pop("compared", None)
            components.show_error(error, action="compare")

compared = st.session_state.get("compared")
if compared:
    answer = compared["answer"]
    problems = {e["index"]: describe_detail(e["detail"]) for e in answer.get("errors", [])}
    notes = {w["index"]: " | ".join(w["warnings"]) for w in answer.get("warnings", [])}
    frame = pd.DataFrame(
        [
            {
                "variant": label,
                "price": price,
                **{f"price {k}": v for k, v in (price_ratios(row, price) if price is not None else {}).items()},
                "problem": problems.get(i, ""),
                "notes": notes.get(i, ""),
            }
            for i, ((label, row), price) in enumerate(zip(compared["rows"], answer["prices"], strict=True))
        ]
    )
    st.altair_chart(charts.comparison_chart(frame), width="stretch")
    money_columns = [c for c in frame.columns if c.startswith("price")]
    st.dataframe(
        frame.assign(**{c: frame[c].map(charts.money) for c in money_columns}), hide_index=True, width="stretch"
    )
    st.caption(f"Model version {answer.get('model_version')} · one /predict/batch request of {len(frame)} listings.")

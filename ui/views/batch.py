"""Batch pricing: upload a CSV of listings, get every row priced (or its error), download the result."""

import hashlib

import pandas as pd
import streamlit as st

from ui import charts, components
from ui.client import ApiError
from ui.listings import (
    DEFAULT_LISTING,
    FIELDS,
    REQUIRED,
    listings_from_frame,
    missing_columns,
    price_in_chunks,
    priced_frame,
    read_csv,
)

config = components.settings()
client = components.api(config)

st.title("Batch pricing")
st.markdown(
    f"Upload a CSV with one listing per row. Required columns: **{', '.join(REQUIRED)}**; optional: "
    f"{', '.join(f for f in FIELDS if f not in REQUIRED)}. Other columns (such as a listed `price`) are kept "
    "in the download. Each row is checked on its own: a bad row gets an error, the others are still priced."
)
template = pd.DataFrame([DEFAULT_LISTING, {**DEFAULT_LISTING, "state": "Ohio", "city": "Columbus", "bed": 4}])
st.download_button("Download a template CSV", template.to_csv(index=False), "listings-template.csv", "text/csv")

upload = st.file_uploader("Listings CSV", type=["csv"], key="batch.upload")
if upload is None:
    st.stop()

data = upload.getvalue()
digest = hashlib.sha256(data).hexdigest()
done = st.session_state.get("batch")
if not done or done["digest"] != digest:
    try:
        frame = read_csv(data)
    except (ValueError, UnicodeDecodeError) as error:
        st.error(f"{upload.name} is not a readable CSV file: {error}")
        st.stop()
    missing = missing_columns(frame)
    if missing:
        st.error(f"{upload.name} has no column(s) {', '.join(missing)}; found: {', '.join(frame.columns) or 'none'}.")
        st.stop()
    if frame.empty:
        st.error(f"{upload.name} has a header but no rows.")
        st.stop()
    progress = st.progress(0.0, text=f"Pricing {len(frame):,} listings…")
    try:
        result = price_in_chunks(
            client.predict_batch, listings_from_frame(frame), config.max_batch_listings, progress.progress
        )
    except ApiError as error:
        progress.empty()
        components.show_error(error, action=f"price {upload.name}")
        st.stop()
    progress.empty()
    done = {"digest": digest, "name": upload.name, "priced": priced_frame(frame, result), "result": result}
    st.session_state["batch"] = done

priced, result = done["priced"], done["result"]
rejected = int((priced["error"] != "").sum())
cols = st.columns(4)
cols[0].metric("Rows", f"{len(priced):,}", border=True)
cols[1].metric("Priced", f"{len(priced) - rejected:,}", border=True)
cols[2].metric("Rejected", f"{rejected:,}", border=True)
if "predicted_vs_listed" in priced:
    gap = priced["predicted_vs_listed"].abs().median()
    cols[3].metric("Median gap to listed price", f"{gap:.1%}" if pd.notna(gap) else "—", border=True)
st.caption(f"Model version {', '.join(result['model_versions']) or '—'}.")

name = done["name"].rsplit(".", 1)[0]
st.download_button("Download priced CSV", priced.to_csv(index=False), f"{name}-priced.csv", "text/csv", type="primary")
if rejected:
    st.subheader(f"Rejected rows ({rejected:,})")
    failed = priced[priced["error"] != ""]
    st.dataframe(failed, width="stretch", column_order=["error", *(c for c in failed.columns if c != "error")])
st.subheader("Priced rows")
view = priced[priced["error"] == ""].drop(columns=["error"])
first = [c for c in ("predicted_price", "price_low", "price_high", "predicted_vs_listed", "price", "warnings")
         if c in view.columns]  # fmt: skip
shown = {c: view[c].map(charts.money) for c in ("predicted_price", "price_low", "price_high")}
st.dataframe(
    view.assign(**shown).head(1000),
    width="stretch",
    column_order=[*first, *(c for c in view.columns if c not in first)],
    column_config={"predicted_vs_listed": st.column_config.NumberColumn(format="percent")},
)
if len(view) > 1000:
    st.caption(f"Showing the first 1,000 of {len(view):,} priced rows; the download has them all.")

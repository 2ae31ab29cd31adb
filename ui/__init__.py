"""Ray Estate's Streamlit front end: `streamlit run ui/app.py` (pages in ui/views/)."""

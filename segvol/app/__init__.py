"""The segvol web app (Streamlit): a scan, its predicted mask, and a few controls."""

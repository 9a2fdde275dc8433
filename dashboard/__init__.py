"""Streamlit-side code shared by every page: view state and permalinks, sidebar, caches, chart and table output."""

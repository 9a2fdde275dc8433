"""Layer trajectories: cosine similarity to the original embedding for every token at every layer."""

import streamlit as st

from analysis.trace import METRICS_COLUMNS
from dashboard import show
from dashboard.controller import open_page
from dashboard.widgets import clickable_trajectories

context = open_page("Layer trajectories")
result = context.result

st.header("Layer trajectories")
show.caption(result, "Cosine similarity of each token's vector with its own original embedding, per layer")
clickable_trajectories(result, context.highlighted, "cosine", "cosine_trajectories")
st.caption("Hover a line for its token, position, layer, cosine and rank; click it to highlight the token.")

st.subheader("The same data as a table")
show.caption(result, "Cosine and rank of every token at every layer (the CSV is the CLI's metrics.csv)")
show.table(result.metrics, "metrics", key="metrics_table", column_help=METRICS_COLUMNS)

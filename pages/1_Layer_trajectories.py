"""Layer trajectories: cosine similarity to the original embedding for every token at every layer."""

import streamlit as st

from analysis.analyze import METRICS_COLUMNS
from analysis.charts import PICK, trajectory_chart
from dashboard import show
from dashboard.sidebar import pick_from_chart, render_sidebar

context = render_sidebar("Layer trajectories")
result = context.result

st.header("Layer trajectories")
show.caption(result, "Cosine similarity of each token's vector with its own original embedding, per layer")
show.chart(
    trajectory_chart(result, "cosine", context.highlighted),
    "cosine_trajectories",
    key="cosine_chart",
    on_select=lambda: pick_from_chart("cosine_chart", PICK),
)
st.caption("Hover a line for its token, position, layer, cosine and rank; click it to highlight the token.")

st.subheader("The same data as a table")
show.caption(result, "Cosine and rank of every token at every layer (the CSV is the CLI's metrics.csv)")
show.table(result.metrics, "metrics", key="metrics_table", column_help=METRICS_COLUMNS)

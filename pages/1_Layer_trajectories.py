"""Layer trajectories: cosine similarity to the original embedding for every token at every layer."""

import streamlit as st

from analysis.trace import METRICS_COLUMNS
from dashboard import show
from dashboard.cache import cached_background
from dashboard.controller import open_page
from dashboard.widgets import clickable_trajectories

context = open_page("Layer trajectories")
result, view = context.result, context.view

st.header("Layer trajectories")
show.caption(result, "Cosine similarity of each token's vector with its own original embedding, per layer")
baseline = None
if view.geometry == "cosine":
    with st.spinner("Computing the corpus statistics for the anisotropy baseline (once per model and stage)…"):
        baseline = cached_background(view.model, view.stage, view.reference).anisotropy
clickable_trajectories(
    result, context.highlighted, "cosine", "cosine_trajectories", classes=context.classes, baseline=baseline
)
st.caption(
    "Hover a line for its token, position, layer, cosine and rank; click it to highlight the token. With nothing "
    "highlighted, lines are coloured by word class."
    + (
        " Dashed: the anisotropy baseline, the mean cosine between the stage vectors of two different tokens of the "
        "shipped corpus at that layer; a token's cosine near it says little about its own embedding."
        if baseline is not None
        else " The anisotropy baseline is drawn under the plain cosine geometry; this geometry changes what a "
        "random pair's cosine is."
    )
)

st.subheader("The same data as a table")
show.caption(result, "Cosine and rank of every token at every layer (the CSV is the CLI's metrics.csv)")
show.table(result.metrics, "metrics", key="metrics_table", column_help=METRICS_COLUMNS)

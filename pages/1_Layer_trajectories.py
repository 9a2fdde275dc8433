"""Layer trajectories: cosine similarity to the original embedding for every token at every layer."""

import streamlit as st

from analysis.definitions import METRICS_COLUMNS
from dashboard import show
from dashboard.cache import view_background
from dashboard.controller import open_page
from dashboard.jobs import background_job
from dashboard.widgets import clickable_trajectories, follow_job

context = open_page("Layer trajectories")
result, view = context.result, context.view

st.header("Layer trajectories")
show.explanations()
show.caption(result, "Cosine similarity of each token's vector with its own original embedding, per layer")
baseline = waiting = None
if view.geometry == "cosine":
    waiting = background_job(view.model, view.stage)
    baseline = view_background(view).anisotropy if waiting is None else None
clickable_trajectories(
    result, context.highlighted, "cosine", "cosine_trajectories", classes=context.classes, baseline=baseline
)
if waiting is not None:
    st.caption("The anisotropy baseline is being computed from the shipped corpus (once per model and stage):")
    follow_job(waiting)
st.caption(
    "Hover a line for its token, position, layer, cosine and rank; click it to highlight the token. With nothing "
    "highlighted, lines are coloured by word class."
    + (
        " Dashed: the anisotropy baseline, the mean cosine between the stage vectors of two different tokens of the "
        "shipped corpus at that layer; a token's cosine near it says little about its own embedding."
        if view.geometry == "cosine"
        else " The anisotropy baseline is drawn under the plain cosine geometry; this geometry changes what a "
        "random pair's cosine is."
    )
)

st.subheader("The same data as a table")
show.caption(result, "Cosine and rank of every token at every layer (the CSV is the CLI's metrics.csv)")
show.table(result.metrics, "metrics", key="metrics_table", column_help=METRICS_COLUMNS)

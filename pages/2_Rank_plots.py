"""Rank plots: rank of the own embedding per layer, nearest neighbours per layer, neighbour overlap."""

import streamlit as st

from analysis.charts import neighbor_grid, overlap_chart
from analysis.definitions import NEIGHBORS_COLUMNS
from analysis.report.reports import token_label
from dashboard import show
from dashboard.controller import open_page
from dashboard.view import TOP_K_RANGE, current_view
from dashboard.widgets import bind, clickable_trajectories

OVERLAP_SIZES = [10, 25, 50, 100, 200, 500, 1000]

context = open_page("Rank plots")
result = context.result
vocabulary = context.info.vocab_size

st.header("Rank plots")
show.explanations()
show.caption(result, f"Rank of each token's own embedding among all {vocabulary:,} vocabulary embeddings")
clickable_trajectories(result, context.highlighted, "rank", "rank_trajectories", classes=context.classes)
st.caption(
    "Rank 1 (top) means the token's own embedding is the nearest; the axis is logarithmic. With nothing "
    "highlighted, lines are coloured by word class."
)

st.subheader("Nearest vocabulary neighbours per layer")
labels = dict(zip(result.tokens["position"], result.tokens["text"], strict=True))
content = [p for p, special in zip(result.tokens["position"], result.tokens["special"], strict=True) if not special]
focus = next(iter(context.view.highlight), content[0] if content else 0)
left, right = st.columns([2, 3])
left.selectbox(
    "Token",
    list(labels),
    format_func=lambda p: token_label(p, labels[p]),
    help="The first highlighted token; picking one here highlights it.",
    **bind("highlight", focus, widget="focus", convert=lambda p: tuple(dict.fromkeys((p, *current_view().highlight)))),
)
right.slider("Neighbours shown (k)", *TOP_K_RANGE, **bind("top_k"))
k = context.view.top_k
show.caption(
    result,
    f"Top {k} vocabulary items nearest to {token_label(focus, labels[focus])} at each layer; ▶own◀ marks the "
    "token itself, and the last row gives its rank where it falls outside the top k",
)
show.table(
    neighbor_grid(result, focus, k),
    f"neighbors_position_{focus}",
    key="neighbor_grid",
    export=result.neighbors[result.neighbors["position"] == focus],
    hide_index=False,
)
st.caption("The CSV has the CLI's neighbors.csv columns: " + ", ".join(NEIGHBORS_COLUMNS) + ".")

st.subheader("Neighbour overlap between layers")
st.select_slider(
    "Neighbourhood size N",
    sorted({*OVERLAP_SIZES, context.view.overlap_n}),
    help="How many nearest vocabulary items make a token's neighbourhood at a layer.",
    **bind("overlap_n"),
)
show.caption(
    result,
    f"How many of a token's top {result.overlap_n} neighbours at layer l were also among its top "
    f"{result.overlap_n} at layer l-1, and in its original neighbourhood (the neighbours of its reference vector)",
)
show.chart(overlap_chart(result, context.highlighted), "neighbour_overlap", key="overlap_chart", context=context)

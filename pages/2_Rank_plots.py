"""Rank plots: rank of the own embedding per layer, nearest neighbours per layer, neighbour overlap."""

import streamlit as st

from analysis.analyze import NEIGHBORS_COLUMNS
from analysis.charts import PICK, neighbor_grid, overlap_chart, token_label, trajectory_chart
from dashboard import show
from dashboard.sidebar import pick_from_chart, render_sidebar, update_view, view
from dashboard.state import TOP_K_RANGE

OVERLAP_SIZES = [10, 25, 50, 100, 200, 500, 1000]

context = render_sidebar("Rank plots")
result = context.result
vocabulary = context.facts["vocabulary size"]

st.header("Rank plots")
show.caption(result, f"Rank of each token's own embedding among all {vocabulary:,} vocabulary embeddings")
show.chart(
    trajectory_chart(result, "rank", context.highlighted),
    "rank_trajectories",
    key="rank_chart",
    on_select=lambda: pick_from_chart("rank_chart", PICK),
)
st.caption("Rank 1 (top) means the token's own embedding is the nearest; the axis is logarithmic.")

st.subheader("Nearest vocabulary neighbours per layer")
labels = dict(zip(result.tokens["position"], result.tokens["text"], strict=True))
content = [p for p, special in zip(result.tokens["position"], result.tokens["special"], strict=True) if not special]
focus = next(iter(context.view.highlight), content[0] if content else 0)
left, right = st.columns([2, 3])
st.session_state["w_focus"] = focus
left.selectbox(
    "Token",
    list(labels),
    key="w_focus",
    format_func=lambda p: token_label(p, labels[p]),
    on_change=lambda: update_view(highlight=tuple(dict.fromkeys((st.session_state["w_focus"], *view().highlight)))),
    help="The first highlighted token; picking one here highlights it.",
)
st.session_state["w_top_k"] = context.view.top_k
right.slider(
    "Neighbours shown (k)",
    *TOP_K_RANGE,
    key="w_top_k",
    on_change=lambda: update_view(top_k=st.session_state["w_top_k"]),
)
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
st.session_state["w_overlap_n"] = context.view.overlap_n
st.select_slider(
    "Neighbourhood size N",
    sorted({*OVERLAP_SIZES, context.view.overlap_n}),
    key="w_overlap_n",
    on_change=lambda: update_view(overlap_n=st.session_state["w_overlap_n"]),
    help="How many nearest vocabulary items make a token's neighbourhood at a layer.",
)
show.caption(
    result,
    f"How many of a token's top {result.overlap_n} neighbours at layer l were also among its top "
    f"{result.overlap_n} at layer l-1, and in its original neighbourhood (the neighbours of its reference vector)",
)
show.chart(overlap_chart(result, context.highlighted), "neighbour_overlap", key="overlap_chart")

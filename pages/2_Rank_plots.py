"""Rank plots: rank of the own embedding per layer, nearest neighbours per layer, neighbour overlap; or, with
the lens, the target's rank among the model's predictions per layer, the top predictions per layer, and how far
each layer's prediction is from the final one."""

import pandas as pd
import streamlit as st

from analysis.charts import commitment_chart, neighbor_grid, overlap_chart, prediction_grid
from analysis.definitions import LENS_TOP_COLUMNS, NEIGHBORS_COLUMNS
from analysis.tables import token_label
from dashboard import show
from dashboard.controller import Context, page_lens, vocabulary_or_lens_page
from dashboard.view import TOP_K_RANGE, current_view
from dashboard.widgets import bind, clickable_trajectories

OVERLAP_SIZES = [10, 25, 50, 100, 200, 500, 1000]


def token_and_k(context: Context, positions: list[int], noun: str) -> tuple[int, int, str]:
    """The token to show (the first highlighted one of `positions`) and the k slider; returns the token's position,
    k and the token's label."""
    tokens = context.result.tokens
    labels = dict(zip(tokens["position"], tokens["text"], strict=True))
    content = [p for p in positions if not tokens["special"][p]]
    focus = next((p for p in context.view.highlight if p in positions), content[0] if content else positions[0])
    left, right = st.columns([2, 3])
    left.selectbox(
        "Token",
        positions,
        format_func=lambda p: token_label(p, labels[p]),
        help="The first highlighted token; picking one here highlights it.",
        **bind(
            "highlight", focus, widget="focus", convert=lambda p: tuple(dict.fromkeys((p, *current_view().highlight)))
        ),
    )
    right.slider(f"{noun} shown (k)", *TOP_K_RANGE, **bind("top_k"))
    return focus, context.view.settings.top_k, token_label(focus, labels[focus])


def grid_table(grid: pd.DataFrame, rows: pd.DataFrame, focus: int, *, name: str, key: str, file: str,
               columns: dict) -> None:  # fmt: skip
    """A per-layer grid of token `focus`, downloaded as `name`.csv holding that token's `rows` in the columns of the
    CLI's `file`."""
    show.table(grid, f"{name}_position_{focus}", key=key, export=rows[rows["position"] == focus], hide_index=False)
    st.caption(f"The CSV has the CLI's {file} columns: " + ", ".join(columns) + ".")


def vocabulary_view(context: Context) -> None:
    """Each token's rank per layer, its nearest neighbours per layer, and how its neighbourhood changes."""
    result, vocabulary = context.result, context.info.vocab_size
    show.caption(result, f"Rank of each token's own embedding among all {vocabulary:,} vocabulary embeddings")
    clickable_trajectories(result, context.highlighted, "rank", "rank_trajectories", classes=context.classes)
    st.caption(
        "Rank 1 (top) means the token's own embedding is the nearest; the axis is logarithmic. With nothing "
        "highlighted, lines are coloured by word class."
    )

    st.subheader("Nearest vocabulary neighbours per layer")
    focus, k, label = token_and_k(context, result.tokens["position"].tolist(), "Neighbours")
    show.caption(
        result,
        f"Top {k} vocabulary items nearest to {label} at each layer; ▶own◀ marks the token itself, and the last row "
        "gives its rank where it falls outside the top k",
    )
    grid_table(neighbor_grid(result, focus, k), result.neighbors, focus, name="neighbors", key="neighbor_grid",
               file="neighbors.csv", columns=NEIGHBORS_COLUMNS)  # fmt: skip

    st.subheader("Neighbour overlap between layers")
    st.select_slider(
        "Neighbourhood size N",
        sorted({*(n for n in OVERLAP_SIZES if n <= vocabulary), context.view.settings.overlap_n}),
        help="How many nearest vocabulary items make a token's neighbourhood at a layer.",
        **bind("overlap_n"),
    )
    n = result.settings.overlap_n
    show.caption(
        result,
        f"How many of a token's top {n} neighbours at layer l were also among its top {n} at layer l-1, and in its "
        "original neighbourhood (the neighbours of its reference vector)",
    )
    show.chart(overlap_chart(result, context.highlighted), "neighbour_overlap", key="overlap_chart", context=context)


def lens_view(context: Context) -> None:
    """The target's rank among the predictions per layer, the top predictions per layer, and the distance from the
    final prediction."""
    vocabulary = context.info.vocab_size
    lens = page_lens(context)
    if lens is None:  # masked mode still running, or failed: its progress or error is shown
        return
    show.lens_caption(
        lens, f"Rank of the target among all {vocabulary:,} predictions when the model's head reads each layer"
    )
    clickable_trajectories(lens, context.highlighted, "lens_rank", "lens_rank_trajectories", classes=context.classes)
    st.caption(
        "Rank 1 (top) means the layer already predicts the target; the axis is logarithmic. Compare with the "
        "vocabulary view: a token can leave its input embedding while the model still predicts it."
    )

    st.subheader("Top predictions per layer")
    focus, k, label = token_and_k(context, lens.metrics["position"].unique().tolist(), "Predictions")
    target = lens.metrics.loc[lens.metrics["position"] == focus, "target"].iloc[0]
    aim = "it has no next token to predict" if pd.isna(target) else f"the target is {target}"
    show.lens_caption(
        lens,
        f"The {k} tokens the model's head ranks highest at {label} at each layer ({aim}), with their probabilities; "
        "▶target◀ marks the lens target, and the last row gives its rank where it falls outside the top k",
    )
    grid_table(prediction_grid(lens, focus, k), lens.top, focus, name="lens_predictions", key="prediction_grid",
               file="lens_top.csv", columns=LENS_TOP_COLUMNS)  # fmt: skip

    st.subheader("Distance from the final prediction")
    show.lens_caption(lens, "KL(final || layer) in nats: 0 where a layer already predicts what the model outputs")
    clickable_trajectories(lens, context.highlighted, "kl_final", "lens_kl_final", classes=context.classes)

    st.subheader("Where each token commits")
    show.lens_caption(
        lens,
        "The first layer from which this lens's top prediction is the model's own at every later layer (never: not "
        "even at the last layer it reads)",
    )
    show.chart(commitment_chart(lens, context.classes.tolist()), "lens_commitment", key="commitment_chart",
               context=context)  # fmt: skip


vocabulary_or_lens_page("Rank plots", vocabulary_view, lens_view)

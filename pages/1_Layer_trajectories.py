"""Layer trajectories: cosine similarity to the original embedding for every token at every layer, or, with the
lens, the probability the model's own head gives the target at every layer and the entropy of its prediction."""

import streamlit as st

from analysis.definitions import LENS_COLUMNS, METRICS_COLUMNS
from dashboard import show
from dashboard.cache import view_background
from dashboard.controller import Context, page_lens, vocabulary_or_lens_page
from dashboard.jobs import background_job
from dashboard.widgets import clickable_trajectories, follow_job


def vocabulary_view(context: Context) -> None:
    """Every token's cosine to its own reference per layer, against the anisotropy baseline, and the table."""
    result, view = context.result, context.view
    show.caption(result, "Cosine similarity of each token's vector with its own original embedding, per layer")
    baseline = waiting = None
    if view.settings.geometry == "cosine":
        waiting = background_job(context.lm, view.settings.stage)
        baseline = view_background(context.lm, view).vectors.anisotropy if waiting is None else None
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
            " Dashed: the anisotropy baseline, the mean cosine between the stage vectors of two different tokens of "
            "the shipped corpus at that layer; a token's cosine near it says little about its own embedding."
            if view.settings.geometry == "cosine"
            else " The anisotropy baseline is drawn under the plain cosine geometry; this geometry changes what a "
            "random pair's cosine is."
        )
    )
    st.subheader("The same data as a table")
    show.caption(result, "Cosine and rank of every token at every layer (the CSV is the CLI's metrics.csv)")
    show.table(result.metrics, "metrics", key="metrics_table", column_help=METRICS_COLUMNS)


def lens_view(context: Context) -> None:
    """What each layer predicts for each token's target: its probability, and the prediction's entropy."""
    lens = page_lens(context)
    if lens is None:  # masked mode still running, or failed: its progress or error is shown
        return
    show.lens_caption(lens, "Probability the model's own head gives the target when it reads each layer's vector")
    clickable_trajectories(lens, context.highlighted, "lens_prob", "lens_probability", classes=context.classes)
    st.caption(
        "Hover a line for its token, target, probability, rank, entropy and KL from the final prediction; click it "
        "to highlight the token."
        + (" The last token has no next token to predict, so it has no line." if lens.target == "next" else "")
    )
    st.subheader("Entropy of the prediction")
    show.lens_caption(lens, "How spread out each layer's predicted distribution is, in nats (0: one certain token)")
    clickable_trajectories(lens, context.highlighted, "entropy", "lens_entropy", classes=context.classes)
    st.subheader("The same data as a table")
    show.lens_caption(lens, "The lens at every layer and token (the CSV is the CLI's lens.csv)")
    show.table(lens.metrics, "lens", key="lens_table", column_help=LENS_COLUMNS)


vocabulary_or_lens_page("Layer trajectories", vocabulary_view, lens_view)

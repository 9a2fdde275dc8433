"""Base vs large: the same text through two models, on relative depth, with per-model summaries and CKA."""

from collections.abc import Callable

import streamlit as st

import analysis
from analysis.charts import comparison_chart, heatmap
from analysis.model.loading import model_bytes
from analysis.report.compare import SUMMARY_COLUMNS
from analysis.tables import comparison_report, model_labels
from dashboard import show
from dashboard.cache import cached_capabilities, hub_model_available, view_analysis, view_lens
from dashboard.controller import compared_models, open_page, replacements
from dashboard.settings import settings
from dashboard.view import MODEL_PRESETS, View, model_labeller
from dashboard.widgets import bind

Reading = tuple[analysis.AnalysisResult, analysis.LensResult | None, str | None, list[str]]
"""One compared model's analysis, its lens (None: it has none), why it has none, and notices."""


def default_pair() -> tuple[str, str, str | None]:
    """roberta-base and roberta-large where they can load; otherwise the bundled model, with the reason."""
    first = "roberta-base" if hub_model_available("roberta-base") else analysis.BUNDLED_MODEL
    second = "roberta-large" if hub_model_available("roberta-large") else analysis.BUNDLED_MODEL
    if (first, second) == ("roberta-base", "roberta-large"):
        return first, second, None
    return (
        first,
        second,
        (
            "roberta-base and roberta-large cannot be loaded here (not in the local Hugging Face cache and the hub "
            "cannot be reached), so the comparison opened on the bundled model alone: one set of lines. Pick any "
            "other loadable model below to compare two."
        ),
    )


def reader(view: View) -> Callable[[analysis.LoadedModel], Reading]:
    """What reads one compared model: its analysis of `view`, its lens (or why it has none), and notices for what
    it lacks."""

    def read(lm: analysis.LoadedModel) -> Reading:
        found = cached_capabilities(lm)
        changes, notices = replacements(view, found)
        shown = view.changed(**changes)
        lens = view_lens(lm, shown) if found.lens else None  # as each head reads it: a fitted lens is one model's
        return view_analysis(lm, shown), lens, found.reason("lens"), notices

    return read


context = open_page("Base vs large")
view = context.view
st.header("Base vs large")
show.explanations()
notes, pickers = st.container(), st.container()
first_default, second_default, why = default_pair()
models, outputs, said = compared_models(view, (first_default, second_default), reader(view))
show.name_downloads("Base vs large", models)
results = [result for result, _, _, _ in outputs]
lenses = [lens for _, lens, _, _ in outputs if lens is not None]
no_lens = {name: reason for name, (_, lens, reason, _) in zip(models, outputs, strict=True) if lens is None}
said += [notice for _, _, _, notices in outputs for notice in dict.fromkeys(notices)]
if why and not (view.model_a and view.model_b):
    said.insert(0, why)
same = models[0] == models[1]
if same and models != [first_default, second_default]:
    said.append(
        f"Both pickers name {models[0]}: a model compared with itself draws one set of lines, shown once below. "
        "Pick another model in either picker to compare two."
    )
with notes:
    for notice in dict.fromkeys(said):
        st.info(show.literal(notice), icon=":material/info:")
allowed = settings().allowed_models
for column, field, current in zip(pickers.columns(2), ("model_a", "model_b"), models, strict=True):
    column.selectbox(
        "First model" if field == "model_a" else "Second model",
        list(dict.fromkeys([*(MODEL_PRESETS if allowed is None else allowed), current])),
        accept_new_options=allowed is None,
        format_func=model_labeller(),
        **bind(field, current, convert=str.strip),
        help="Pick a preset or type any hub id or local folder. Models are loaded one at a time when together "
        "they would not fit the memory budget.",
    )
drawn = results[:1] if same else results  # one model twice: one set of lines

sizes = [model_bytes(name) for name in models]  # one model picked twice is listed once
st.caption(
    show.literal(
        "Model sizes (float32): "
        + ", ".join(
            f"{name} {size / 2**30:.2f} GB" if size else f"{name} unknown"
            for name, size in dict(zip(models, sizes, strict=True)).items()
        )
        + f"; memory budget {settings().memory_budget_bytes / 2**30:.1f} GB (setting memory_budget_gb): over it, "
        "one model is released before the other loads, and only the small results are kept."
    )
)
comparison = comparison_report(results[0], results[1], view.text)
labels = model_labels(models)
if not comparison.same_tokens:
    st.caption("The two models tokenize the text differently: highlighted positions follow the sidebar's model.")

shown_models = list(dict.fromkeys(models))
both = "the model" if same else "both models"
settings_line = f"{' vs '.join(shown_models)} · {show.settings_words(view.settings)}"
st.subheader("Trajectories on relative depth")
for measure, what in (("cosine", "Cosine similarity to the original embedding"), ("rank", "Rank of the own embedding")):
    show.caption(results[0], f"{what}, {both} on relative depth" + ("" if same else ", overlaid"))
    figure = comparison_chart(drawn, measure, context.highlighted, relative=True)
    show.chart(figure.titled(f"{what} on relative depth", settings_line), f"compare_{measure}_depth",
               key=f"cmp_{measure}")  # fmt: skip

st.subheader("The lens on relative depth: what each layer would predict")
if no_lens:
    reasons = "; ".join(f"{name}: {reason}" for name, reason in no_lens.items())
    st.info(show.literal(f"No lens for {reasons}."), icon=":material/info:")
shown_lenses = lenses[:1] if same else lenses
if shown_lenses:
    lens_line = (
        " vs ".join(lens.model for lens in shown_lenses)
        + f" · lens reads stage {view.lens_stage} as each model's head reads it (fitted lenses are one model's own) · "
        + ("lens targets " + ", ".join(dict.fromkeys(lens.target for lens in shown_lenses)))
    )
    for measure, what in (
        ("lens_rank", "Lens rank of the target"),
        ("lens_prob", "Lens probability of the target"),
    ):
        st.caption(show.literal(f"{what} through each model's own head on relative depth. {lens_line}."))
        figure = comparison_chart(shown_lenses, measure, context.highlighted, relative=True,
                                  names=model_labels([lens.model for lens in shown_lenses]))  # fmt: skip
        show.chart(figure.titled(f"{what} on relative depth", lens_line), f"compare_{measure}_depth",
                   key=f"cmp_{measure}")  # fmt: skip
    st.caption(
        "Where the vocabulary view shows a token leaving its input embedding, the lens shows whether each model "
        "still predicts it there; relative depth puts a 12-layer and a 24-layer model on one axis. The lens reads "
        "the text as typed here (masked mode is on Layer trajectories and Rank plots)."
    )

st.subheader("Side by side on absolute layers")
for measure, what in (("cosine", "Cosine similarity to the original embedding"), ("rank", "Rank of the own embedding")):
    figure = comparison_chart(drawn, measure, context.highlighted, relative=False)
    show.chart(figure.titled(f"{what} per layer", settings_line), f"compare_{measure}", key=f"cmp_{measure}_abs")

st.subheader("Summary per model")
st.caption(
    "Spike layers: where tokens leap at least 10 times down the ranking and come back (see Layer deep dive). "
    "Drift: mean drop of the cosine to the original embedding from the first to the last layer."
)
summary = comparison.summary.iloc[: len(shown_models)]
show.table(summary, "model_summary", key="summary_table", column_help=SUMMARY_COLUMNS)
st.caption(
    show.literal(
        " · ".join(f"{label} = {model}" for label, model in zip(labels[: len(shown_models)], shown_models, strict=True))
    )
)

st.subheader("Layer-to-layer similarity (linear CKA)")
if comparison.cka_cells is None:
    st.info(show.literal(comparison.cka_note))
else:
    show.caption(
        results[0],
        (
            f"Linear CKA between every two layers of {models[0]}"
            if same
            else f"Linear CKA between every layer of {models[0]} (rows) and {models[1]} (columns)"
        )
        + " over the words of the text "
        "(token vectors averaged per word, so different tokenizers compare); 1 = the same geometry",
    )
    show.chart(
        heatmap(
            comparison.cka_cells,
            "second model layer",
            "first model layer",
            "CKA",
            (f"layer of {labels[1]}", f"layer of {labels[0]}", "CKA"),
            bounds=(0, 1),
        ),
        "cka",
        key="cka_chart",
    )
    show.table(comparison.best_match, "cka_best_match", key="cka_best", export=comparison.cka_cells)

"""What every page runs first: page setup, the view from the session or the link, the shared sidebar, the model
and the (cached) analysis, every failure as a message in the page, and the view written back to the URL.
`open_page` hands the page a `Context` to lay out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

import pandas as pd
import streamlit as st

import analysis
from analysis.capture.trace import Extra
from analysis.charts import fitted_scores_chart
from analysis.data import corpus_sentences
from analysis.definitions import FITTED_KINDS, PLAIN_READING
from analysis.fitted.fit import TOKENS_PER_WIDTH, recommended_tokens
from analysis.fitted.scores import SCORE_COLUMNS
from analysis.scoring.geometry import GEOMETRY_SPECS
from analysis.tables import fitted_summary, opening_layer
from analysis.wordclass import word_classes
from dashboard import show, widgets
from dashboard.cache import (
    FittedLenses,
    cached_capabilities,
    cached_fitted,
    fitted_lenses,
    hub_model_available,
    page_model,
    view_analysis,
    view_lens,
)
from dashboard.jobs import background_job, duration, estimated_fit, find_fit, fit_lens_job, masked_lens_job
from dashboard.settings import settings
from dashboard.show import explanations, literal, name_downloads
from dashboard.view import VIEW, View, check_view_text, current_view, update_view, view_from_query, view_to_query

NOTICES = "notices"
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """What a page draws from: the view, its model (checked and loaded once, by `open_page`), the model's sizes,
    the analysis and the highlighted positions."""

    view: View
    lm: analysis.LoadedModel
    info: analysis.ModelInfo
    capabilities: analysis.Capabilities
    result: analysis.AnalysisResult
    classes: pd.Series  # word class per position
    highlighted: list[int]  # explicit picks plus every token of a highlighted word class
    fitted: FittedLenses | None = None  # on a page with a lens view, the lenses fitted at its lens stage


def default_view() -> tuple[View, str | None]:
    """roberta-base when it can load; otherwise the bundled model, with the reason."""
    if hub_model_available("roberta-base"):
        return View(model="roberta-base"), None
    return View(), (
        "roberta-base is not in the local Hugging Face cache and the hub cannot be reached, so the app opened on "
        "the bundled all-MiniLM-L6-v2. To use roberta-base, connect to the internet once and pick it under Model "
        "(it downloads about 500 MB into the Hugging Face cache), or point Model to a local copy."
    )


def _init_view() -> None:
    if VIEW in st.session_state:
        return
    defaults, why = default_view()
    params = st.query_params.to_dict()
    loaded, notices = view_from_query(params, defaults)
    if why and "model" not in params:
        notices.insert(0, why)
    st.session_state[VIEW] = loaded
    st.session_state[NOTICES] = notices


def _fail(message: str, offer_bundled: bool = False) -> NoReturn:
    """Show `message` as an error, offer the bundled model where it may help, and end this run."""
    st.error(literal(message), icon=":material/error:")
    if offer_bundled and current_view().model != analysis.BUNDLED_MODEL and settings().allows(analysis.BUNDLED_MODEL):
        st.button(
            "Use the bundled all-MiniLM-L6-v2 instead",
            on_click=lambda: update_view(model=analysis.BUNDLED_MODEL),
        )
    st.stop()


def _drop_stale_highlights(result: analysis.AnalysisResult) -> None:
    view = current_view()
    stale = [p for p in view.highlight if p >= len(result.tokens)]
    if stale:
        update_view(highlight=tuple(p for p in view.highlight if p < len(result.tokens)))
        st.info(literal(f"Dropped highlighted positions {stale}: the text has only {len(result.tokens)} tokens."))


def open_page(page_title: str, extras: tuple[Extra, ...] = ()) -> Context:
    """Set the page up, draw the shared sidebar, load the model and analysis (with spinners), and return what
    the page lays out. `extras`: what else the page's sections read from the text's trace (attention weights,
    head contexts), recorded in the same forward pass. Any failure is shown in the page and ends the run."""
    st.set_page_config(page_title=f"{page_title} · Token Trails", page_icon=":material/route:", layout="wide")
    _init_view()
    view = current_view()
    with st.sidebar:
        widgets.page_links()
        st.divider()
        widgets.text_input()
        highlight_slot = st.container()
        widgets.model_picker(view.model)
        info_slot = st.empty()
        choices_slot = st.container()
        widgets.geometry_picker()

    for notice in st.session_state.pop(NOTICES, []):
        st.info(literal(notice), icon=":material/info:")
    try:
        check_view_text(view.text)
    except ValueError as error:
        _fail(str(error))
    try:
        with st.spinner(literal(f"Loading {view.model}…")):
            lm = page_model(view.model)
    except ValueError as error:
        _fail(str(error), offer_bundled=True)
    info = lm.info
    found = cached_capabilities(lm)
    view = _fall_back_to_available(view, found)
    view = _within_vocabulary(view, lm.vocab_size)
    with choices_slot:
        widgets.stage_and_reference(found)
    try:
        needs_background = GEOMETRY_SPECS[view.settings.geometry].needs_background
        waiting = background_job(lm, view.settings.stage) if needs_background else None
        if waiting is not None:
            st.info(
                literal(
                    f"The {view.settings.geometry} geometry needs statistics of the shipped corpus at stage "
                    f"{view.settings.stage}: "
                    f"one forward pass over its {len(corpus_sentences())} sentences, once per model and stage. The "
                    "page appears when they are ready; other pages and sessions keep working meanwhile."
                ),
                icon=":material/hourglass_top:",
            )
            widgets.follow_job(waiting)
            st.stop()
        with st.spinner("Tracing every token through every layer…"):
            result = view_analysis(lm, view, extras)
    except ValueError as error:
        _fail(str(error))
    info_slot.caption(literal(widgets.model_info_line(info, lm.self_check)))
    name_downloads(page_title, [view.model])

    _drop_stale_highlights(result)
    with highlight_slot:
        widgets.highlight_controls(result)
    if result.truncated:
        st.warning(
            literal(
                f"The text was cut to the model's {len(result.tokens)} tokens (of {result.n_tokens_in_text}; "
                f"{info.max_tokens_reason}): everything after character {result.truncated_at_char} is not "
                "analysed."
            ),
            icon=":material/content_cut:",
        )
    view = current_view()
    st.query_params.from_dict(view_to_query(view))
    classes = result.derived("word_classes", lambda: word_classes(result.tokens))
    highlighted = sorted(set(view.highlight) | set(classes.index[classes.isin(view.classes)]))
    return Context(
        view=view, lm=lm, info=info, capabilities=found, result=result, classes=classes, highlighted=highlighted
    )


def vocabulary_or_lens_page(
    title: str, vocabulary_view: Callable[[Context], None], lens_view: Callable[[Context], None]
) -> None:
    """A page with a vocabulary view and a lens view (Layer trajectories, Rank plots): opened, headed and
    explained, with the lens controls, then the view the reader chose drawn."""
    context = open_page(title)
    st.header(title)
    explanations()
    unfitted: dict[str, str] = {}
    if context.capabilities.lens:
        fitted = fitted_lenses(context.lm, context.view.lens_stage)
        unfitted = fitted.unusable
        if context.view.lens_reading in unfitted:  # a link's, or the other stage's: the plain lens, said so
            st.info(
                literal(
                    f"The {context.view.lens_reading} lens is {unfitted[context.view.lens_reading]}. Showing the lens "
                    "as the model's head reads it."
                ),
                icon=":material/info:",
            )
            update_view(lens_reading=PLAIN_READING)
        context = replace(context, view=current_view(), fitted=fitted)
    widgets.lens_controls(context.capabilities, context.info.causal, unfitted)
    if not context.view.lens:
        vocabulary_view(context)
        return
    lens_view(context)
    with widgets.section("Fitted lenses: how each reads the layers on held-out texts, and fitting one", "fitted"):
        fitted_section(context)


def fitted_section(context: Context) -> None:
    """The held-out scores of the lenses fitted for the page's model at the lens stage, side by side with the plain
    lens; and fitting one (the shipped corpus or an upload) as a job every session sees."""
    lm, stage = context.lm, context.view.lens_stage
    found = context.fitted.files if context.fitted is not None else {}
    if found:
        shown = cached_fitted(found["tuned"] if "tuned" in found else found["linear"])
        st.caption(
            literal(
                "Each lens on texts no fit saw, per layer: r², how much of the last layer's output the mapped vector "
                "holds in hidden space (1: all of it; the plain lens can fall below 0); KL(final || lens) in nats (0: "
                "the model's own prediction); and the share of held-out tokens whose top-1 is the model's own."
            )
        )
        show.chart(fitted_scores_chart(shown.scores), f"fitted_scores_{stage}", key="fitted_scores", context=context)
        show.table(shown.scores, f"fitted_scores_{stage}", key="fitted_scores_table", column_help=SCORE_COLUMNS)
        st.caption(literal(fitted_summary(shown.record)))
    else:
        st.caption(literal(f"No lens is fitted for {lm.name} at {stage} yet."))
    kind = st.radio(
        "Fit",
        list(FITTED_KINDS),
        horizontal=True,
        help=" ".join(f"**{name}**: {literal(meaning)}." for name, meaning in FITTED_KINDS.items()),
        key="w_fit_kind",
    )
    own, name = widgets.uploaded_texts("fit_upload")
    texts = tuple(own.texts) if own else tuple(corpus_sentences())
    source = name or "the shipped corpus"
    tokens, low, high = estimated_fit(lm, texts, kind)
    wanted = recommended_tokens(lm.hidden_size)
    st.caption(
        literal(
            f"{len(texts):,} texts, {tokens:,} tokens; one text in five is held out and only scored. A stable fit of "
            f"a {lm.hidden_size}-wide model wants {wanted:,} tokens or more ({TOKENS_PER_WIDTH} per dimension)"
            + (
                ": these have fewer, so the ridge carries the fit and its held-out scores say how well."
                if tokens < wanted
                else "."
            )
        )
    )
    job = find_fit(lm, stage, kind)
    if job is not None and job.running:
        widgets.follow_job(job)
        return
    if job is not None and job.error is not None:
        st.error(literal(f"{job.label} stopped: {job.error}"), icon=":material/error:")
    widgets.start_button(
        f"Fit the {kind} lens at {stage} on {source}: about {duration(low, high)} here",
        lambda: fit_lens_job(lm, stage, kind, texts, source),
        key="run_fit",
        help="Runs on the server whatever you do meanwhile; every session can read through the lens once it is done. "
        "A lens fitted before at this stage is replaced.",
    )


def page_lens(context: Context, extras: tuple[Extra, ...] = ()) -> analysis.LensResult | None:
    """The lens of the page's view: read from the page's trace (`extras`: the page's) with a spinner, or in masked
    mode from its job, whose progress is shown while it runs (then None: the page draws no lens yet). Any
    failure is shown in the page, ending the run."""
    view = context.view
    fitted_file = context.fitted.files.get(view.lens_reading) if context.fitted is not None else None  # None: plain
    try:
        if not view.masked:
            with st.spinner("Reading every layer through the model's own head…"):
                return view_lens(context.lm, view, extras, fitted_file=fitted_file)
        job = masked_lens_job(context.lm, view.text, view.lens_stage, view.settings.top_k, fitted_file)
    except ValueError as error:
        _fail(str(error))
    if job.running:
        copies = int((~context.result.tokens["special"]).sum())
        st.info(
            literal(
                f"Masked mode runs the model on {copies} copies of the text, each with one token hidden. The lens "
                "appears when they are done; other pages and sessions keep working meanwhile."
            ),
            icon=":material/hourglass_top:",
        )
    return widgets.follow_job(job)


def deep_dive_layer(context: Context) -> tuple[int, str, list[str]]:
    """The layer the deep dive shows, what its layer picker calls the default choice, and notices: the view's
    layer, or else the opening layer (`analysis.tables.opening_layer`) and why the page opened there. A link's layer or
    head the model does not have is dropped, and the page says so."""
    info = context.info
    view = current_view()
    notices = []
    if view.layer >= info.layers or view.head >= info.heads:
        update_view(
            layer=-1 if view.layer >= info.layers else view.layer, head=0 if view.head >= info.heads else view.head
        )
        notices.append(
            f"The link's layer or head does not exist in this model ({info.layers} layers, {info.heads} heads)."
        )
        view = current_view()
    top, why = opening_layer(context.result.metrics)
    if view.layer >= 0:
        return view.layer, "the top-scoring layer" if why is None else "the layer where ranks move most", notices
    return (
        top,
        "the top-scoring layer" if why is None else "the layer where ranks move most",
        notices + ([why] if why else []),
    )


FALLBACKS = {"attn_output": "attn_residual", "position": "embedding"}
"""What a view shows instead of a stage or reference the model lacks (the nearest one every model has)."""


def replacements(view: View, found: analysis.Capabilities) -> tuple[dict[str, object], list[str]]:
    """The view's stage, reference, lens stage, lens and masked mode that the model of `found` lacks, each with
    its replacement (a dict of View fields), and a notice for each saying why."""
    changes: dict[str, object] = {}
    notices: list[str] = []
    for field in ("stage", "reference", "lens_stage"):
        asked = str(view.value(field))
        why = found.reason(asked)
        if why is not None:
            changes[field] = FALLBACKS[asked]
            name = field.replace("_", " ")
            notices.append(f"{found.model} has no {name} {asked}: {why}. Showing {name} {changes[field]} instead.")
    for field, lacking, instead in (("lens", "lens", "the vocabulary view"), ("masked", "masked lens", "the lens")):
        why = found.reason(field)
        if why is None or not view.value(field) or field in changes:
            continue
        changes.update({"lens": False, "masked": False} if field == "lens" else {"masked": False})
        if view.lens:
            notices.append(f"{found.model} has no {lacking}: {why}. Showing {instead} instead.")
    return changes, notices


def _within_vocabulary(view: View, vocabulary: int) -> View:
    """The view with k and N cut to the model's vocabulary (a link or a larger model's choice can ask for more),
    saying so in the page."""
    if view.settings.top_k <= vocabulary and view.settings.overlap_n <= vocabulary:
        return view
    update_view(top_k=min(view.settings.top_k, vocabulary), overlap_n=min(view.settings.overlap_n, vocabulary))
    st.info(literal(f"k and N are cut to this model's vocabulary of {vocabulary:,} items."), icon=":material/info:")
    return current_view()


def _fall_back_to_available(view: View, found: analysis.Capabilities) -> View:
    """The view with any stage or reference the model lacks replaced, saying so in the page."""
    changes, notices = replacements(view, found)
    for notice in notices:
        st.info(literal(notice), icon=":material/info:")
    if changes:
        update_view(**changes)
    return current_view()


def compared_models(
    view: View, defaults: tuple[str, str], read: Callable[[analysis.LoadedModel], T]
) -> tuple[list[str], list[T], list[str]]:
    """The two models Base vs large compares, what `read(lm)` gives for each, and notices. The view's picks
    (`model_a`, `model_b`) are loaded (`page_model`) and read one at a time; a pick
    that cannot load or be read is replaced by its default, with a notice saying why, and dropped from the view
    (and the link). A default that fails too is shown as an error, ending the run."""
    models, outputs, notices = [], [], []
    for field, asked, default in (("model_a", view.model_a, defaults[0]), ("model_b", view.model_b, defaults[1])):
        for name in dict.fromkeys([asked or default, default]):
            try:
                with st.spinner(literal(f"Loading {name} and tracing the text through it…")):
                    outputs.append(read(page_model(name)))
            except ValueError as error:
                if name == default:
                    _fail(f"{name}: {error}")
                notices.append(f"{name} cannot be compared: {error} Showing {default} in its place.")
                update_view(**{field: ""})
                continue
            models.append(name)
            break
    return models, outputs, notices

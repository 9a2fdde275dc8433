"""The sidebar every page draws first: text, model, stage, reference and highlighting, kept across pages and
mirrored in the URL. It loads the model and runs the (cached) analysis, and hands the page a `Context`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

import analysis
from analysis.charts import PICK, token_label, trajectory_chart
from analysis.wordclass import WORD_CLASSES, word_classes
from dashboard import show
from dashboard.cache import cached_analysis, hub_model_available, loaded_model
from dashboard.settings import settings
from dashboard.show import literal
from dashboard.state import MODEL_PRESETS, View, check_view_text, view_from_query, view_to_query

VIEW = "view"
NOTICES = "notices"
OTHER_MODEL = "other"  # the model picker's "any hub id or folder" option, and whether it is open
PAGES = {
    "streamlit_app.py": ("Home", ":material/home:"),
    "pages/1_Layer_trajectories.py": ("Layer trajectories", ":material/show_chart:"),
    "pages/2_Rank_plots.py": ("Rank plots", ":material/leaderboard:"),
    "pages/3_Layer_deep_dive.py": ("Layer deep dive", ":material/troubleshoot:"),
    "pages/4_Base_vs_large.py": ("Base vs large", ":material/compare_arrows:"),
}


@dataclass(frozen=True)
class Context:
    """What a page draws from: the view, the model's facts, the analysis and the highlighted positions."""

    view: View
    facts: dict[str, int | str]
    result: analysis.AnalysisResult
    classes: pd.Series  # word class per position
    highlighted: list[int]  # explicit picks plus every token of a highlighted word class


def view() -> View:
    return st.session_state[VIEW]


def update_view(**changes) -> None:
    """Change the view; a new text or model resets the highlighted positions, which no longer apply."""
    if {"text", "model"} & changes.keys():
        changes.setdefault("highlight", ())
    st.session_state[VIEW] = replace(view(), **changes)


def pick_from_chart(key: str, selection: str) -> None:
    """`on_select` callback of a clickable chart: add the clicked token's position to the highlighted ones."""
    points = st.session_state[key].selection.get(selection, [])
    picked = [int(point["position"]) for point in points if "position" in point]
    if picked:
        update_view(highlight=tuple(dict.fromkeys((*view().highlight, *picked))))


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


def bind(field: str, value: object = None, *, widget: str | None = None, convert: Callable = lambda v: v) -> dict:
    """Keyword arguments that tie a widget to a view field: a key seeded from the view before the widget is drawn
    (so values survive page switches), and an on_change that writes the widget's value, converted, back."""
    key = f"w_{widget or field}"
    st.session_state[key] = getattr(view(), field) if value is None else value
    return {"key": key, "on_change": lambda: update_view(**{field: convert(st.session_state[key])})}


def clickable_trajectories(context: Context, measure: str, name: str) -> None:
    """A trajectory chart (cosine or rank) whose lines highlight their token when clicked."""
    key = f"{measure}_chart"
    chart = trajectory_chart(context.result.metrics, measure, context.highlighted)
    show.chart(chart, name, key=key, on_select=lambda: pick_from_chart(key, PICK))


def _on_model_choice() -> None:
    choice = st.session_state["w_model_choice"]
    st.session_state[OTHER_MODEL] = choice == OTHER_MODEL
    if choice != OTHER_MODEL:
        update_view(model=choice)


def _model_picker(current: str) -> None:
    allowed = settings().allowed_models
    if allowed is not None:
        st.selectbox(
            "Model",
            list(dict.fromkeys([*allowed, current])),
            format_func=lambda name: MODEL_PRESETS.get(name, name),
            help="This deployment serves only these models (setting allowed_models).",
            **bind("model", current),
        )
        return
    other = st.session_state.get(OTHER_MODEL, False) or current not in MODEL_PRESETS
    choice = OTHER_MODEL if other else current
    st.session_state["w_model_choice"] = choice
    st.selectbox(
        "Model",
        [*MODEL_PRESETS, OTHER_MODEL],
        key="w_model_choice",
        format_func=lambda name: MODEL_PRESETS.get(name, "Other: a hub id or a local folder…"),
        on_change=_on_model_choice,
        help="roberta-base and roberta-large come from the Hugging Face hub (downloaded once); the bundled "
        "model works offline. Any BERT-family encoder with safetensors weights works.",
    )
    if choice == OTHER_MODEL:
        st.text_input(
            "Hub id or local folder",
            placeholder="e.g. bert-base-uncased or /models/my-encoder",
            **bind("model", "" if current in MODEL_PRESETS else current, widget="model_other", convert=str.strip),
        )


def _fail(message: str, offer_bundled: bool = False) -> None:
    st.error(literal(message), icon=":material/error:")
    if offer_bundled and view().model != analysis.BUNDLED_MODEL and settings().allows(analysis.BUNDLED_MODEL):
        st.button(
            "Use the bundled all-MiniLM-L6-v2 instead",
            on_click=lambda: update_view(model=analysis.BUNDLED_MODEL),
        )
    st.stop()


def _facts_line(facts: dict[str, int | str]) -> str:
    return (
        f"{facts['architecture']}: {facts['layers']} layers · hidden size {facts['hidden size']:,} · "
        f"{facts['attention heads']} heads · vocabulary {facts['vocabulary size']:,} · max {facts['max tokens']} tokens"
    )


def _highlight_controls(result: analysis.AnalysisResult) -> None:
    labels = dict(zip(result.tokens["position"], result.tokens["text"], strict=True))
    st.multiselect(
        "Highlighted tokens",
        list(labels),
        format_func=lambda p: token_label(p, labels[p]),
        **bind("highlight", list(view().highlight), convert=tuple),
        placeholder="Pick tokens to follow",
        help="Followed tokens are drawn bold and labelled on every chart. Clicking a line or a token chip "
        "picks it too.",
    )
    st.pills(
        "Highlight a word class",
        list(WORD_CLASSES),
        selection_mode="multi",
        **bind("classes", list(view().classes), convert=tuple),
        help=" ".join(f"{name}: {meaning}." for name, meaning in WORD_CLASSES.items()),
    )


def render_sidebar(page_title: str) -> Context:
    """Draw the shared sidebar, load the model and analysis (with spinners), and return the page's context."""
    st.set_page_config(page_title=f"{page_title} · Token Trails", page_icon=":material/route:", layout="wide")
    _init_view()
    current = view()
    with st.sidebar:
        page_links()
        st.divider()
        st.text_area(
            "Text",
            max_chars=settings().max_text_chars,
            height=120,
            **bind("text"),
            help="Any text. Past the model's length (512 tokens for these models) it is cut, and the page says where.",
        )
        _model_picker(current.model)
        facts_slot = st.empty()
        for field, label, options in (
            ("stage", "Stage: where in each block the vector is read", analysis.STAGES),
            ("reference", "Reference: what 'original embedding' means", analysis.REFERENCES),
        ):
            st.radio(label, list(options), captions=list(options.values()), **bind(field))
        highlight_slot = st.container()

    for notice in st.session_state.pop(NOTICES, []):
        st.info(literal(notice), icon=":material/info:")
    try:
        check_view_text(current.text)
    except ValueError as error:
        _fail(str(error))
    try:
        with st.spinner(literal(f"Loading {current.model}…")):
            encoder = loaded_model(current.model)
    except ValueError as error:
        _fail(str(error), offer_bundled=True)
    try:
        with st.spinner("Tracing every token through every layer…"):
            result = cached_analysis(
                current.model, current.text, current.stage, current.reference, current.top_k, current.overlap_n
            )
    except ValueError as error:
        _fail(str(error))
    facts = encoder.facts()
    facts_slot.caption(literal(_facts_line(facts)))

    stale = [p for p in current.highlight if p >= len(result.tokens)]
    if stale:
        update_view(highlight=tuple(p for p in current.highlight if p < len(result.tokens)))
        st.info(literal(f"Dropped highlighted positions {stale}: the text has only {len(result.tokens)} tokens."))
    with highlight_slot:
        _highlight_controls(result)
    if result.truncated:
        st.warning(
            literal(
                f"The text was cut to the model's {len(result.tokens)} tokens (of {result.n_tokens_in_text}): "
                f"everything after character {result.truncated_at_char} is not analysed."
            ),
            icon=":material/content_cut:",
        )
    st.query_params.from_dict(view_to_query(view()))
    classes = word_classes(result.tokens)
    explicit = set(view().highlight)
    highlighted = sorted(explicit | set(classes.index[classes.isin(view().classes)]))
    return Context(view=view(), facts=facts, result=result, classes=classes, highlighted=highlighted)


def page_links() -> None:
    """Links to every page, carrying the current view in the query string."""
    query = view_to_query(view())
    for path, (label, icon) in PAGES.items():
        st.page_link(path, label=label, icon=icon, query_params=query)

"""The widgets shared by the pages, each tied to a field of the view: text, model, stage, reference,
highlighting, clickable charts and page links. They draw and bind; the controller decides what to load."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

import analysis
from analysis.charts import PICK, trajectory_chart
from analysis.corpus.texts import Texts, texts_from_upload
from analysis.definitions import FORMATS, LENS_READINGS, LENS_STAGE, PLAIN_READING, WORD_CLASSES
from analysis.model.loaded import SelfCheck
from analysis.scoring.geometry import GEOMETRY_SPECS
from analysis.settings import DEFAULTS
from analysis.tables import token_label
from dashboard import show
from dashboard.jobs import Job, job_board
from dashboard.settings import settings
from dashboard.view import MODEL_PRESETS, ROGUE_K_RANGE, current_view, model_labeller, update_view, view_to_query

OTHER_MODEL = "other"  # the model picker's "any hub id or folder" option, and whether it is open
PAGES = {
    "streamlit_app.py": ("Home", ":material/home:"),
    "pages/1_Layer_trajectories.py": ("Layer trajectories", ":material/show_chart:"),
    "pages/2_Rank_plots.py": ("Rank plots", ":material/leaderboard:"),
    "pages/3_Layer_deep_dive.py": ("Layer deep dive", ":material/troubleshoot:"),
    "pages/4_Base_vs_large.py": ("Base vs large", ":material/compare_arrows:"),
}


def bind(field: str, value: object = None, *, widget: str | None = None, convert: Callable = lambda v: v) -> dict:
    """Keyword arguments that tie a widget to a view field: a key seeded from the view before the widget is drawn
    (so values survive page switches), and an on_change that writes the widget's value, converted, back."""
    key = f"w_{widget or field}"
    st.session_state[key] = current_view().value(field) if value is None else value
    return {"key": key, "on_change": lambda: update_view(**{field: convert(st.session_state[key])})}


def pick_from_chart(key: str, selection: str) -> None:
    """`on_select` callback of a clickable chart: add the clicked token's position to the highlighted ones
    (a click on a reference line, which has no token, picks nothing)."""
    points = st.session_state[key].selection.get(selection, [])
    picked = [int(point["position"]) for point in points if point.get("position", -1) >= 0]
    if picked:
        update_view(highlight=tuple(dict.fromkeys((*current_view().highlight, *picked))))


def clickable_trajectories(
    result: analysis.AnalysisResult | analysis.LensResult,
    highlighted: list[int],
    measure: str,
    name: str,
    *,
    classes: pd.Series | None = None,
    baseline: np.ndarray | None = None,
) -> None:
    """A trajectory chart (cosine or rank of an analysis, a lens measure of a lens) whose lines highlight their
    token when clicked; with nothing highlighted, lines coloured by word class; `baseline` as a dashed reference
    line (cosine)."""
    key = f"{measure}_chart"
    if isinstance(result, analysis.LensResult):
        geometry, line = DEFAULTS.geometry, show.lens_line(result)  # the lens reads through the head: no geometry
    else:
        geometry, line = result.settings.geometry, show.settings_line(result)
    figure = trajectory_chart(
        result.metrics, measure, highlighted, classes=classes, baseline=baseline, geometry=geometry
    )
    show.chart(figure.titled(name.replace("_", " "), line), name, key=key, on_select=lambda: pick_from_chart(key, PICK))


def page_links() -> None:
    """Links to every page, carrying the current view in the query string."""
    query = view_to_query(current_view())
    for path, (label, icon) in PAGES.items():
        st.page_link(path, label=label, icon=icon, query_params=query)


def text_input() -> None:
    st.text_area(
        "Text",
        max_chars=settings().max_text_chars,
        height=120,
        **bind("text"),
        help="Any text. Past the model's length (shown under Model: 512 tokens for BERT-style encoders, 1,024 for "
        "GPT-2) it is cut, and the page says where.",
    )


def _on_model_choice() -> None:
    choice = st.session_state["w_model_choice"]
    st.session_state[OTHER_MODEL] = choice == OTHER_MODEL
    if choice != OTHER_MODEL:
        update_view(model=choice)


def model_picker(current: str) -> None:
    """The model: a preset, or any hub id or folder typed in; only the allowlist where a deployment sets one."""
    allowed = settings().allowed_models
    label = model_labeller()
    if allowed is not None:
        st.selectbox(
            "Model",
            list(dict.fromkeys([*allowed, current])),
            format_func=label,
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
        format_func=lambda name: "Other: a hub id or a local folder…" if name == OTHER_MODEL else label(name),
        on_change=_on_model_choice,
        help="Hub models are downloaded once into the Hugging Face cache; the bundled model works offline. Any "
        "encoder (BERT, RoBERTa, XLM-R, ELECTRA, ALBERT, DistilBERT, MPNet, DeBERTa, ModernBERT) or decoder "
        "(GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral, SmolLM) with safetensors weights works. Sizes are "
        "parameters, in millions.",
    )
    if choice == OTHER_MODEL:
        st.text_input(
            "Hub id or local folder",
            placeholder="e.g. bert-base-uncased or /models/my-encoder",
            **bind("model", "" if current in MODEL_PRESETS else current, widget="model_other", convert=str.strip),
        )


def stage_and_reference(found: analysis.Capabilities) -> None:
    """The stage and reference pickers with the model's choices; the ones it lacks below, disabled, with why."""
    for field, label, options, available in (
        ("stage", "Stage: where in each block the vector is read", analysis.STAGES, found.stages),
        ("reference", "Reference: what 'original embedding' means", analysis.REFERENCES, found.references),
    ):
        meanings = " ".join(
            f"**{name}**: {show.literal(meaning)}." for name, meaning in options.items() if name in available
        )
        st.radio(label, list(available), help=meanings, horizontal=True, **bind(field))
        missing = [name for name in options if name not in available]
        if missing:
            st.radio(
                f"Not available for this model ({field})",
                missing,
                captions=[found.reason(name) or "" for name in missing],
                index=None,
                disabled=True,
                key=f"w_missing_{field}",
            )


VIEWS = {False: "Vocabulary view", True: "Lens"}


def lens_controls(found: analysis.Capabilities, causal: bool, unfitted: dict[str, str]) -> None:
    """The vocabulary view or the lens (disabled, with why, for a model without its prediction head); with the
    lens, the stage it reads (block outputs by default: the classic logit lens), its target, masked mode
    (encoders; disabled, with why, for decoders) and how it reads each layer (as it is, or through a fitted lens;
    the `unfitted` ones disabled, each with why)."""
    view = current_view()
    show_column, stage_column, target_column, masked_column = st.columns([3, 3, 3, 2], vertical_alignment="bottom")
    show_column.radio(
        "Show",
        list(VIEWS),
        format_func=VIEWS.get,
        horizontal=True,
        disabled=not found.lens,
        help="**Vocabulary view**: does a layer's vector still look like the token's input embedding (its rank "
        "among all vocabulary embeddings)? **Lens**: what would the model predict from it, through its own head "
        "(final norm and language-model head)? Both read the same forward pass.",
        **bind("lens"),
    )
    if not found.lens:
        show_column.caption(show.literal(f"No lens for {found.model}: {found.reason('lens')}."))
        return
    if not view.lens:
        return
    stage_column.selectbox(
        "Lens reads stage",
        list(found.stages),
        format_func=lambda name: f"{name} · logit lens" if name == LENS_STAGE else name,
        help=f"Where in each block the head reads the vector. {LENS_STAGE}, the block output, is the classic logit "
        "lens: at the last layer it is the model's own output. The sidebar's stage is the vocabulary view's. "
        + " ".join(f"**{name}**: {show.literal(analysis.STAGES[name])}." for name in found.stages),
        **bind("lens_stage"),
    )
    default = "next" if causal else "own"
    target_column.selectbox(
        "Lens target",
        ["", *(name for name in analysis.LENS_TARGETS if name != default)],
        format_func=lambda name: name or f"{default} (the model's default)",
        disabled=view.masked,
        help=" ".join(f"**{name}**: {show.literal(meaning)}." for name, meaning in analysis.LENS_TARGETS.items())
        + (" Masked mode hides a token and asks for it back: its target is own." if view.masked else ""),
        **bind("lens_target", "" if view.lens_target == default else view.lens_target),
    )
    masked_column.toggle(
        "Masked mode",
        disabled=found.reason("masked") is not None,
        help="Hide each token in turn: each is replaced by the mask token in a copy of the text (one copy per "
        "token, run as one batch), and read at its own position: at which layer does the model recover the hidden "
        "token?" + (f" Not available: {show.literal(why)}." if (why := found.reason("masked")) else ""),
        **bind("masked"),
    )
    readings = [name for name in LENS_READINGS if name not in unfitted]
    reading_column, missing_column = st.columns([3, 2], vertical_alignment="top")
    reading_column.radio(
        "Lens reads each layer",
        readings,
        format_func=lambda name: "as the model's head reads it" if name == PLAIN_READING else f"{name} (fitted)",
        horizontal=True,
        help=" ".join(f"**{name}**: {show.literal(meaning)}." for name, meaning in LENS_READINGS.items())
        + " A fitted lens maps each layer's vector into the space the head reads before the head reads it: the plain "
        "lens is biased in early layers, where the vector is not yet in that basis. Fitted lenses are kept for every "
        "session; fit one below.",
        **bind("lens_reading"),
    )
    if unfitted:
        missing_column.radio(
            "Not available (lens reading)",
            list(unfitted),
            captions=[show.literal(why) for why in unfitted.values()],
            index=None,
            disabled=True,
            key="w_missing_lens_reading",
        )


def geometry_picker() -> None:
    """How vectors and references are compared; how many rogue dimensions `no_rogue` removes."""
    st.radio(
        "Geometry: how vectors and references are compared",
        list(analysis.GEOMETRIES),
        horizontal=True,
        help="Controls against anisotropy and rogue dimensions, from statistics of the shipped corpus: a spike "
        "that survives every geometry is not an artefact of a few dominant dimensions. "
        + " ".join(f"**{name}**: {show.literal(meaning)}." for name, meaning in analysis.GEOMETRIES.items()),
        **bind("geometry"),
    )
    if GEOMETRY_SPECS[current_view().settings.geometry].uses_rogue_k:
        st.number_input(
            "rogue_k: dimensions removed",
            *ROGUE_K_RANGE,
            step=1,
            help="The layer's dimensions with the largest share of the mean cosine between corpus tokens are set to "
            "zero in the vectors and the references.",
            **bind("rogue_k"),
        )


def model_info_line(info: analysis.ModelInfo, self_check: SelfCheck | None = None) -> str:
    """The model's sizes in one line, as the sidebar shows them, and its load's self-check where it ran."""
    return (
        f"{info.family}, {info.architecture}: "
        + (f"{info.parameters / 1e6:,.0f}M" if info.parameters >= 10**6 else f"{info.parameters:,}")
        + f" parameters · "
        f"{info.layers} layers · hidden size {info.hidden_size:,} · {info.heads} heads · "
        f"vocabulary {info.vocab_size:,} · max {info.max_tokens:,} tokens"
        + (f" (memory budget; positions allow {info.position_limit:,})" if info.memory_limited else "")
        + (f" · {self_check.summary()}" if self_check is not None else "")
    )


def highlight_controls(result: analysis.AnalysisResult) -> None:
    """Pick tokens to follow, and word classes whose tokens are all followed."""
    labels = dict(zip(result.tokens["position"], result.tokens["text"], strict=True))
    st.multiselect(
        "Highlighted tokens",
        list(labels),
        format_func=lambda p: token_label(p, labels[p]),
        **bind("highlight", list(current_view().highlight), convert=tuple),
        placeholder="Pick tokens to follow",
        help="Followed tokens are drawn bold and labelled on every chart. Clicking a line or a token chip "
        "picks it too.",
    )
    st.pills(
        "Highlight a word class",
        list(WORD_CLASSES),
        selection_mode="multi",
        **bind("classes", list(current_view().classes), convert=tuple),
        help=" ".join(f"{name}: {meaning}." for name, meaning in WORD_CLASSES.items()),
    )


def follow_job(job: Job) -> Any:
    """A finished job's result. While it runs: its progress line, refreshed every second on its own (a fragment),
    and the whole page again once it ends. A failed job: its message, and a button to run it again."""
    if job.running:
        key = job.key

        @st.fragment(run_every=1.0)
        def progress() -> None:
            current = job_board().get(key)
            if current is None or not current.running:
                st.rerun()
            st.progress(current.fraction, text=show.literal(current.status()))

        progress()
        return None
    if job.error is not None:
        st.error(show.literal(f"{job.label} stopped: {job.error}"), icon=":material/error:")
        st.button("Try again", on_click=_run_first(lambda: job_board().retry(job)), key=f"retry_{hash(job.key)}")
        return None
    return job.result


def start_button(label: str, start: Callable[[], object], key: str, help: str) -> None:
    """A button that starts a job (`start()`, run before the page is drawn again)."""
    st.button(label, on_click=_run_first(start), icon=":material/play_arrow:", key=key, help=help)


def _run_first(start: Callable[[], object]) -> Callable[[], None]:
    """A button's on_click that runs `start` (a job's start) before the page is drawn again."""

    def on_click() -> None:
        start()

    return on_click


SECTIONS = "sections"
"""Session-state key of the open/closed state of every foldable section the reader has toggled, by name."""


def section(label: str, name: str, expanded: bool = False):
    """A foldable section that stays as the reader left it: across reruns, a finished job, a new layer (whose
    number is in `label`) or an upload, and across page switches. `name` identifies it whatever its label says;
    `expanded` is its state before the reader first toggles it."""
    key = f"section_{name}"

    def remember() -> None:
        st.session_state.setdefault(SECTIONS, {})[name] = st.session_state[key]

    opened = st.session_state.get(SECTIONS, {}).get(name, expanded)
    return st.expander(label, expanded=opened, key=key, on_change=remember)


def uploaded_texts(key: str) -> tuple[Texts | None, str | None]:
    """The texts of a file the person uploads, if any (else None), and the file's name (`key`: the uploader's)."""
    limit = settings().max_text_chars
    uploaded = st.file_uploader(
        f"Your own texts (optional, up to {limit:,} characters in all)",
        type=[ext.removeprefix(".") for ext in FORMATS],
        max_upload_size=settings().max_upload_mb,
        help="; ".join(f"{ext}: {meaning}" for ext, meaning in FORMATS.items())
        + f". The app reads up to {limit:,} characters of text (setting max_text_chars). For a corpus of any size, "
        "run python -m analysis sweep (see the README).",
        key=key,
    )
    if uploaded is None:
        return None, None
    try:
        return texts_from_upload(uploaded.name, uploaded.getvalue(), limit), uploaded.name
    except ValueError as error:
        st.error(show.literal(str(error)), icon=":material/error:")
        return None, uploaded.name

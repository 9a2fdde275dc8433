"""Output helpers: literal text in Markdown widgets, captions, charts and tables with their downloads."""

from __future__ import annotations

import re
from functools import partial

import pandas as pd
import streamlit as st

import analysis
from analysis.charts import Figure
from analysis.definitions import PLAIN_READING
from analysis.scoring.geometry import GEOMETRY_SPECS
from analysis.settings import AnalysisSettings
from analysis.tables import short_name

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|:~$&=\"'])")
_UNSAFE = re.compile(r"[^A-Za-z0-9.]+")
DOWNLOADS = "download_stem"
"""Session-state key of what this page's downloads are named after: its model(s) and the page."""


def literal(text: str) -> str:
    """`text` escaped so Streamlit's Markdown shows it as typed: no formatting, links, HTML or directives."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def name_downloads(page: str, models: list[str]) -> None:
    """Name this run's downloads after `models` (short names) and `page`: `all-MiniLM-L6-v2_rank-plots_…`, so
    files downloaded from different models and pages never collide."""
    parts = [*dict.fromkeys(short_name(model) for model in models), page]
    st.session_state[DOWNLOADS] = "_".join(_UNSAFE.sub("-", part).strip("-").lower() for part in parts)


def file_name(name: str, extension: str) -> str:
    """The download file name of `name` (a chart or table) on this page: `model_page_name.extension`."""
    stem = st.session_state.get(DOWNLOADS)
    return f"{stem}_{name}.{extension}" if stem else f"{name}.{extension}"


def settings_line(result: analysis.AnalysisResult) -> str:
    """`model · stage attn_residual · reference position · geometry cosine · 14 tokens`: what a result was computed
    with, in one line (the choices are explained once, in `explanations`)."""
    if result.method == "original_demo":
        how = f"the original demo's computation · reference {result.settings.reference}"
    else:
        how = settings_words(result.settings)
    return f"Model {result.model} · {how} · {len(result.tokens)} tokens"


def settings_words(settings: AnalysisSettings, separator: str = " · ") -> str:
    """`stage attn_residual · reference position · geometry cosine`, the removed dimensions named under no_rogue."""
    removed = f", {settings.rogue_k} dimensions removed" if GEOMETRY_SPECS[settings.geometry].uses_rogue_k else ""
    parts = (f"stage {settings.stage}", f"reference {settings.reference}", f"geometry {settings.geometry}{removed}")
    return separator.join(parts)


def caption(result: analysis.AnalysisResult, measured: str) -> None:
    """Say what a chart or table measures and what it was computed with."""
    st.caption(literal(f"{measured}. {settings_line(result)}."))


def lens_line(lens: analysis.LensResult) -> str:
    """`model · stage layer_output · lens target next · 14 tokens`: what a lens was computed with, in one line."""
    masked = " · each token masked in turn" if lens.masked else ""
    reading = "" if lens.reading == PLAIN_READING else f" · through the fitted {lens.reading} lens"
    return (
        f"Model {lens.model} · stage {lens.stage} · lens target {lens.target}{masked}{reading} · "
        f"{len(lens.tokens)} tokens"
    )


def lens_caption(lens: analysis.LensResult, measured: str) -> None:
    """Say what a lens chart or table measures and what it was computed with."""
    st.caption(literal(f"{measured}. {lens_line(lens)}."))


def explanations() -> None:
    """What the sidebar's choices mean, said once per page in a popover (charts' captions only name them)."""
    with st.popover("What stage, reference and geometry mean", icon=":material/help:"):
        for title, choices in (
            ("Stage: where in each block the vector is read", analysis.STAGES),
            ("Reference: what 'original embedding' means", analysis.REFERENCES),
            ("Geometry: how vectors and references are compared", analysis.GEOMETRIES),
        ):
            st.markdown(f"**{title}**")
            st.markdown("\n".join(f"- **{name}**: {literal(meaning)}" for name, meaning in choices.items()))
        st.markdown(
            "**Rank** is 1 + the number of other vocabulary items whose reference is more cosine-similar: rank 1 "
            "means the token's own embedding is the nearest."
        )


def chart(figure: Figure, name: str, key: str, on_select=None, context=None):
    """Draw a figure (clickable when `on_select` is given) with PNG and SVG downloads rendered on click, headed
    with the page's model and settings (`context`'s view) when exported."""
    if context is not None:
        view = context.view
        figure = figure.titled(
            name.replace("_", " "),
            f"{view.model} · {settings_words(view.settings)}",
        )
    spec = figure.vega_lite()
    if on_select is None:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key)
    else:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key, on_select=on_select, selection_mode="pick")
    left, right, _ = st.columns([1, 1, 4])
    for column, fmt, mime in ((left, "png", "image/png"), (right, "svg", "image/svg+xml")):
        column.download_button(
            f"Download {fmt.upper()}",
            data=partial(figure.to_bytes, fmt),
            file_name=file_name(name, fmt),
            mime=mime,
            key=f"{key}_{fmt}",
            on_click="ignore",
            icon=":material/download:",
        )
    return event


def table(
    shown: pd.DataFrame,
    name: str,
    key: str,
    column_help: dict[str, str] | None = None,
    export: pd.DataFrame | None = None,
    hide_index: bool = True,
) -> None:
    """A dataframe with hover help per column and a CSV download (of `export`, in the CLI's columns, if given)."""
    config = {column: st.column_config.Column(help=meaning) for column, meaning in (column_help or {}).items()}
    st.dataframe(shown, column_config=config, key=key, hide_index=hide_index)
    csv_source = shown if export is None else export
    st.download_button(
        "Download CSV",
        data=lambda: csv_source.to_csv(index=False),
        file_name=file_name(name, "csv"),
        mime="text/csv",
        key=f"{key}_csv",
        on_click="ignore",
        icon=":material/download:",
    )

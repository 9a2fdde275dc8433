"""Output helpers: literal text in Markdown widgets, captions, charts and tables with their downloads."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

import analysis
from analysis.charts import Figure

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|:~$&=\"'])")


def literal(text: str) -> str:
    """`text` escaped so Streamlit's Markdown shows it as typed: no formatting, links, HTML or directives."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def caption(result: analysis.AnalysisResult, measured: str) -> None:
    """Say what a chart or table measures: model, stage and reference, each explained."""
    st.caption(
        literal(
            f"{measured}. Model {result.model}; stage {result.stage} ({analysis.STAGES[result.stage]}); "
            f"reference {result.reference} ({analysis.REFERENCES[result.reference]}); geometry {_geometry(result)}; "
            f"{len(result.tokens)} tokens."
        )
    )


def _geometry(result: analysis.AnalysisResult) -> str:
    if result.geometry == "no_rogue":
        return f"no_rogue, {result.rogue_k} dimensions removed"
    return f"{result.geometry} ({analysis.GEOMETRIES[result.geometry]})"


def chart(figure: Figure, name: str, key: str, on_select=None):
    """Draw a figure (clickable when `on_select` is given) with PNG and SVG downloads rendered on click."""
    spec = figure.vega_lite()
    if on_select is None:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key)
    else:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key, on_select=on_select, selection_mode="pick")
    left, right, _ = st.columns([1, 1, 4])
    for column, fmt, mime in ((left, "png", "image/png"), (right, "svg", "image/svg+xml")):
        column.download_button(
            f"Download {fmt.upper()}",
            data=lambda fmt=fmt: figure.to_bytes(fmt),
            file_name=f"{name}.{fmt}",
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
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"{key}_csv",
        on_click="ignore",
        icon=":material/download:",
    )

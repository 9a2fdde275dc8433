"""Charts and tables of an AnalysisResult, shared by the app and scripts (no Streamlit here).

Every chart is a `Figure`: a Vega-Lite spec that depends only on the chart's shape (built with Altair and
validated once, then cached) and the rows it draws, whose style columns carry the highlighting. A highlight
therefore changes only the rows, and redrawing costs no Altair building or schema validation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import altair as alt
import numpy as np
import pandas as pd
import vl_convert

from analysis.trace import AnalysisResult
from analysis.verdict import METHODS

PICK = "pick"
"""Name of the click selection on trajectory charts: its value is the clicked token's `position`."""

DATA = "rows"
"""Name of the dataset every figure's spec draws from."""

FAINT = "#b8bec6"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_TOOLTIP = [
    alt.Tooltip("label:N", title="token"),
    alt.Tooltip("position:Q", title="position"),
    alt.Tooltip("layer:Q", title="layer"),
    alt.Tooltip("cosine:Q", title="cosine", format=".4f"),
    alt.Tooltip("rank:Q", title="rank", format=","),
]
# Styles come from data columns (scale=None) rather than conditions: the spec stays the same whatever is highlighted.
_STYLE = {
    "color": alt.Color("colour:N", scale=None, legend=None),
    "strokeWidth": alt.StrokeWidth("width:Q", scale=None),
    "opacity": alt.Opacity("alpha:Q", scale=None),
    "order": alt.Order("highlighted:N"),
    "detail": alt.Detail("position:N"),
}
_VL_VERSION = "_".join(alt.SCHEMA_VERSION.split(".")[:2])  # "v6.4.1" -> "v6_4", as vl-convert names it


@dataclass(frozen=True)
class Figure:
    """A chart: `spec`, a Vega-Lite spec whose data is the dataset `DATA`, and `data`, the rows it draws."""

    spec: dict
    data: pd.DataFrame

    def vega_lite(self) -> dict:
        """The whole spec with the rows attached as a data frame (what `st.vega_lite_chart(spec=...)` takes)."""
        return {**copy.deepcopy(self.spec), "datasets": {DATA: self.data}}

    def to_json(self) -> dict:
        """The whole spec with the rows inline as JSON records (missing values as null)."""
        return {**copy.deepcopy(self.spec), "datasets": {DATA: json.loads(self.data.to_json(orient="records"))}}

    def to_bytes(self, fmt: Literal["png", "svg"]) -> bytes:
        """The chart rendered with vl-convert: PNG at twice the pixel size, or SVG."""
        if fmt == "png":
            return vl_convert.vegalite_to_png(self.to_json(), vl_version=_VL_VERSION, scale=2)
        if fmt == "svg":
            return vl_convert.vegalite_to_svg(self.to_json(), vl_version=_VL_VERSION).encode()
        raise ValueError(f"Unknown image format {fmt!r}: choose png or svg.")

    def save(self, path: str | Path) -> None:
        """Write the chart to `path`: .png, .svg, .html (a standalone page) or .json (the Vega-Lite spec)."""
        path = Path(path)
        suffix = path.suffix.lower().lstrip(".")
        if suffix in ("png", "svg"):
            path.write_bytes(self.to_bytes(suffix))
        elif suffix == "html":
            path.write_text(vl_convert.vegalite_to_html(self.to_json(), vl_version=_VL_VERSION))
        elif suffix == "json":
            path.write_text(json.dumps(self.to_json(), indent=2))
        else:
            raise ValueError(f"Cannot save a chart as {path.name!r}: use .png, .svg, .html or .json.")


def _spec(chart: alt.TopLevelMixin) -> dict:
    """Validate an Altair chart that draws from `DATA` and return its Vega-Lite dict (done once per shape)."""
    return chart.to_dict()


def _rows() -> alt.NamedData:
    return alt.NamedData(name=DATA)


def token_label(position: int, text: str) -> str:
    """How a token is named in legends and pickers: `3 · like` (position, then its text)."""
    return f"{position} · {text.strip() or repr(text)}"


def _styled(frame: pd.DataFrame, highlight: list[int], columns: list[str], faint_alpha: float = 0.35) -> pd.DataFrame:
    """`frame[columns]` plus label, highlighted, colour, width and alpha: highlighted tokens coloured and bold, the
    rest faint. Only the columns a chart draws are kept, since every row is sent to the browser."""
    colours = {position: PALETTE[i % len(PALETTE)] for i, position in enumerate(highlight)}
    tokens = frame.drop_duplicates("position")
    labels = {p: token_label(p, t) for p, t in zip(tokens["position"], tokens["text"], strict=True)}
    highlighted = frame["position"].isin(highlight)
    return frame[columns].assign(
        label=frame["position"].map(labels),
        highlighted=highlighted,
        colour=np.where(highlighted, frame["position"].map(colours), FAINT),
        width=np.where(highlighted, 3.0, 1.0),
        alpha=np.where(highlighted, 1.0, faint_alpha),
    )


_TRAJECTORY_COLUMNS = ["layer", "position", "cosine", "rank"]


def _measure_axis(measure: str, rank_title: str = "rank of own embedding (1 = nearest, log scale)") -> alt.Y:
    if measure == "rank":
        return alt.Y(
            "rank:Q",
            title=rank_title,
            scale=alt.Scale(type="log", reverse=True, domainMin=1),
            axis=alt.Axis(format="~s"),
        )
    return alt.Y("cosine:Q", title="cosine similarity to original embedding", scale=alt.Scale(zero=False))


WORD_CLASS_COLOURS = {"function": "#1f77b4", "content": "#2ca02c", "punctuation": "#ff7f0e", "special": "#9467bd"}
BASELINE = -1
"""The `position` of the anisotropy baseline's rows in a trajectory chart's data (no token has it)."""


@lru_cache(maxsize=64)
def _trajectory_spec(measure: str, n_layers: int, x_title: str, by_class: bool, baseline: bool) -> dict:
    pick = alt.selection_point(name=PICK, fields=["position"], on="click", clear="dblclick")
    x = alt.X(
        "layer:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d"), scale=alt.Scale(domain=[0, n_layers - 1])
    )
    y = _measure_axis(measure)
    style = dict(_STYLE)
    tooltip = list(_TOOLTIP)
    if by_class:
        style["color"] = alt.Color(
            "word_class:N",
            title="word class",
            scale=alt.Scale(domain=list(WORD_CLASS_COLOURS), range=list(WORD_CLASS_COLOURS.values())),
        )
        tooltip.insert(1, alt.Tooltip("word_class:N", title="word class"))
    lines = (
        alt.Chart()
        .transform_filter(alt.datum.position >= 0)
        .mark_line(point=alt.OverlayMarkDef(size=18, filled=True))
        .encode(x=x, y=y, tooltip=tooltip, **style)
        .add_params(pick)
    )
    labels = (
        alt.Chart()
        .transform_filter(alt.datum.highlighted & (alt.datum.layer == n_layers - 1))
        .mark_text(align="left", dx=6, fontWeight="bold")
        .encode(x=x, y=y, text="label:N", color=_STYLE["color"])
    )
    layers = [lines, labels]
    if baseline:
        layers.append(
            alt.Chart()
            .transform_filter(alt.datum.position == BASELINE)
            .mark_line(color="#444444", strokeDash=[6, 4], strokeWidth=2)
            .encode(
                x=x,
                y=y,
                tooltip=[
                    alt.Tooltip("label:N", title="line"),
                    alt.Tooltip("layer:Q", title="layer"),
                    alt.Tooltip("cosine:Q", title="mean cosine of corpus token pairs", format=".4f"),
                ],
            )
        )
    # Right padding leaves room for the labels of highlighted tokens at the last layer.
    chart = alt.layer(*layers, data=_rows()).properties(height=420, width=720, padding={"right": 90})
    return _spec(chart)


def trajectory_chart(
    metrics: pd.DataFrame,
    measure: str,
    highlight: list[int],
    x_title: str = "layer (block index l)",
    *,
    classes: pd.Series | None = None,
    baseline: np.ndarray | None = None,
) -> Figure:
    """One line per token over layers from `AnalysisResult.metrics` or the exported metrics.csv: `measure` is
    "cosine" or "rank" (log scale, rank 1 at the top).

    Highlighted tokens are coloured, bold and labelled at their last point; the rest are faint. With nothing
    highlighted and `classes` (word class per position) given, lines are coloured by word class with a legend.
    `baseline` `[layers]` (cosine only): the anisotropy baseline as a dashed line. Clicking a line selects its
    `position` through the `PICK` selection.
    """
    n_layers = int(metrics["layer"].max()) + 1
    by_class = classes is not None and not highlight
    rows = _styled(metrics, highlight, _TRAJECTORY_COLUMNS)
    if by_class:
        rows = rows.assign(word_class=metrics["position"].map(classes).to_numpy(), alpha=0.7, width=1.5)
    with_baseline = baseline is not None and measure == "cosine"
    if with_baseline:
        line = pd.DataFrame(
            {
                "layer": np.arange(n_layers),
                "position": BASELINE,
                "cosine": np.asarray(baseline, dtype=float),
                "label": "anisotropy baseline",
                "highlighted": False,
            }
        )
        rows = pd.concat([rows, line], ignore_index=True)
    return Figure(_trajectory_spec(measure, n_layers, x_title, by_class, with_baseline), rows)


OVERLAP_AGAINST = {"previous": "previous layer (l-1)", "reference": "original neighbourhood"}


@lru_cache(maxsize=16)
def _overlap_spec(n: int) -> dict:
    chart = (
        alt.Chart(_rows())
        .mark_line(point=alt.OverlayMarkDef(size=14, filled=True))
        .encode(
            x=alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("shared:Q", title=f"shared neighbours (of top {n})", scale=alt.Scale(domain=[0, n])),
            tooltip=[
                alt.Tooltip("label:N", title="token"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("against:N", title="overlap with"),
                alt.Tooltip("shared:Q", title=f"shared of top {n}"),
            ],
            **_STYLE,
        )
        .properties(height=300, width=320)
        .facet(column=alt.Column("against:N", title=None, sort=list(OVERLAP_AGAINST.values())))
    )
    return _spec(chart)


def overlap_rows(result: AnalysisResult) -> pd.DataFrame:
    """Neighbour overlap in long form: layer, position, text, against (what it is compared with), shared.
    Layer 0 has no `previous` row: there is no layer before it."""
    overlap = result.overlap
    text = result.tokens["text"].to_numpy()[overlap["position"].to_numpy()]
    frames = []
    for column, against in OVERLAP_AGAINST.items():
        present = overlap[column].notna().to_numpy()
        frames.append(
            pd.DataFrame(
                {
                    "layer": overlap["layer"].to_numpy()[present],
                    "position": overlap["position"].to_numpy()[present],
                    "text": text[present],
                    "against": against,
                    "shared": overlap[column].to_numpy()[present].astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def overlap_chart(result: AnalysisResult, highlight: list[int], rows: pd.DataFrame | None = None) -> Figure:
    """Neighbour overlap per layer: with the previous layer and with the token's original neighbourhood.
    `rows`: `overlap_rows(result)` when the caller keeps it."""
    n = int(result.overlap["n"].iloc[0])
    rows = overlap_rows(result) if rows is None else rows
    return Figure(_overlap_spec(n), _styled(rows, highlight, ["layer", "position", "against", "shared"]))


def neighbor_grid(result: AnalysisResult, position: int, k: int) -> pd.DataFrame:
    """Top-k neighbours of one token: one row per neighbour rank, one column per layer (`layer 0`, …).

    The own token is marked `▶piece◀`; where it is outside the top k, a last row gives its rank.
    """
    neighbors = result.neighbors
    rows = neighbors[(neighbors["position"] == position) & (neighbors["neighbor_rank"] <= k)]  # layer-major, best first
    n_layers = int(result.metrics["layer"].max()) + 1
    pieces = rows["neighbor"].to_numpy(dtype=object)
    cells = np.where(rows["is_own"].to_numpy(), "▶" + pieces + "◀", pieces).reshape(n_layers, -1).T
    columns = [f"layer {layer}" for layer in range(n_layers)]
    grid = pd.DataFrame(cells, columns=columns, index=pd.Index([str(r) for r in range(1, len(cells) + 1)]))
    own = result.metrics[result.metrics["position"] == position]
    outside = [
        f"▶{token}◀ rank {rank:,}" if rank > k else "" for token, rank in zip(own["token"], own["rank"], strict=True)
    ]
    if any(outside):
        grid.loc["own token"] = outside
    grid.index.name = "neighbour rank"
    return grid


@lru_cache(maxsize=1)
def _spike_spec() -> dict:
    chart = (
        alt.Chart(_rows())
        .mark_bar()
        .encode(
            x=alt.X("layer:O", title="layer (block index l)"),
            y=alt.Y("score:Q", title="spike score (share of tokens)", axis=alt.Axis(format=".0%")),
            color=alt.condition(alt.datum.selected, alt.value(PALETTE[1]), alt.value(FAINT)),
            tooltip=[
                alt.Tooltip("layer:O", title="layer"),
                alt.Tooltip("spiking:Q", title="tokens that spike"),
                alt.Tooltip("tokens:Q", title="tokens"),
                alt.Tooltip("score:Q", title="spike score", format=".1%"),
            ],
        )
        .properties(height=220, width=720)
    )
    return _spec(chart)


def spike_chart(scores: pd.DataFrame, selected: int) -> Figure:
    """Spike score per layer (share of tokens that spike), the selected layer in colour."""
    return Figure(_spike_spec(), scores.assign(selected=scores["layer"] == selected, score=scores["score"].fillna(0)))


@lru_cache(maxsize=64)
def _heatmap_spec(
    x: str, y: str, value: str, titles: tuple[str, str, str], x_order: tuple, y_order: tuple, diverging: bool
) -> dict:
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if diverging else alt.Scale(scheme="blues")
    x_title, y_title, value_title = titles
    chart = (
        alt.Chart(_rows())
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:N", title=x_title, sort=list(x_order)),
            y=alt.Y(f"{y}:N", title=y_title, sort=list(y_order)),
            color=alt.Color(f"{value}:Q", title=value_title, scale=scale),
            tooltip=[
                alt.Tooltip(f"{y}:N", title=y_title),
                alt.Tooltip(f"{x}:N", title=x_title),
                alt.Tooltip(f"{value}:Q", title=value_title, format=".4f"),
            ],
        )
        .properties(width=720)
    )
    return _spec(chart)


def heatmap(
    frame: pd.DataFrame, x: str, y: str, value: str, titles: tuple[str, str, str], *, diverging: bool
) -> Figure:
    """A rect heatmap of `value` over `x` (columns, in frame order) and `y` (rows, in frame order); a diverging
    red-blue scale centred on 0, or a sequential blue one."""
    x_order, y_order = (tuple(dict.fromkeys(frame[column].tolist())) for column in (x, y))
    return Figure(_heatmap_spec(x, y, value, titles, x_order, y_order, diverging), frame)


@lru_cache(maxsize=16)
def _norms_spec(labels: tuple[str, ...]) -> dict:
    chart = (
        alt.Chart(_rows())
        .mark_bar()
        .encode(
            x=alt.X("label:N", title="token", sort=list(labels)),
            xOffset="vector:N",
            y=alt.Y("norm:Q", title="L2 norm"),
            color=alt.Color(
                "vector:N",
                title=None,
                scale=alt.Scale(domain=["residual", "attention update"], range=[FAINT, PALETTE[0]]),
            ),
            tooltip=["label:N", "vector:N", alt.Tooltip("norm:Q", format=".3f")],
        )
        .properties(height=260, width=720)
    )
    return _spec(chart)


def norms_chart(frame: pd.DataFrame) -> Figure:
    """Per token: norm of the residual stream (block input) against the norm of the attention update.

    `frame`: label, residual, attention update (one row per token, in order)."""
    long = frame.melt(
        id_vars="label", value_vars=["residual", "attention update"], var_name="vector", value_name="norm"
    )
    return Figure(_norms_spec(tuple(frame["label"])), long)


@lru_cache(maxsize=2)
def _shares_spec(by_method: bool) -> dict:
    base = alt.Chart().encode(
        x=alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("word_class:N", title="word class"),
    )
    lines = base.mark_line(point=True).encode(
        y=alt.Y("share:Q", title="share of tokens that spike", axis=alt.Axis(format="%")),
        tooltip=[
            *([alt.Tooltip("method:N", title="method")] if by_method else []),
            alt.Tooltip("word_class:N", title="word class"),
            alt.Tooltip("layer:Q", title="layer"),
            alt.Tooltip("spikes:Q", title="spiking tokens"),
            alt.Tooltip("tokens:Q", title="tokens"),
            alt.Tooltip("share:Q", title="share", format=".1%"),
            alt.Tooltip("low:Q", title="95% CI low", format=".1%"),
            alt.Tooltip("high:Q", title="95% CI high", format=".1%"),
        ],
    )
    bars = base.mark_errorbar().encode(y="low:Q", y2="high:Q")
    if not by_method:
        return _spec(alt.layer(bars, lines, data=_rows()).properties(height=300, width=720))
    panels = alt.layer(bars, lines).properties(height=220, width=170)
    return _spec(panels.facet(alt.Facet("method:N", title=None, sort=list(METHODS)), columns=5, data=_rows()))


def corpus_chart(table: pd.DataFrame) -> Figure:
    """Share of tokens that spike per layer, one line per word class, with 95% interval bars."""
    return Figure(_shares_spec(by_method=False), table)


def verdict_chart(verdict: pd.DataFrame) -> Figure:
    """The verdict: share of function and content tokens spiking per layer with 95% intervals, one panel per method."""
    return Figure(_shares_spec(by_method=True), verdict)


@lru_cache(maxsize=16)
def _comparison_spec(measure: str, relative: bool, n_models: int) -> dict:
    x = (
        alt.X("depth:Q", title="relative depth: layer / (layers - 1)", axis=alt.Axis(format=".0%"))
        if relative
        else alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d"))
    )
    chart = (
        alt.Chart(_rows())
        .mark_line(point=alt.OverlayMarkDef(size=10, filled=True))
        .encode(
            x=x,
            y=_measure_axis(measure, rank_title="rank of own embedding (log scale)"),
            color=alt.Color("model:N", title="model", scale=alt.Scale(range=PALETTE[:n_models])),
            strokeWidth=_STYLE["strokeWidth"],
            opacity=_STYLE["opacity"],
            detail=alt.Detail(["model:N", "position:N"]),
            tooltip=[alt.Tooltip("model:N", title="model"), *_TOOLTIP],
        )
    )
    if relative:
        return _spec(chart.properties(height=380, width=720))
    return _spec(chart.properties(height=320, width=340).facet(column=alt.Column("model:N", title=None)))


def comparison_chart(
    results: list[AnalysisResult],
    measure: str,
    highlight: list[int],
    relative: bool,
    names: list[str] | None = None,
) -> Figure:
    """Cosine or rank trajectories of several results: overlaid on relative depth (layer / (layers - 1)), or side
    by side on absolute layers. Highlighted positions bold, the rest faint; one colour per result, named by
    `names` (default: `1: model`, `2: model`, …)."""
    names = names or [f"{index + 1}: {result.model}" for index, result in enumerate(results)]
    frames = []
    for name, result in zip(names, results, strict=True):
        n_layers = int(result.metrics["layer"].max()) + 1
        frame = _styled(result.metrics, highlight, _TRAJECTORY_COLUMNS, faint_alpha=0.15)
        frames.append(frame.assign(model=name, depth=frame["layer"] / max(n_layers - 1, 1)))
    return Figure(_comparison_spec(measure, relative, len(results)), pd.concat(frames, ignore_index=True))

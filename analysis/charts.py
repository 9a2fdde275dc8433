"""Charts and tables of an AnalysisResult or a LensResult, shared by the app and scripts (no Streamlit here).

Every chart is a `Figure`: a Vega-Lite spec that depends only on the chart's shape (built with Altair and
validated once, then cached) and the rows it draws, whose style columns carry the highlighting. A highlight
therefore changes only the rows and the key of the highlighted tokens' colours (filled into a copy of the spec
when it is drawn), and redrawing costs no Altair building or schema validation.

Every chart can be read without its caption: lines coloured by word class have a legend, highlighted tokens
are keyed in a legend and labelled at their last point (labels that would overlap are spread apart), the
anisotropy baseline is in the legend as a dashed line, and axis titles say which geometry they measure in.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import altair as alt
import numpy as np
import pandas as pd
import vl_convert

from analysis.definitions import METHODS
from analysis.report.lens import LensResult
from analysis.report.reports import model_labels, token_label
from analysis.report.result import AnalysisResult

PICK = "pick"
"""Name of the click selection on trajectory charts: its value is the clicked token's `position`."""

DATA = "rows"
"""Name of the dataset every figure's spec draws from."""

FAINT = "#b8bec6"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
HIGHLIGHT_KEY = "__highlighted tokens__"
"""Placeholder of the highlighted tokens' colour scale in a cached spec; `Figure` fills in their labels."""
LABEL_GAP = 0.075
"""Least distance between two end labels, as a share of the data's range on the y axis (a line of text and a
little air on the app's charts)."""
EXPORT_PADDING = {"left": 12, "right": 12, "top": 12, "bottom": 12}

_TOKEN_TOOLTIP = [
    alt.Tooltip("label:N", title="token"),
    alt.Tooltip("position:Q", title="position"),
    alt.Tooltip("layer:Q", title="layer"),
]
_VOCABULARY_TOOLTIP = [
    alt.Tooltip("cosine:Q", title="cosine", format=".4f"),
    alt.Tooltip("rank:Q", title="rank", format=","),
]
_LENS_TOOLTIP = [
    alt.Tooltip("target:N", title="lens target"),
    alt.Tooltip("lens_prob:Q", title="target probability", format=".2%"),
    alt.Tooltip("lens_rank:Q", title="lens rank", format=","),
    alt.Tooltip("entropy:Q", title="entropy (nats)", format=".3f"),
    alt.Tooltip("kl_final:Q", title="KL(final || layer) (nats)", format=".3f"),
]
LENS_MEASURES = {
    "lens_rank": "lens rank of the target (1 = top prediction, log scale)",
    "lens_prob": "lens probability of the target",
    "entropy": "entropy of the lens prediction (nats)",
    "kl_final": "KL(final || layer) of the lens prediction (nats)",
}
"""What a trajectory chart can draw from `LensResult.metrics`, each with its axis title."""
RANK_MEASURES = ("rank", "lens_rank")
"""Measures drawn on a reversed log axis, 1 at the top."""
_VL_VERSION = "_".join(alt.SCHEMA_VERSION.split(".")[:2])  # "v6.4.1" -> "v6_4", as vl-convert names it


@dataclass(frozen=True)
class Figure:
    """A chart: `spec`, a Vega-Lite spec whose data is the dataset `DATA`, `data`, the rows it draws, `key`, the
    labels and colours of its highlighted tokens, and `title`, the lines an exported image is headed with."""

    spec: dict
    data: pd.DataFrame
    key: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    title: tuple[str, ...] = field(default=())

    def titled(self, *lines: str) -> Figure:
        """The same chart, headed by `lines` (a title, then subtitles) when it is exported."""
        return replace(self, title=lines)

    def _full_spec(self) -> dict:
        spec = copy.deepcopy(self.spec)
        _fill_key(spec, *self.key)
        return spec

    def vega_lite(self) -> dict:
        """The whole spec with the rows attached as a data frame (what `st.vega_lite_chart(spec=...)` takes)."""
        return {**self._full_spec(), "datasets": {DATA: self.data}}

    def to_json(self) -> dict:
        """The whole spec with the rows inline as JSON records (missing values as null), titled for export."""
        spec = {**self._full_spec(), "datasets": {DATA: json.loads(self.data.to_json(orient="records"))}}
        spec["padding"] = EXPORT_PADDING
        if self.title:
            spec["title"] = {"text": self.title[0], "subtitle": list(self.title[1:]), "anchor": "start"}
        return spec

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


def _fill_key(node: object, labels: tuple[str, ...], colors: tuple[str, ...]) -> None:
    """Put the highlighted tokens' labels and colours into every colour scale that holds `HIGHLIGHT_KEY`."""
    if isinstance(node, dict):
        scale = node.get("scale")
        if isinstance(scale, dict) and scale.get("domain") == [HIGHLIGHT_KEY]:
            scale["domain"], scale["range"] = list(labels), list(colors) or [FAINT]
        for value in node.values():
            _fill_key(value, labels, colors)
    elif isinstance(node, list):
        for value in node:
            _fill_key(value, labels, colors)


def _spec(chart: alt.TopLevelMixin) -> dict:
    """Validate an Altair chart that draws from `DATA` and return its Vega-Lite dict (done once per shape)."""
    return chart.to_dict()


def _rows() -> alt.NamedData:
    return alt.NamedData(name=DATA)


def highlight_colors(highlight: list[int]) -> dict[int, str]:
    """Each highlighted position's colour, by its place among the highlighted positions in text order: the same
    whatever order they were picked in."""
    return {position: PALETTE[i % len(PALETTE)] for i, position in enumerate(sorted(set(highlight)))}


def _styled(frame: pd.DataFrame, highlight: list[int], columns: list[str], faint_alpha: float = 0.35) -> pd.DataFrame:
    """`frame[columns]` plus label, highlighted, colour, width and alpha: highlighted tokens coloured and bold, the
    rest faint. Only the columns a chart draws are kept, since every row is sent to the browser. Positions are a
    text's token positions (0 to n - 1), so each token's label and colour are looked up by position."""
    positions = frame["position"].to_numpy()
    seen, first = np.unique(positions, return_index=True)
    texts = frame["text"].to_numpy()[first]
    labels = np.empty(seen.max() + 1, dtype=object)
    labels[seen] = [token_label(p, t) for p, t in zip(seen.tolist(), texts, strict=True)]
    colors = np.full(len(labels), FAINT, dtype=object)
    for position, color in highlight_colors(highlight).items():
        if position < len(colors):
            colors[position] = color
    highlighted = colors[positions] != FAINT
    return frame[columns].assign(
        label=labels[positions],
        highlighted=highlighted,
        color=colors[positions],
        width=np.where(highlighted, 3.0, 1.0),
        alpha=np.where(highlighted, 1.0, faint_alpha),
    )


def _key(rows: pd.DataFrame, highlight: list[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The highlighted tokens' labels and colours in text order, from `_styled` rows."""
    positions, labels = rows["position"].to_numpy(), rows["label"].to_numpy()
    colors = highlight_colors(highlight)
    first = {p: np.flatnonzero(positions == p)[:1] for p in colors}
    present = [p for p in colors if len(first[p])]
    return tuple(labels[first[p][0]] for p in present), tuple(colors[p] for p in present)


GEOMETRY_TITLES = {
    "cosine": "cosine similarity to original embedding",
    "centered": "cosine to original embedding, after centering",
    "standardized": "cosine to original embedding, after standardizing",
    "no_rogue": "cosine to original embedding, rogue dimensions removed",
}
RANK_TITLES = {
    "cosine": "rank of own embedding (1 = nearest, log scale)",
    "centered": "rank of own embedding after centering (log scale)",
    "standardized": "rank of own embedding after standardizing (log scale)",
    "no_rogue": "rank of own embedding, rogue dimensions removed (log scale)",
}


def _measure_axis(measure: str, geometry: str = "cosine", field_name: str | None = None) -> alt.Y:
    """The y encoding of a chart of `measure` (cosine, rank or a lens measure), a vocabulary measure titled in
    its geometry (ranks: log scale, rank 1 on top)."""
    field_name = f"{field_name or measure}:Q"
    if measure in RANK_MEASURES:
        title = RANK_TITLES.get(geometry, RANK_TITLES["cosine"]) if measure == "rank" else LENS_MEASURES[measure]
        return alt.Y(
            field_name, title=title, scale=alt.Scale(type="log", reverse=True, domainMin=1), axis=alt.Axis(format="~s")
        )
    if measure in LENS_MEASURES:
        axis = alt.Axis(format=".0%") if measure == "lens_prob" else alt.Axis()
        return alt.Y(field_name, title=LENS_MEASURES[measure], scale=alt.Scale(zero=True), axis=axis)
    return alt.Y(
        field_name, title=GEOMETRY_TITLES.get(geometry, GEOMETRY_TITLES["cosine"]), scale=alt.Scale(zero=False)
    )


def _drawn(measure: str) -> tuple[list[str], list[alt.Tooltip]]:
    """The metric columns a trajectory of `measure` sends to the browser, and its tooltip."""
    if measure in LENS_MEASURES:
        return ["layer", "position", "target", *LENS_MEASURES], [*_TOKEN_TOOLTIP, *_LENS_TOOLTIP]
    return ["layer", "position", "cosine", "rank"], [*_TOKEN_TOOLTIP, *_VOCABULARY_TOOLTIP]


def spread_labels(values: np.ndarray, measure: str, low: float, high: float) -> np.ndarray:
    """Where to draw end labels for lines ending at `values` so that none overlaps another: each moved up or down
    as little as needed to keep LABEL_GAP of the axis between them. `low`/`high`: the axis's data range (rank:
    drawn on a reversed log axis, rank 1 on top)."""
    if len(values) == 0:
        return values
    values = np.asarray(values, dtype=float)
    if measure in RANK_MEASURES:
        top = max(np.log10(max(high, 1.0)), 1e-9)
        screen = 1 - np.log10(np.maximum(values, 1.0)) / top  # 1 = top of the chart
    else:
        span = max(high - low, 1e-9)
        screen = (values - low) / span
    order = np.argsort(-screen, kind="stable")
    placed = screen[order].copy()
    for i in range(1, len(placed)):  # top to bottom, each at least one gap below the one above
        placed[i] = min(placed[i], placed[i - 1] - LABEL_GAP)
    overflow = -min(placed[-1], 0.0)  # pushed below the bottom: move the whole stack up, as far as the top allows
    placed = placed + min(overflow, max(1 - placed[0], 0.0))
    result = np.empty_like(placed)
    result[order] = placed
    if measure in RANK_MEASURES:
        return 10 ** ((1 - result) * top)
    return low + result * (high - low)


def _end_labels(rows: pd.DataFrame, measure: str, line: list[str], panel: list[str]) -> pd.Series:
    """`label_y` for `_styled` rows: at the last point of each highlighted `line` (the columns naming one line),
    where its label goes, spread apart from the others of its `panel`; NaN elsewhere."""
    label_y = pd.Series(np.nan, index=rows.index)
    values = rows[measure].astype(float)
    low, high = float(values.min()), float(values.max())
    ends = rows[rows["highlighted"]]
    ends = ends[ends["layer"] == ends.groupby(line)["layer"].transform("max")]
    for _, shared in ends.groupby(panel) if panel else [((), ends)]:
        label_y[shared.index] = spread_labels(shared[measure].to_numpy(), measure, low, high)
    return label_y


WORD_CLASS_COLOURS = {"function": "#1f77b4", "content": "#2ca02c", "punctuation": "#ff7f0e", "special": "#9467bd"}
BASELINE = -1
"""The `position` of the anisotropy baseline's rows in a trajectory chart's data (no token has it)."""
BASELINE_LABEL = "anisotropy baseline"


@lru_cache(maxsize=64)
def _trajectory_spec(
    measure: str, n_layers: int, x_title: str, by_class: bool, keyed: bool, baseline: bool, geometry: str
) -> dict:
    pick = alt.selection_point(name=PICK, fields=["position"], on="click", clear="dblclick")
    x = alt.X(
        "layer:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d"), scale=alt.Scale(domain=[0, n_layers - 1])
    )
    y = _measure_axis(measure, geometry)
    tooltip = _drawn(measure)[1]
    if by_class:
        tooltip.insert(1, alt.Tooltip("word_class:N", title="word class"))
        faint_color = alt.Color(
            "word_class:N",
            title="word class",
            scale=alt.Scale(domain=list(WORD_CLASS_COLOURS), range=list(WORD_CLASS_COLOURS.values())),
            legend=alt.Legend(orient="top"),
        )
    else:
        faint_color = alt.value(FAINT)
    key = alt.Color(
        "label:N",
        title="highlighted tokens",
        scale=alt.Scale(domain=[HIGHLIGHT_KEY], range=[FAINT]),
        legend=alt.Legend(orient="top") if keyed else None,
    )
    width = alt.StrokeWidth("width:Q", scale=None)
    opacity = alt.Opacity("alpha:Q", scale=None)
    point = alt.OverlayMarkDef(size=18, filled=True)
    faint = (
        alt.Chart()
        .transform_filter((alt.datum.position >= 0) & ~alt.datum.highlighted)
        .mark_line(point=point)
        .encode(x=x, y=y, color=faint_color, strokeWidth=width, opacity=opacity, detail="position:N", tooltip=tooltip)
        .add_params(pick)
    )
    bold = (
        alt.Chart()
        .transform_filter(alt.datum.highlighted)
        .mark_line(point=point)
        .encode(x=x, y=y, color=key, strokeWidth=width, detail="position:N", tooltip=tooltip)
    )
    labels = (
        alt.Chart()
        .transform_filter(alt.datum.highlighted & (alt.datum.layer == n_layers - 1))
        .mark_text(align="left", dx=8, fontWeight="bold")
        .encode(x=x, y=_measure_axis(measure, geometry, "label_y"), text="label:N", color=key.legend(None))
    )
    layers = [faint, bold, labels]
    if baseline:
        layers.append(
            alt.Chart()
            .transform_filter(alt.datum.position == BASELINE)
            .mark_line(color="#444444", strokeWidth=2)
            .encode(
                x=x,
                y=y,
                strokeDash=alt.StrokeDash(
                    "label:N",
                    title=None,
                    scale=alt.Scale(domain=[BASELINE_LABEL], range=[[6, 4]]),
                    legend=alt.Legend(orient="top", symbolStrokeColor="#444444"),
                ),
                tooltip=[
                    alt.Tooltip("label:N", title="line"),
                    alt.Tooltip("layer:Q", title="layer"),
                    alt.Tooltip("cosine:Q", title="mean cosine of corpus token pairs", format=".4f"),
                ],
            )
        )
    # Right padding leaves room for the labels of highlighted tokens at the last layer.
    chart = (
        alt.layer(*layers, data=_rows())
        .resolve_scale(color="independent")
        .properties(height=420, width=680, padding={"right": 110})
    )
    return _spec(chart)


def trajectory_chart(
    metrics: pd.DataFrame,
    measure: str,
    highlight: list[int],
    x_title: str = "layer (block index l)",
    *,
    classes: pd.Series | None = None,
    baseline: np.ndarray | None = None,
    geometry: str = "cosine",
) -> Figure:
    """One line per token over layers from `AnalysisResult.metrics` or the exported metrics.csv (`measure`
    "cosine" or "rank", its axis titled in the `geometry` it was scored in), or from `LensResult.metrics` or
    lens.csv (a `LENS_MEASURES` key). Ranks are drawn on a log scale, rank 1 at the top; a position with no lens
    target (a decoder's last, predicting the next token) has no line.

    Highlighted tokens are coloured, bold, keyed in a legend and labelled at their last point; the rest are
    faint. With nothing highlighted and `classes` (word class per position) given, lines are coloured by word
    class with a legend. `baseline` `[layers]` (cosine only): the anisotropy baseline as a dashed line, in the
    legend. Clicking a line selects its `position` through the `PICK` selection.
    """
    n_layers = int(metrics["layer"].max()) + 1
    by_class = classes is not None and not highlight
    rows = _styled(metrics, highlight, _drawn(measure)[0])
    if by_class:
        rows = rows.assign(word_class=metrics["position"].map(classes).to_numpy(), alpha=0.7, width=1.5)
    with_baseline = baseline is not None and measure == "cosine"
    if with_baseline:
        line = pd.DataFrame(
            {
                "layer": np.arange(n_layers),
                "position": BASELINE,
                "cosine": np.asarray(baseline, dtype=float),
                "label": BASELINE_LABEL,
                "highlighted": False,
            }
        )
        rows = pd.concat([rows, line], ignore_index=True)
    rows["label_y"] = _end_labels(rows, measure, ["position"], [])
    spec = _trajectory_spec(measure, n_layers, x_title, by_class, bool(highlight), with_baseline, geometry)
    return Figure(spec, rows, _key(rows, highlight))


OVERLAP_AGAINST = {"previous": "previous layer (l-1)", "reference": "original neighbourhood"}


@lru_cache(maxsize=16)
def _overlap_spec(n: int) -> dict:
    x = alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d"))
    y = alt.Y("shared:Q", title=f"shared neighbours (of top {n})", scale=alt.Scale(domain=[0, n]))
    key = alt.Color("label:N", title="highlighted tokens", scale=alt.Scale(domain=[HIGHLIGHT_KEY], range=[FAINT]))
    tooltip = [
        alt.Tooltip("label:N", title="token"),
        alt.Tooltip("layer:Q", title="layer"),
        alt.Tooltip("against:N", title="overlap with"),
        alt.Tooltip("shared:Q", title=f"shared of top {n}"),
    ]
    point = alt.OverlayMarkDef(size=14, filled=True)
    faint = (
        alt.Chart()
        .transform_filter(~alt.datum.highlighted)
        .mark_line(point=point)
        .encode(
            x=x,
            y=y,
            color=alt.value(FAINT),
            opacity=alt.Opacity("alpha:Q", scale=None),
            detail="position:N",
            tooltip=tooltip,
        )
    )
    bold = (
        alt.Chart()
        .transform_filter(alt.datum.highlighted)
        .mark_line(point=point, strokeWidth=3)
        .encode(x=x, y=y, color=key, detail="position:N", tooltip=tooltip)
    )
    chart = (
        alt.layer(faint, bold)
        .properties(height=300, width=300)
        .facet(column=alt.Column("against:N", title=None, sort=list(OVERLAP_AGAINST.values())), data=_rows())
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
    """Neighbour overlap per layer: with the previous layer and with the token's original neighbourhood,
    highlighted tokens keyed in a legend. `rows`: `overlap_rows(result)` when the caller keeps it."""
    n = int(result.overlap["n"].iloc[0])
    rows = _styled(
        result.derived("overlap_rows", lambda: overlap_rows(result)) if rows is None else rows,
        highlight,
        ["layer", "position", "against", "shared"],
    )
    return Figure(_overlap_spec(n), rows, _key(rows, highlight))


def prediction_grid(result: LensResult, position: int, k: int) -> pd.DataFrame:
    """The lens's top-k predictions for one token: one row per prediction rank, one column per layer, each cell
    `piece (probability)`; the target is marked `▶piece◀`, and where it is outside the top k a last row gives its
    rank and probability."""
    top = result.top
    rows = top[(top["position"] == position) & (top["prediction_rank"] <= k)]  # layer-major, best first
    n_layers = int(result.metrics["layer"].max()) + 1
    pieces = rows["prediction"].to_numpy(dtype=object)
    marked = np.where(rows["is_target"].to_numpy(), "▶" + pieces + "◀", pieces)
    shares = [f"{p:.1%}" for p in rows["prob"]]
    cells = np.array([f"{piece} ({share})" for piece, share in zip(marked, shares, strict=True)], dtype=object)
    grid = pd.DataFrame(
        cells.reshape(n_layers, -1).T,
        columns=[f"layer {layer}" for layer in range(n_layers)],
        index=pd.Index([str(r) for r in range(1, len(rows) // n_layers + 1)]),
    )
    own = result.metrics[result.metrics["position"] == position]
    outside = [
        f"▶{target}◀ rank {rank:,} ({prob:.1%})" if rank is not pd.NA and rank > k else ""
        for target, rank, prob in zip(own["target"], own["lens_rank"], own["lens_prob"], strict=True)
    ]
    if any(outside):
        grid.loc["target"] = outside
    grid.index.name = "prediction rank"
    return grid


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
            y=alt.Y("share:Q", title="share of tokens that spike", axis=alt.Axis(format=".0%")),
            color=alt.Color(
                "shown:N",
                title=None,
                scale=alt.Scale(domain=["layer shown below", "other layers"], range=[PALETTE[1], FAINT]),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[
                alt.Tooltip("layer:O", title="layer"),
                alt.Tooltip("spikes:Q", title="tokens that spike"),
                alt.Tooltip("tokens:Q", title="tokens"),
                alt.Tooltip("share:Q", title="share of tokens that spike", format=".1%"),
            ],
        )
        .properties(height=220, width=720)
    )
    return _spec(chart)


def spike_chart(shares: pd.DataFrame, selected: int) -> Figure:
    """The share of tokens that spike per layer (`spike_shares`), the selected layer in colour."""
    shown = np.where(shares["layer"] == selected, "layer shown below", "other layers")
    return Figure(_spike_spec(), shares.assign(shown=shown, share=shares["share"].fillna(0)))


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
                legend=alt.Legend(orient="top"),
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


SHARE_TITLE = "share of tokens that spike"


@lru_cache(maxsize=16)
def _shares_spec(by_method: bool, classes: tuple[str, ...]) -> dict:
    base = alt.Chart().encode(
        x=alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color(
            "word_class:N",
            title="word class",
            scale=alt.Scale(domain=list(classes), range=[WORD_CLASS_COLOURS[c] for c in classes]),
            legend=alt.Legend(orient="top", symbolOpacity=1),
        ),
    )
    y_axis = alt.Axis(format="%")
    lines = base.mark_line(point=True).encode(
        y=alt.Y("share:Q", title=SHARE_TITLE, axis=y_axis),
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
    bands = base.mark_area(opacity=0.18).encode(y=alt.Y("low:Q", title=SHARE_TITLE, axis=y_axis), y2="high:Q")
    if not by_method:
        return _spec(alt.layer(bands, lines, data=_rows()).properties(height=300, width=680))
    panels = alt.layer(bands, lines).properties(height=190, width=200)
    facet = alt.Facet("method:N", title=None, sort=list(METHODS))
    return _spec(panels.facet(facet, columns=3, data=_rows()))


def _classes_in(table: pd.DataFrame) -> tuple[str, ...]:
    present = set(table["word_class"])
    return tuple(name for name in WORD_CLASS_COLOURS if name in present)


def corpus_chart(table: pd.DataFrame) -> Figure:
    """Share of tokens that spike per layer, one line per word class, with its 95% interval as a band."""
    return Figure(_shares_spec(False, _classes_in(table)), table)


def verdict_chart(verdict: pd.DataFrame) -> Figure:
    """The verdict: share of function and content tokens spiking per layer with 95% intervals as bands, one panel
    per method, three panels to a row."""
    return Figure(_shares_spec(True, _classes_in(verdict)), verdict)


@lru_cache(maxsize=32)
def _comparison_spec(measure: str, relative: bool, n_models: int, geometry: str) -> dict:
    x = (
        alt.X("depth:Q", title="relative depth: layer / (layers - 1)", axis=alt.Axis(format=".0%"))
        if relative
        else alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d"))
    )
    color = alt.Color(
        "model:N", title="model", scale=alt.Scale(range=PALETTE[:n_models]), legend=alt.Legend(orient="top")
    )
    tooltip = [alt.Tooltip("model_name:N", title="model"), *_drawn(measure)[1]]
    lines = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=10, filled=True))
        .encode(
            x=x,
            y=_measure_axis(measure, geometry),
            color=color,
            strokeWidth=alt.StrokeWidth("width:Q", scale=None),
            opacity=alt.Opacity("alpha:Q", scale=None),
            detail=alt.Detail(["model:N", "position:N"]),
            tooltip=tooltip,
        )
    )
    labels = (
        alt.Chart()
        .transform_filter("isValid(datum.label_y)")
        .mark_text(align="left", dx=6, fontWeight="bold")
        .encode(x=x, y=_measure_axis(measure, geometry, "label_y"), text="label:N", color=color)
    )
    if relative:
        return _spec(alt.layer(lines, labels, data=_rows()).properties(height=380, width=680, padding={"right": 110}))
    panels = alt.layer(lines, labels).properties(height=320, width=300)
    return _spec(panels.facet(column=alt.Column("model:N", title=None), data=_rows()).properties(padding={"right": 90}))


def comparison_chart(
    results: list[AnalysisResult] | list[LensResult],
    measure: str,
    highlight: list[int],
    relative: bool,
    names: list[str] | None = None,
) -> Figure:
    """Trajectories of several results: cosine or rank of analyses, or a `LENS_MEASURES` key of lenses; overlaid
    on relative depth (layer / (layers - 1)), or side by side on absolute layers, in the order given.
    Highlighted positions bold and labelled at their last point, the rest faint; one colour per result, named by
    `names` (default: `model_labels`, `1: roberta-base`, …; the full name is in the tooltip)."""
    names = names or model_labels([result.model for result in results])
    frames = []
    for name, result in zip(names, results, strict=True):
        n_layers = int(result.metrics["layer"].max()) + 1
        frame = _styled(result.metrics, highlight, _drawn(measure)[0], faint_alpha=0.15)
        frames.append(frame.assign(model=name, model_name=result.model, depth=frame["layer"] / max(n_layers - 1, 1)))
    rows = pd.concat(frames, ignore_index=True)
    rows["label_y"] = _end_labels(rows, measure, ["model", "position"], [] if relative else ["model"])
    geometry = results[-1].geometry if isinstance(results[-1], AnalysisResult) else "cosine"
    spec = _comparison_spec(measure, relative, len(results), geometry)
    spec = _ordered_facets(spec, names) if not relative else spec
    return Figure(spec, rows)


def _ordered_facets(spec: dict, names: list[str]) -> dict:
    """The side-by-side spec with its panels in the order of `names` (not alphabetical)."""
    ordered = copy.deepcopy(spec)
    ordered["facet"]["column"]["sort"] = list(names)
    return ordered

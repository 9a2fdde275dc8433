"""Charts and tables of an AnalysisResult or a LensResult, shared by the app and scripts (no Streamlit here).

Every chart is a `Figure`: a Vega-Lite spec that depends only on the chart's shape (built with Altair and
validated once, then cached) and the rows it draws, whose style columns carry the highlighting. A highlight
therefore changes only the rows and the key of the highlighted tokens' colours (filled into a copy of the spec
when it is drawn), and redrawing costs no Altair building or schema validation.

Every chart can be read without its caption: lines coloured by word class have a legend, highlighted tokens
are keyed in a legend and labelled at their last point (labels that would overlap are spread apart), the
anisotropy baseline is in the legend as a dashed line, and axis titles say which geometry they measure in.
What every chart may and may not say (symmetric diverging scales, natural colour ranges, log probabilities,
colours by position) is in docs/design.md, section 9.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import vl_convert

from analysis.definitions import METHODS, PLAIN_READING
from analysis.report.lens import LensResult
from analysis.report.result import AnalysisResult
from analysis.scoring.geometry import geometry_spec
from analysis.tables import model_labels, token_label

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
MIN_HEIGHT = 240
"""The least height of a chart's plotting area in pixels (a heatmap of few rows, a bar chart): below it, shapes
and gaps are too small to read."""
ROW_STEP = 20
"""Pixels per row of a heatmap with more rows than MIN_HEIGHT holds at this step."""
PERCENT = ".3~p"
"""Vega's format for shares and probabilities: a percentage to three significant digits, so ticks and tooltips
of small values stay apart (0.05%, 0.1%) instead of all reading 0%."""

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
    alt.Tooltip("lens_prob:Q", title="target probability", format=PERCENT),
    alt.Tooltip("lens_rank:Q", title="lens rank", format=","),
    alt.Tooltip("entropy:Q", title="entropy (nats)", format=".3f"),
    alt.Tooltip("kl_final:Q", title="KL(final || layer) (nats)", format=".3f"),
]
LENS_MEASURES = {
    "lens_rank": "lens rank of the target (1 = top prediction, log scale)",
    "lens_prob": "lens probability of the target (log scale)",
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

    def to_bytes(self, fmt: str) -> bytes:
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
    """Validate an Altair chart that draws from `DATA` and return its Vega-Lite dict (done once per shape). Its
    width fits the page and its height is the plot's own (`fit-x`; facets keep their panels' sizes): left to
    Streamlit, `fit` would make the height the whole chart's, squashing the plot under its axis labels; a
    concatenation, like a facet, keeps its panels' sizes."""
    spec = chart.to_dict()
    composed = "facet" in spec or "hconcat" in spec
    spec["autosize"] = {"type": "pad" if composed else "fit-x", "contains": "padding"}
    return spec


def _rows() -> alt.NamedData:
    return alt.NamedData(name=DATA)


def highlight_colors(highlight: list[int]) -> dict[int, str]:
    """Each highlighted position's colour, fixed by the position alone (the palette's colours in turn): the same
    whatever else is highlighted and whatever order it was picked in."""
    return {position: token_style(position)[0] for position in sorted(set(highlight))}


def token_style(position: int) -> tuple[str, str]:
    """A highlighted token's colour and dash, from its position alone: the palette's colours in turn, then the
    same colours dashed, then dotted, so tokens up to 3 x len(PALETTE) apart never look alike."""
    return PALETTE[position % len(PALETTE)], list(DASHES)[(position // len(PALETTE)) % len(DASHES)]


DASHES = {"solid": [1, 0], "dashed": [7, 3], "dotted": [2, 2]}
"""The stroke dashes of highlighted lines, by name (the `dash` column of styled rows)."""
_DASH = alt.StrokeDash("dash:N", scale=alt.Scale(domain=list(DASHES), range=list(DASHES.values())), legend=None)
WIDTHS = (7.0, 5.5, 4.0, 2.5)
"""Widths of highlighted lines in text order, widest first and drawn first: where lines coincide (rank 1 at the
last layers, say) each shows as a band around the next, so none hides another. Past the fourth, 2.5."""


def _styled(frame: pd.DataFrame, highlight: list[int], columns: list[str], faint_alpha: float = 0.35) -> pd.DataFrame:
    """`frame[columns]` plus label, highlighted, colour, dash, width and alpha: highlighted tokens coloured (by
    position, `token_style`) and bold, the rest faint. Highlighted rows come first, widest line first, since
    lines are drawn in the order their rows appear. Only the columns a chart draws are kept, since every row is
    sent to the browser. Positions are a text's token positions (0 to n - 1), so each token's label and style
    are looked up by position."""
    positions = frame["position"].to_numpy()
    seen, first = np.unique(positions, return_index=True)
    texts = frame["text"].to_numpy()[first]
    labels = np.empty(seen.max() + 1, dtype=object)
    labels[seen] = [token_label(p, t) for p, t in zip(seen.tolist(), texts, strict=True)]
    colors = np.full(len(labels), FAINT, dtype=object)
    dashes = np.full(len(labels), "solid", dtype=object)
    widths = np.full(len(labels), 1.0)
    drawn = [p for p in sorted(set(highlight)) if p < len(labels)]
    tiers = len(WIDTHS) - min(len(drawn), len(WIDTHS))  # two tokens: the two narrowest widths
    for tier, position in enumerate(drawn):
        colors[position], dashes[position] = token_style(position)
        widths[position] = WIDTHS[min(tiers + tier, len(WIDTHS) - 1)]
    highlighted = colors[positions] != FAINT
    styled = frame[columns].assign(
        label=labels[positions],
        highlighted=highlighted,
        color=colors[positions],
        dash=dashes[positions],
        width=widths[positions],
        alpha=np.where(highlighted, 1.0, faint_alpha),
    )
    order = np.lexsort((-styled["width"].to_numpy(), ~highlighted))  # highlighted first, widest first
    return styled.iloc[order].reset_index(drop=True)


def _key(rows: pd.DataFrame, highlight: list[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The highlighted tokens' labels and colours in text order, from `_styled` rows."""
    positions, labels = rows["position"].to_numpy(), rows["label"].to_numpy()
    colors = highlight_colors(highlight)
    first = {p: np.flatnonzero(positions == p)[:1] for p in colors}
    present = [p for p in colors if len(first[p])]
    return tuple(labels[first[p][0]] for p in present), tuple(colors[p] for p in present)


def _layer_x(n_layers: int, title: str = "layer (block index l)") -> alt.X:
    """The x encoding of layers 0..n_layers - 1: whole-number ticks only (every layer, or every k-th past 24)."""
    step = -(-n_layers // 24)
    return alt.X(
        "layer:Q",
        title=title,
        scale=alt.Scale(domain=[0, max(n_layers - 1, 1)]),
        # ".0f", not "d": the browser's Vega (Streamlit's) drops explicit tick values under "d".
        axis=alt.Axis(values=list(range(0, n_layers, step)), format=".0f"),
    )


def geometry_titles(geometry: str) -> tuple[str, str]:
    """The y axis titles of cosine and rank under `geometry`, in its spec's wording: "cosine to original embedding,
    after centering", "rank of own embedding, after centering (log scale)"."""
    wording = geometry_spec(geometry).wording
    if not wording:
        return "cosine similarity to original embedding", "rank of own embedding (1 = nearest, log scale)"
    return f"cosine to original embedding, {wording}", f"rank of own embedding, {wording} (log scale)"


PROBABILITY_FLOOR = 1e-12
"""The lowest probability a log probability axis reaches: below it (float32 underflow included) a point is drawn
at the axis's floor, and the axis title says so."""


def probability_floor(values: pd.Series) -> tuple[float, bool]:
    """The bottom of a log probability axis for `values`: the decade at or below the smallest positive value, at
    least PROBABILITY_FLOOR; and whether any value lies below it (drawn at the floor)."""
    values = values.dropna().astype(float)
    positive = values[values > 0]
    smallest = float(positive.min()) if len(positive) else 1.0
    floor = max(10.0 ** np.floor(np.log10(smallest)), PROBABILITY_FLOOR)
    return floor, bool((values < floor).any())


def axis_extent(measure: str, values: pd.Series) -> tuple[float, bool] | None:
    """The fixed end of a log axis of `measure` drawn over `values`: probabilities, their floor and whether any
    value lies below it (`probability_floor`); ranks, the decade at or above the largest rank, at least 10, so a
    text whose ranks are all 1 still has an axis that reads 1, 10 (not 1.00000000006, 1.00000000008, …).
    None for linear axes."""
    if measure == "lens_prob":
        return probability_floor(values)
    if measure in RANK_MEASURES:
        return rank_ceiling(values), False
    return None


def rank_ceiling(values: pd.Series) -> float:
    """The bottom of a log rank axis over `values`: the decade at or above the largest rank, at least 10."""
    largest = float(values.dropna().max()) if values.notna().any() else 1.0
    return float(10.0 ** max(np.ceil(np.log10(max(largest, 1.0))), 1.0))


def _measure_axis(
    measure: str, geometry: str = "cosine", field_name: str | None = None, extent: tuple[float, bool] | None = None
) -> alt.Y:
    """The y encoding of a chart of `measure` (cosine, rank or a lens measure), a vocabulary measure titled in
    its geometry. Ranks: log scale from 1 (on top) to the decade of `extent` (`axis_extent`). Probabilities: log
    scale from `extent`'s floor to 1, labelled with significant digits, so the smallest read as well as the
    largest."""
    field_name = f"{field_name or measure}:Q"
    if measure in RANK_MEASURES:
        title = geometry_titles(geometry)[1] if measure == "rank" else LENS_MEASURES[measure]
        top = (extent or (10.0, False))[0]
        scale = alt.Scale(type="log", reverse=True, domain=[1, top])
        return alt.Y(field_name, title=title, scale=scale, axis=alt.Axis(format="~s"))
    if measure == "lens_prob":
        bottom, clipped = extent or (PROBABILITY_FLOOR, False)
        title = LENS_MEASURES[measure] + (f"; below {bottom:.0e} drawn at {bottom:.0e}" if clipped else "")
        scale = alt.Scale(type="log", domain=[bottom, 1.0], clamp=True)
        return alt.Y(field_name, title=title, scale=scale, axis=alt.Axis(format=".2~p"))
    if measure in LENS_MEASURES:
        return alt.Y(field_name, title=LENS_MEASURES[measure], scale=alt.Scale(zero=True))
    return alt.Y(field_name, title=geometry_titles(geometry)[0], scale=alt.Scale(zero=False))


def _drawn(measure: str) -> tuple[list[str], list[alt.Tooltip]]:
    """The metric columns a trajectory of `measure` sends to the browser, and its tooltip."""
    if measure in LENS_MEASURES:
        return ["layer", "position", "target", *LENS_MEASURES], [*_TOKEN_TOOLTIP, *_LENS_TOOLTIP]
    return ["layer", "position", "cosine", "rank"], [*_TOKEN_TOOLTIP, *_VOCABULARY_TOOLTIP]


def spread_labels(values: np.ndarray, measure: str, low: float, high: float) -> np.ndarray:
    """Where to draw end labels for lines ending at `values` so that none overlaps another: each moved up or down
    as little as needed to keep LABEL_GAP of the axis between them. `low`/`high`: the axis's data range (ranks:
    a reversed log axis, rank 1 on top; lens probabilities: a log axis; anything else: linear)."""
    if len(values) == 0:
        return values
    values = np.asarray(values, dtype=float)
    if measure in RANK_MEASURES:  # log10 of the rank, flipped so that 1 is the top
        low, high = 0.0, max(np.log10(max(high, 1.0)), 1e-9)
        screen = 1 - np.log10(np.maximum(values, 1.0)) / high
        return 10 ** ((1 - _spread(screen)) * high)
    if measure == "lens_prob":
        low, high = (float(np.log10(max(bound, PROBABILITY_FLOOR))) for bound in (low, high))
        values = np.log10(np.maximum(values, PROBABILITY_FLOOR))
        span = max(high - low, 1e-9)
        return 10 ** (low + _spread((values - low) / span) * span)
    span = max(high - low, 1e-9)
    return low + _spread((values - low) / span) * span


def _spread(screen: np.ndarray) -> np.ndarray:
    """Heights on a 0 (bottom) to 1 (top) axis moved apart to LABEL_GAP, each as little as it can be."""
    order = np.argsort(-screen, kind="stable")
    placed = screen[order].copy()
    for i in range(1, len(placed)):  # top to bottom, each at least one gap below the one above
        placed[i] = min(placed[i], placed[i - 1] - LABEL_GAP)
    overflow = -min(placed[-1], 0.0)  # pushed below the bottom: move the whole stack up, as far as the top allows
    placed = placed + min(overflow, max(1 - placed[0], 0.0))
    result = np.empty_like(placed)
    result[order] = placed
    return result


def _end_labels(rows: pd.DataFrame, measure: str, line: list[str], panel: list[str]) -> pd.Series:
    """`label_y` for `_styled` rows: at the last point of each highlighted `line` (the columns naming one line),
    where its label goes, spread apart from the others of its `panel`; NaN elsewhere."""
    label_y = pd.Series(np.nan, index=rows.index)
    values = rows[measure].astype(float)
    low, high = float(values.min()), float(values.max())
    if measure == "lens_prob":  # the axis's own range: from its floor to 1
        low, high = probability_floor(values)[0], 1.0
    elif measure in RANK_MEASURES:  # from 1 to its decade
        low, high = 1.0, rank_ceiling(values)
    elif measure in LENS_MEASURES and measure not in RANK_MEASURES:  # axes that start at 0
        low = min(low, 0.0)
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
    measure: str,
    n_layers: int,
    x_title: str,
    by_class: bool,
    keyed: bool,
    baseline: bool,
    geometry: str,
    extent: tuple[float, bool] | None,
) -> dict:
    pick = alt.selection_point(name=PICK, fields=["position"], on="click", clear="dblclick")
    x = _layer_x(n_layers, x_title)
    y = _measure_axis(measure, geometry, extent=extent)
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
        .encode(x=x, y=y, color=key, strokeDash=_DASH, strokeWidth=width, detail="position:N", tooltip=tooltip)
    )
    labels = (
        alt.Chart()
        .transform_filter(alt.datum.highlighted & (alt.datum.layer == n_layers - 1))
        .mark_text(align="left", dx=8, fontWeight="bold")
        .encode(x=x, y=_measure_axis(measure, geometry, "label_y", extent), text="label:N", color=key.legend(None))
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
        .resolve_scale(color="independent", strokeDash="independent")
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
        rows = rows.assign(word_class=rows["position"].map(classes).to_numpy(), alpha=0.7, width=1.5)
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
    extent = axis_extent(measure, rows[measure])
    spec = _trajectory_spec(measure, n_layers, x_title, by_class, bool(highlight), with_baseline, geometry, extent)
    return Figure(spec, rows, _key(rows, highlight))


OVERLAP_AGAINST = {"previous": "previous layer (l-1)", "reference": "original neighbourhood"}


@lru_cache(maxsize=16)
def _overlap_spec(n: int, keyed: bool, n_layers: int) -> dict:
    x = _layer_x(n_layers)
    y = alt.Y("shared:Q", title=f"shared neighbours (of top {n})", scale=alt.Scale(domain=[0, n]))
    key = alt.Color(
        "label:N",
        title="highlighted tokens",
        scale=alt.Scale(domain=[HIGHLIGHT_KEY], range=[FAINT]),
        legend=alt.Legend(orient="top") if keyed else None,
    )
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
        .mark_line(point=point)
        .encode(
            x=x,
            y=y,
            color=key,
            strokeDash=_DASH,
            strokeWidth=alt.StrokeWidth("width:Q", scale=None),
            detail="position:N",
            tooltip=tooltip,
        )
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
    n_layers = int(result.metrics["layer"].max()) + 1
    return Figure(_overlap_spec(n, bool(highlight), n_layers), rows, _key(rows, highlight))


def percent(share: float) -> str:
    """A probability as a percentage to three significant digits: `12.3%`, `0.0451%`, `3.2e-07%`."""
    return f"{share * 100:.3g}%"


def prediction_grid(result: LensResult, position: int, k: int) -> pd.DataFrame:
    """The lens's top-k predictions for one token: one row per prediction rank, one column per layer, each cell
    `piece (probability)`; the target is marked `▶piece◀`, and where it is outside the top k a last row gives its
    rank and probability."""
    top = result.top
    rows = top[(top["position"] == position) & (top["prediction_rank"] <= k)]  # layer-major, best first
    n_layers = int(result.metrics["layer"].max()) + 1
    pieces = rows["prediction"].to_numpy(dtype=object)
    marked = np.where(rows["is_target"].to_numpy(), "▶" + pieces + "◀", pieces)
    shares = [percent(p) for p in rows["prob"]]
    cells = np.array([f"{piece} ({share})" for piece, share in zip(marked, shares, strict=True)], dtype=object)
    grid = pd.DataFrame(
        cells.reshape(n_layers, -1).T,
        columns=[f"layer {layer}" for layer in range(n_layers)],
        index=pd.Index([str(r) for r in range(1, len(rows) // n_layers + 1)]),
    )
    own = result.metrics[result.metrics["position"] == position]
    outside = [
        f"▶{target}◀ rank {rank:,} ({percent(prob)})" if rank is not pd.NA and rank > k else ""
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
            y=alt.Y("share:Q", title="share of tokens that spike", axis=alt.Axis(format=PERCENT)),
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
                alt.Tooltip("share:Q", title="share of tokens that spike", format=PERCENT),
            ],
        )
        .properties(height=MIN_HEIGHT, width=720)
    )
    return _spec(chart)


def spike_chart(shares: pd.DataFrame, selected: int) -> Figure:
    """The share of tokens that spike per layer (`spike_shares`), the selected layer in colour."""
    shown = np.where(shares["layer"] == selected, "layer shown below", "other layers")
    return Figure(_spike_spec(), shares.assign(shown=shown, share=shares["share"].fillna(0)))


@lru_cache(maxsize=64)
def _heatmap_spec(
    x: str,
    y: str,
    value: str,
    titles: tuple[str, str, str],
    legend_title: str,
    x_order: tuple,
    y_order: tuple,
    domain: tuple[float, float],
    diverging: bool,
) -> dict:
    scheme = "redblue" if diverging else "blues"
    scale = alt.Scale(scheme=scheme, reverse=diverging, domain=list(domain))  # redblue reversed: red is positive
    x_title, y_title, value_title = titles
    chart = (
        alt.Chart(_rows())
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:N", title=x_title, sort=list(x_order), axis=alt.Axis(labelAngle=_label_angle(x_order))),
            y=alt.Y(f"{y}:N", title=y_title, sort=list(y_order)),
            color=alt.Color(
                f"{value}:Q",
                title=legend_title,
                scale=scale,
                legend=alt.Legend(orient="top", direction="horizontal", gradientLength=240, titleLimit=700),
            ),
            tooltip=[
                alt.Tooltip(f"{y}:N", title=y_title),
                alt.Tooltip(f"{x}:N", title=x_title),
                alt.Tooltip(f"{value}:Q", title=value_title, format=".4f"),
            ],
        )
        .properties(width=720, height=max(MIN_HEIGHT, ROW_STEP * len(y_order)))
    )
    return _spec(chart)


def _label_angle(labels: tuple) -> int:
    """Column labels upright where they fit side by side (layer numbers, a few groups), else turned."""
    return 0 if sum(len(str(label)) + 2 for label in labels) <= 90 else -90


def heatmap(
    frame: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    titles: tuple[str, str, str],
    *,
    bounds: tuple[float, float] | None = None,
) -> Figure:
    """A rect heatmap of `value` over `x` (columns, in frame order) and `y` (rows, in frame order). Its colour
    scale says no more than the numbers: with `bounds` (the quantity's natural range: (0, 1) for CKA or attention
    weights), a sequential blue scale over exactly that range; without, a diverging red-blue scale symmetric
    around 0 ([-m, m], m the largest |value|), so equal pushes either way look equally strong. The legend's title
    gives the range of the values drawn."""
    x_order, y_order = (tuple(dict.fromkeys(frame[column].tolist())) for column in (x, y))
    values = frame[value].astype(float)
    low, high = float(values.min()), float(values.max())
    if bounds is None:
        reach = max(abs(low), abs(high)) or 1.0
        domain, scale_note = (-reach, reach), f"scale ±{reach:.3g}, symmetric"
    else:
        domain, scale_note = (float(bounds[0]), float(bounds[1])), f"scale {bounds[0]:g} to {bounds[1]:g}"
    legend = f"{titles[2]} (here {low:.3g} to {high:.3g}; {scale_note})"
    return Figure(_heatmap_spec(x, y, value, titles, legend, x_order, y_order, domain, bounds is None), frame)


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
def _shares_spec(by_method: bool, classes: tuple[str, ...], n_layers: int) -> dict:
    base = alt.Chart().encode(
        x=_layer_x(n_layers),
        color=alt.Color(
            "word_class:N",
            title="word class",
            scale=alt.Scale(domain=list(classes), range=[WORD_CLASS_COLOURS[c] for c in classes]),
            legend=alt.Legend(orient="top", symbolOpacity=1),
        ),
    )
    y_axis = alt.Axis(format=PERCENT)
    lines = base.mark_line(point=True).encode(
        y=alt.Y("share:Q", title=SHARE_TITLE, axis=y_axis),
        tooltip=[
            *([alt.Tooltip("method:N", title="method")] if by_method else []),
            alt.Tooltip("word_class:N", title="word class"),
            alt.Tooltip("layer:Q", title="layer"),
            alt.Tooltip("spikes:Q", title="spiking tokens"),
            alt.Tooltip("tokens:Q", title="tokens"),
            alt.Tooltip("share:Q", title="share", format=PERCENT),
            alt.Tooltip("low:Q", title="95% CI low", format=PERCENT),
            alt.Tooltip("high:Q", title="95% CI high", format=PERCENT),
        ],
    )
    bands = base.mark_area(opacity=0.18).encode(y=alt.Y("low:Q", title=SHARE_TITLE, axis=y_axis), y2="high:Q")
    if not by_method:
        return _spec(alt.layer(bands, lines, data=_rows()).properties(height=300, width=680))
    panels = alt.layer(bands, lines).properties(height=190, width=200)
    facet = alt.Facet("method:N", title=None, sort=list(METHODS))
    # Each panel its own x axis: a shared one would be drawn under the grid's empty sixth cell.
    return _spec(panels.facet(facet, columns=3, data=_rows()).resolve_axis(x="independent"))


def _classes_in(table: pd.DataFrame) -> tuple[str, ...]:
    present = set(table["word_class"])
    return tuple(name for name in WORD_CLASS_COLOURS if name in present)


def corpus_chart(table: pd.DataFrame) -> Figure:
    """Share of tokens that spike per layer, one line per word class, with its 95% interval as a band."""
    return Figure(_shares_spec(False, _classes_in(table), int(table["layer"].max()) + 1), table)


def verdict_chart(verdict: pd.DataFrame) -> Figure:
    """The verdict: share of function and content tokens spiking per layer with 95% intervals as bands, one panel
    per method, three panels to a row."""
    return Figure(_shares_spec(True, _classes_in(verdict), int(verdict["layer"].max()) + 1), verdict)


@lru_cache(maxsize=32)
def _comparison_spec(
    measure: str, relative: bool, n_models: int, geometry: str, extent: tuple[float, bool] | None, n_layers: int
) -> dict:
    x = (
        alt.X("depth:Q", title="relative depth: layer / (layers - 1)", axis=alt.Axis(format=PERCENT))
        if relative
        else _layer_x(n_layers)
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
            y=_measure_axis(measure, geometry, extent=extent),
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
        .encode(x=x, y=_measure_axis(measure, geometry, "label_y", extent), text="label:N", color=color)
    )
    if relative:
        return _spec(alt.layer(lines, labels, data=_rows()).properties(height=380, width=680, padding={"right": 110}))
    panels = alt.layer(lines, labels).properties(height=320, width=300)
    return _spec(panels.facet(column=alt.Column("model:N", title=None), data=_rows()).properties(padding={"right": 90}))


def comparison_chart(
    results: Sequence[AnalysisResult | LensResult],
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
    geometry = results[-1].settings.geometry if isinstance(results[-1], AnalysisResult) else "cosine"
    n_layers = int(rows["layer"].max()) + 1
    spec = _comparison_spec(measure, relative, len(results), geometry, axis_extent(measure, rows[measure]), n_layers)
    spec = _ordered_facets(spec, names) if not relative else spec
    return Figure(spec, rows)


def _ordered_facets(spec: dict, names: list[str]) -> dict:
    """The side-by-side spec with its panels in the order of `names` (not alphabetical)."""
    ordered = copy.deepcopy(spec)
    ordered["facet"]["column"]["sort"] = list(names)
    return ordered


FITTED_SCORES = {
    "r2": "r² in hidden space (1: exact)",
    "kl_final": "KL(final || lens), nats",
    "top1_agreement": "top-1 = the model's own",
}
"""The held-out scores a fit's chart draws, each with its axis title (`analysis.fitted.scores.SCORE_COLUMNS`)."""
LENS_READING_COLOURS = {PLAIN_READING: "#7f7f7f", "linear": "#1f77b4", "tuned": "#d62728"}
LENS_READING_WIDTHS = {PLAIN_READING: 2.0, "linear": 5.0, "tuned": 2.0}
"""The linear lens's line is drawn wide beneath the others: where the tuned lens kept its linear start, the two
coincide and show as a red line on a blue band, not as one line."""


@lru_cache(maxsize=16)
def _fitted_scores_spec(scores: tuple[str, ...], readings: tuple[str, ...], r2_floor: float, n_layers: int) -> dict:
    colour = alt.Color(
        "lens:N",
        title="lens",
        scale=alt.Scale(domain=list(readings), range=[LENS_READING_COLOURS[name] for name in readings]),
        legend=alt.Legend(orient="top"),
    )
    domains = {"r2": [r2_floor, 1.0], "top1_agreement": [0.0, 1.0]}
    panels = []
    for score in scores:
        axis = alt.Axis(format=PERCENT) if score == "top1_agreement" else alt.Axis()
        scale = alt.Scale(domain=domains[score]) if score in domains else alt.Scale(zero=True)
        panels.append(
            alt.Chart()
            .transform_filter(alt.datum.score == score)
            .mark_line(point=True)
            .encode(
                x=_layer_x(n_layers),
                y=alt.Y("value:Q", title=FITTED_SCORES[score], scale=scale, axis=axis),
                color=colour,
                strokeWidth=alt.StrokeWidth("width:Q", scale=None),
                order=alt.Order("width:Q", sort="descending"),
                tooltip=[
                    alt.Tooltip("lens:N", title="lens"),
                    alt.Tooltip("layer:Q", title="layer"),
                    alt.Tooltip("value:Q", title=score, format=".4g"),
                    alt.Tooltip("tokens:Q", title="held-out tokens", format=","),
                ],
            )
            .properties(width=190, height=200)
        )
    return _spec(alt.hconcat(*panels, data=_rows()))


def fitted_scores_chart(scores: pd.DataFrame) -> Figure:
    """A fit's held-out scores (`FittedLens.scores`) per layer, one panel per score (r²; with a head, KL and top-1
    agreement), one line per lens. r² runs from 1 down to 0, or to the lowest value where one is below 0
    (the plain lens's early layers can be), so no line leaves its panel."""
    present = [score for score in FITTED_SCORES if scores[score].notna().any()]
    rows = scores.melt(id_vars=["lens", "layer", "tokens"], value_vars=present, var_name="score").dropna()
    rows["width"] = rows["lens"].map(LENS_READING_WIDTHS)
    readings = tuple(name for name in LENS_READING_COLOURS if name in set(scores["lens"]))
    r2_floor = float(min(0.0, np.floor(scores["r2"].min() * 10) / 10))
    return Figure(_fitted_scores_spec(tuple(present), readings, r2_floor, int(scores["layer"].max()) + 1), rows)


NEVER = "never"
"""A token's commitment layer where it never commits, as the commitment chart's axis names it."""


COMMITMENT_TOKENS = 60
"""Up to this many tokens the commitment chart draws one row per token; past it, how many tokens of each word class
commit at each layer (a row per token would run to thousands of pixels)."""


@lru_cache(maxsize=16)
def _commitment_spec(n_layers: int, n_tokens: int, classes: tuple[str, ...], counted: bool) -> dict:
    columns = [str(layer) for layer in range(n_layers)] + [NEVER]
    x = alt.X("commit:O", title="commits at layer (top-1 = the model's own from there on)",
              scale=alt.Scale(domain=columns), axis=alt.Axis(labelAngle=0))  # fmt: skip
    colour = alt.Color(
        "word_class:N",
        title="word class",
        scale=alt.Scale(domain=list(classes), range=[WORD_CLASS_COLOURS[c] for c in classes]),
        legend=alt.Legend(orient="top"),
    )
    if counted:
        bars = (
            alt.Chart(data=_rows())
            .mark_bar()
            .encode(
                x=x,
                y=alt.Y("count():Q", title=f"tokens (of {n_tokens:,})"),
                color=colour,
                tooltip=[
                    alt.Tooltip("commit:N", title="commits at layer"),
                    alt.Tooltip("word_class:N"),
                    alt.Tooltip("count():Q", title="tokens"),
                ],
            )
            .properties(width=560, height=MIN_HEIGHT)
        )
        return _spec(bars)
    chart = (
        alt.Chart(data=_rows())
        .mark_point(filled=True, size=90)
        .encode(
            x=x,
            y=alt.Y("label:N", title=None, sort=alt.EncodingSortField("position")),
            color=colour,
            tooltip=[
                alt.Tooltip("label:N", title="token"),
                alt.Tooltip("commit:N", title="commits at layer"),
                alt.Tooltip("final_top:N", title="the model's own top-1"),
            ],
        )
        .properties(width=560, height=max(MIN_HEIGHT, ROW_STEP * n_tokens))
    )
    return _spec(chart)


def commitment_chart(result: LensResult, word_classes: Sequence[str]) -> Figure:
    """Where each token commits under the lens (its `commit_layer`) on a layer axis with a column of its own for
    tokens that never do, coloured by `word_classes` (one per row of `result.tokens`): one point per token, or past
    COMMITMENT_TOKENS tokens, how many of each word class commit at each layer."""
    rows = result.metrics[result.metrics["layer"] == 0]
    classes_by_position = dict(zip(result.tokens["position"], word_classes, strict=True))
    frame = pd.DataFrame(
        {
            "position": rows["position"].to_numpy(),
            "label": [token_label(p, t) for p, t in zip(rows["position"], rows["text"], strict=True)],
            "commit": [NEVER if pd.isna(c) else str(int(c)) for c in rows["commit_layer"]],
            "final_top": rows["final_top"].to_numpy(),
            "word_class": [classes_by_position[p] for p in rows["position"]],
        }
    )
    classes = _classes_in(frame)
    n_layers = int(result.metrics["layer"].max()) + 1
    return Figure(_commitment_spec(n_layers, len(frame), classes, len(frame) > COMMITMENT_TOKENS), frame)

"""Altair charts and tables of an AnalysisResult, shared by the app and scripts (no Streamlit here)."""

from __future__ import annotations

import io

import altair as alt
import pandas as pd

from analysis.analyze import AnalysisResult

PICK = "pick"
"""Name of the click selection on trajectory charts: its value is the clicked token's `position`."""

FAINT = "#b8bec6"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_TOOLTIP = [
    alt.Tooltip("label:N", title="token"),
    alt.Tooltip("position:Q", title="position"),
    alt.Tooltip("layer:Q", title="layer"),
    alt.Tooltip("cosine:Q", title="cosine", format=".4f"),
    alt.Tooltip("rank:Q", title="rank", format=","),
]
# Styles come from data columns (scale=None) rather than conditions: the same picture, built several times faster.
_STYLE = {
    "color": alt.Color("colour:N", scale=None, legend=None),
    "strokeWidth": alt.StrokeWidth("width:Q", scale=None),
    "opacity": alt.Opacity("alpha:Q", scale=None),
    "order": alt.Order("highlighted:N"),
    "detail": alt.Detail("position:N"),
}


def token_label(position: int, text: str) -> str:
    """How a token is named in legends and pickers: `3 · like` (position, then its text)."""
    return f"{position} · {text.strip() or repr(text)}"


def _styled(frame: pd.DataFrame, highlight: list[int]) -> pd.DataFrame:
    """Add label, highlighted, colour, width and alpha columns: highlighted tokens coloured and bold, the rest faint."""
    colours = {position: PALETTE[i % len(PALETTE)] for i, position in enumerate(highlight)}
    frame = frame.copy()
    frame["label"] = [token_label(p, t) for p, t in zip(frame["position"], frame["text"], strict=True)]
    frame["highlighted"] = frame["position"].isin(highlight)
    frame["colour"] = [colours.get(position, FAINT) for position in frame["position"]]
    frame["width"] = frame["highlighted"].map({True: 3.0, False: 1.0})
    frame["alpha"] = frame["highlighted"].map({True: 1.0, False: 0.35})
    return frame


def trajectory_chart(
    metrics: pd.DataFrame, measure: str, highlight: list[int], x_title: str = "layer (block index l)"
) -> alt.LayerChart:
    """One line per token over layers from `AnalysisResult.metrics` or the exported metrics.csv: `measure` is
    "cosine" or "rank" (log scale, rank 1 at the top).

    Highlighted tokens are coloured, bold and labelled at their last point; the rest are faint. Clicking a
    line selects its `position` through the `PICK` selection.
    """
    frame = _styled(metrics, highlight)
    n_layers = int(frame["layer"].max()) + 1
    pick = alt.selection_point(name=PICK, fields=["position"], on="click", clear="dblclick")
    if measure == "rank":
        y = alt.Y(
            "rank:Q",
            title="rank of own embedding (1 = nearest, log scale)",
            scale=alt.Scale(type="log", reverse=True, domainMin=1),
            axis=alt.Axis(format="~s"),
        )
    else:
        y = alt.Y("cosine:Q", title="cosine similarity to original embedding", scale=alt.Scale(zero=False))
    x = alt.X(
        "layer:Q", title=x_title, axis=alt.Axis(tickMinStep=1, format="d"), scale=alt.Scale(domain=[0, n_layers - 1])
    )
    lines = (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=18, filled=True))
        .encode(x=x, y=y, tooltip=_TOOLTIP, **_STYLE)
        .add_params(pick)
    )
    last = frame[(frame["layer"] == n_layers - 1) & frame["highlighted"]]
    labels = (
        alt.Chart(last)
        .mark_text(align="left", dx=6, fontWeight="bold")
        .encode(x=x, y=y, text="label:N", color=_STYLE["color"])
    )
    # Right padding leaves room for the labels of highlighted tokens at the last layer.
    return alt.layer(lines, labels).properties(height=420, width=720, padding={"right": 90})


def overlap_chart(result: AnalysisResult, highlight: list[int]) -> alt.FacetChart:
    """Neighbour overlap per layer: with the previous layer and with the token's original neighbourhood."""
    n = int(result.overlap["n"].iloc[0])
    previous, original = "previous layer (l-1)", "original neighbourhood"
    frame = result.overlap.merge(result.tokens[["position", "text"]], on="position")
    frame = frame.melt(
        id_vars=["layer", "position", "text"],
        value_vars=["previous", "reference"],
        var_name="against",
        value_name="shared",
    ).dropna(subset=["shared"])
    frame["against"] = frame["against"].map({"previous": previous, "reference": original})
    frame["shared"] = frame["shared"].astype(int)
    return (
        alt.Chart(_styled(frame, highlight))
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
        .facet(column=alt.Column("against:N", title=None, sort=[previous, original]))
    )


def neighbor_grid(result: AnalysisResult, position: int, k: int) -> pd.DataFrame:
    """Top-k neighbours of one token: one row per neighbour rank, one column per layer (`layer 0`, …).

    The own token is marked `▶piece◀`; where it is outside the top k, a last row gives its rank.
    """
    rows = result.neighbors[(result.neighbors["position"] == position) & (result.neighbors["neighbor_rank"] <= k)]
    cells = rows["neighbor"].where(~rows["is_own"], "▶" + rows["neighbor"] + "◀")
    grid = (
        rows.assign(cell=cells, column="layer " + rows["layer"].astype(str))
        .pivot(index="neighbor_rank", columns="column", values="cell")
        .reindex(columns=[f"layer {layer}" for layer in sorted(rows["layer"].unique())])
    )
    grid.index = grid.index.astype(str)
    grid.index.name = "neighbour rank"
    own = result.metrics[result.metrics["position"] == position].set_index("layer")
    outside = {
        f"layer {layer}": f"▶{row['token']}◀ rank {row['rank']:,}" if row["rank"] > k else ""
        for layer, row in own.iterrows()
    }
    if any(outside.values()):
        grid.loc["own token"] = pd.Series(outside)
    return grid


def chart_bytes(chart: alt.TopLevelMixin, fmt: str) -> bytes:
    """Render `chart` to "png" or "svg" bytes with vl-convert."""
    buffer = io.BytesIO() if fmt == "png" else io.StringIO()
    chart.save(buffer, format=fmt, **({"scale_factor": 2} if fmt == "png" else {}))
    value = buffer.getvalue()
    return value if isinstance(value, bytes) else value.encode()


def spike_chart(scores: pd.DataFrame, selected: int) -> alt.Chart:
    """Spike score per layer (share of tokens that spike), the selected layer in colour."""
    frame = scores.assign(selected=scores["layer"] == selected, score=scores["score"].fillna(0))
    return (
        alt.Chart(frame)
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


def heatmap(
    frame: pd.DataFrame, x: str, y: str, value: str, titles: tuple[str, str, str], diverging: bool
) -> alt.Chart:
    """A rect heatmap of `value` over `x` (columns, in frame order) and `y` (rows, in frame order)."""
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if diverging else alt.Scale(scheme="blues")
    x_title, y_title, value_title = titles
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:N", title=x_title, sort=list(dict.fromkeys(frame[x]))),
            y=alt.Y(f"{y}:N", title=y_title, sort=list(dict.fromkeys(frame[y]))),
            color=alt.Color(f"{value}:Q", title=value_title, scale=scale),
            tooltip=[
                alt.Tooltip(f"{y}:N", title=y_title),
                alt.Tooltip(f"{x}:N", title=x_title),
                alt.Tooltip(f"{value}:Q", title=value_title, format=".4f"),
            ],
        )
        .properties(width=720)
    )


def norms_chart(frame: pd.DataFrame) -> alt.Chart:
    """Per token: norm of the residual stream (block input) against the norm of the attention update.

    `frame`: label, residual, attention update (one row per token, in order)."""
    long = frame.melt(
        id_vars="label", value_vars=["residual", "attention update"], var_name="vector", value_name="norm"
    )
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("label:N", title="token", sort=list(frame["label"])),
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


def corpus_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Share of tokens that spike per layer, one line per word class, with 95% interval bars."""
    base = alt.Chart(table).encode(
        x=alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("word_class:N", title="word class"),
    )
    lines = base.mark_line(point=True).encode(
        y=alt.Y("share:Q", title="share of tokens that spike", axis=alt.Axis(format="%")),
        tooltip=[
            alt.Tooltip("word_class:N", title="word class"),
            alt.Tooltip("layer:Q", title="layer"),
            alt.Tooltip("spiking:Q", title="spiking tokens"),
            alt.Tooltip("tokens:Q", title="tokens"),
            alt.Tooltip("share:Q", title="share", format=".1%"),
            alt.Tooltip("ci_low:Q", title="95% CI low", format=".1%"),
            alt.Tooltip("ci_high:Q", title="95% CI high", format=".1%"),
        ],
    )
    bars = base.mark_errorbar().encode(y="ci_low:Q", y2="ci_high:Q")
    return alt.layer(bars, lines).properties(height=300, width=720)


def comparison_chart(results: list[AnalysisResult], measure: str, highlight: list[int], relative: bool) -> alt.Chart:
    """Cosine or rank trajectories of several models: overlaid on relative depth (layer / (layers - 1)), or side
    by side on absolute layers. Highlighted positions bold, the rest faint; one colour per model."""
    frames = []
    for index, result in enumerate(results):
        frame = _styled(result.metrics, highlight)
        n_layers = int(frame["layer"].max()) + 1
        frame["model"] = f"{index + 1}: {result.model}"
        frame["depth"] = frame["layer"] / max(n_layers - 1, 1)
        frame["alpha"] = frame["highlighted"].map({True: 1.0, False: 0.15})
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if measure == "rank":
        y = alt.Y("rank:Q", title="rank of own embedding (log scale)", scale=alt.Scale(type="log", reverse=True))
    else:
        y = alt.Y("cosine:Q", title="cosine similarity to original embedding", scale=alt.Scale(zero=False))
    x = (
        alt.X("depth:Q", title="relative depth: layer / (layers - 1)", axis=alt.Axis(format=".0%"))
        if relative
        else alt.X("layer:Q", title="layer (block index l)", axis=alt.Axis(tickMinStep=1, format="d"))
    )
    chart = (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=10, filled=True))
        .encode(
            x=x,
            y=y,
            color=alt.Color("model:N", title="model", scale=alt.Scale(range=PALETTE[: len(results)])),
            strokeWidth=_STYLE["strokeWidth"],
            opacity=_STYLE["opacity"],
            detail=alt.Detail(["model:N", "position:N"]),
            tooltip=[alt.Tooltip("model:N", title="model"), *_TOOLTIP],
        )
    )
    if relative:
        return chart.properties(height=380, width=720)
    return chart.properties(height=320, width=340).facet(column=alt.Column("model:N", title=None))

"""Ready-to-draw reports for the pages: pure functions from analysis results to frozen records of frames.
The pages lay these out and do no arithmetic of their own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.capture.heads import HeadAttribution, HeadDecomposition, attention_shares, outlier_dimensions
from analysis.report.compare import cka_matrix, model_summary
from analysis.report.lens import LensResult
from analysis.report.result import AnalysisResult
from analysis.scoring.geometry import Background
from analysis.spikes import token_spikes, top_spike_layer

MAX_FOLLOWED = 6
"""Highlighted tokens given their own column in the rogue-dimension table (more would not fit the page)."""


def token_labels(result: AnalysisResult) -> list[str]:
    """`position · text` for every token, in order."""
    return [token_label(p, t) for p, t in zip(result.tokens["position"], result.tokens["text"], strict=True)]


def opening_layer(metrics: pd.DataFrame) -> tuple[int, str | None]:
    """The layer the deep dive opens on: the top spike layer; when nothing spikes, the layer with the largest
    median change of rank from the layer before (at layer 0, from the own embedding's rank 1; ties go to the
    larger mean change, then the earlier layer), and why; where no rank changes at all, the first layer, and
    that no layer stands out."""
    spikes = token_spikes(metrics)
    if spikes["spike"].any():
        return top_spike_layer(metrics), None
    change = (spikes["rank"] - spikes["rank_before"]).abs().groupby(spikes["layer"]).agg(["median", "mean"])
    layer = int(change.sort_values(["median", "mean"], ascending=False, kind="stable").index[0])
    median, mean = change.at[layer, "median"], change.at[layer, "mean"]
    if mean == 0:
        return layer, (
            f"No token of this text changes rank at any layer: every token keeps the rank it has at the embedding "
            f"(at layer 0 as at the last), so no layer stands out; the page opened on layer {layer}, the first."
        )
    moves = (
        f"the typical token moves {median:,.0f} place{'' if median == 1 else 's'} (the median), {mean:,.1f} on average"
        if median >= 1
        else f"{mean:,.1f} places on average, though most tokens keep their rank"
    )
    return layer, (
        f"No token of this text spikes (no rank leaps tenfold and falls back), so the page opened on layer {layer}, "
        f"where ranks move most from the layer before: {moves}."
    )


@dataclass(frozen=True)
class LayerReport:
    """Everything the deep dive shows about one layer of one text."""

    layer: int
    leaps: pd.DataFrame  # which tokens leap: position, token, text, word class, ranks before, at and after
    leap_summary: str  # "3 of 16 tokens spike at layer 5: 2 function, 1 punctuation"
    attribution: pd.DataFrame  # part, token, change in cosine (heads, output bias, rescaling, total)
    sink_shares: pd.DataFrame  # head, keys (special / first token / punctuation / other), share
    norms: pd.DataFrame  # label, residual, attention update
    outliers: pd.DataFrame | None  # hidden dimensions carrying the change into the layer; None at layer 0


def layer_report(
    result: AnalysisResult,
    classes: pd.Series,
    parts: HeadDecomposition,
    attribution: HeadAttribution,
    lens: LensResult | None = None,
) -> LayerReport:
    """The deep dive's tables for the layer of `parts` (its per-head decomposition and attribution); with `lens`
    (read at the same stage), each token's lens rank, probability and top prediction at that layer beside its
    embedding ranks."""
    layer = parts.layer
    labels = token_labels(result)
    spikes = token_spikes(result.metrics)
    spikes = spikes[spikes["layer"] == layer].assign(word_class=spikes["position"].map(classes))
    last = layer == int(result.metrics["layer"].max())  # nothing follows the last layer
    columns = ["position", "token", "text", "word_class", "rank_before", "rank", *([] if last else ["rank_after"])]
    leaps = spikes[[*columns, "spike"]]
    if lens is not None:
        leaps = leaps.merge(lens_at_layer(lens, layer), on="position", how="left")
    leaps = leaps.sort_values(["word_class", "position"])
    leaps = leaps.rename(
        columns={
            "rank_before": f"rank at {'layer ' + str(layer - 1) if layer else 'the embedding'}",
            "rank": f"rank at layer {layer}",
            "rank_after": f"rank at layer {layer + 1}",
            "word_class": "word class",
        }
    )
    leapers = spikes[spikes["spike"]]
    counts = leapers["word_class"].value_counts()
    leap_summary = f"{len(leapers)} of {len(spikes)} tokens spike at layer {layer}" + (
        ": " + ", ".join(f"{n} {name}" for name, n in counts.items()) if len(leapers) else ""
    )
    rows = [(f"head {h}", attribution.per_head[h]) for h in range(len(attribution.per_head))]
    rows += [("output bias", attribution.bias), ("rescaling", attribution.rescaling), ("total", attribution.total)]
    attribution_frame = pd.DataFrame(
        {
            "part": np.repeat([part for part, _ in rows], len(labels)),
            "token": np.tile(labels, len(rows)),
            "change in cosine": np.concatenate([values for _, values in rows]).astype(float),
        }
    )
    groups = classes.where(classes.isin(["special", "punctuation"]), "other")
    if not result.tokens["special"].iat[0]:  # a decoder without a BOS token: its first token is the usual sink
        groups.iat[0] = "first token"
    shares = attention_shares(parts, groups).reset_index().melt(id_vars="head", var_name="keys", value_name="share")
    shares["head"] = "head " + shares["head"].astype(str)
    norms = pd.DataFrame(
        {
            "label": labels,
            "residual": np.linalg.norm(parts.residual, axis=-1),
            "attention update": np.linalg.norm(parts.attention_delta(), axis=-1),
        }
    )
    return LayerReport(
        layer=layer,
        leaps=leaps,
        leap_summary=leap_summary,
        attribution=attribution_frame,
        sink_shares=shares,
        norms=norms,
        outliers=outlier_dimensions(result.vectors, layer) if layer >= 1 else None,
    )


def fitted_summary(record: dict) -> str:
    """What a fitted lens's record says of its fit, in a sentence or two: kind, texts and tokens, the split, the
    ridge chosen, the tuned lens's budget, and its notes."""
    texts, tokens = record["texts"], record["tokens"]
    alphas = sorted({float(alpha) for alpha in record["ridge"]["alpha"]})
    source = texts.get("source", f"{texts['count']} texts")
    words = (
        f"The {record['kind']} lens of {record['model']} at {record['stage']}, fitted on {source}: "
        f"{tokens['fit'] + tokens['validation']:,} tokens fitted from {texts['fit_texts']} texts and "
        f"{texts['validation_texts']} more that first chose the ridge per layer (alpha "
        f"{', '.join(f'{alpha:g}' for alpha in alphas)} x the mean diagonal); {tokens['held_out']:,} held-out tokens "
        f"from {texts['held_out_texts']} texts never fitted on."
    )
    if tuned := record.get("tuned"):
        words += (
            f" Tuned from its {tuned['start']} start for {tuned['token_reads']:,} token reads ({tuned['steps']} "
            f"steps); kept step {tuned['kept_step']}, the one with the least validation KL (0: that start)."
        )
    return " ".join([words, *record.get("notes", [])])


def lens_at_layer(lens: LensResult, layer: int) -> pd.DataFrame:
    """Each token's lens at `layer`: position, the target's lens rank and probability, and the layer's top
    prediction, under column names that say so."""
    metrics = lens.metrics[lens.metrics["layer"] == layer]
    top = lens.top[(lens.top["layer"] == layer) & (lens.top["prediction_rank"] == 1)]
    return pd.DataFrame(
        {
            "position": metrics["position"].to_numpy(),
            f"lens rank at layer {layer} ({lens.target})": metrics["lens_rank"].to_numpy(),
            f"lens probability at layer {layer}": metrics["lens_prob"].to_numpy(),
            f"top prediction at layer {layer}": top.set_index("position")["prediction"]
            .reindex(metrics["position"])
            .to_numpy(),
            "commits at layer": metrics["commit_layer"].to_numpy(),
        }
    )


def attention_pattern(parts: HeadDecomposition, labels: list[str], head: int, max_tokens: int) -> pd.DataFrame:
    """Head `head`'s attention weights as query, key, attention rows, for the first `max_tokens` tokens."""
    shown = min(len(labels), max_tokens)
    return pd.DataFrame(
        {
            "query": np.repeat(labels[:shown], shown),
            "key": np.tile(labels[:shown], shown),
            "attention": parts.attention[head, :shown, :shown].reshape(-1),
        }
    )


def skipped_note(unreadable: list[int], listed: int = 20) -> str:
    """What a corpus check left out: `2 texts have no token the model reads and were skipped (texts 4, 9).`
    Texts are numbered from 1, as a person counts lines."""
    numbers = ", ".join(str(index + 1) for index in unreadable[:listed]) + (", …" if len(unreadable) > listed else "")
    texts = "1 text has" if len(unreadable) == 1 else f"{len(unreadable):,} texts have"
    which = "text" if len(unreadable) == 1 else "texts"
    return (
        f"{texts} no token the model reads (only spaces, control or zero-width characters) and "
        f"{'was' if len(unreadable) == 1 else 'were'} skipped ({which} {numbers})."
    )


def pattern_caption(n_tokens: int, head: int, layer: int, max_tokens: int) -> str:
    """What the attention pattern shows, and how many of the text's tokens when it is capped at `max_tokens`."""
    shown = min(n_tokens, max_tokens)
    capped = f" Showing the first {shown} of {n_tokens} tokens as queries and keys." if shown < n_tokens else ""
    return f"Attention weights of head {head} at layer {layer}, as the model computed them; rows sum to 1.{capped}"


def layernorm_table(before: AnalysisResult, after: AnalysisResult, layer: int) -> pd.DataFrame:
    """Cosine and rank at `layer` before (attn_residual) and after (attn_output) the attention LayerNorm."""
    pick = ["position", "token", "cosine", "rank"]
    return before.metrics.loc[before.metrics["layer"] == layer, pick].merge(
        after.metrics.loc[after.metrics["layer"] == layer, pick],
        on=["position", "token"],
        suffixes=(" before LayerNorm", " after LayerNorm"),
    )


def baseline_table(background: Background, result: AnalysisResult) -> pd.DataFrame:
    """Per layer: the anisotropy baseline (mean cosine of distinct corpus token pairs) beside the text's token
    cosines to their own references (median, and the share of tokens above the baseline)."""
    tokens = result.metrics[~result.metrics["special"]]
    above = tokens["cosine"].to_numpy() > background.vectors.anisotropy[tokens["layer"].to_numpy()]
    by_layer = tokens.assign(above=above).groupby("layer")
    return pd.DataFrame(
        {
            "layer": np.arange(len(background.vectors.anisotropy)),
            "anisotropy baseline": background.vectors.anisotropy,
            "median token cosine": by_layer["cosine"].median().to_numpy(),
            "share of tokens above the baseline": by_layer["above"].mean().to_numpy(),
        }
    )


def rogue_table(
    background: Background, result: AnalysisResult, layer: int, positions: list[int], top: int = 8
) -> pd.DataFrame:
    """The layer's `top` rogue dimensions: each one's share of the mean corpus cosine (anisotropy), and of the
    cosine of each token at `positions` with its own reference (v_i r_i / v . r; shares over all dimensions
    sum to 1)."""
    dims = background.vectors.rogue_order[layer, :top]
    contribution = background.vectors.rogue_contribution[layer, dims]
    table = pd.DataFrame(
        {"dimension": dims, "share of the mean corpus cosine": contribution / background.vectors.anisotropy[layer]}
    )
    labels = token_labels(result)
    for position in positions:
        v = result.vectors[layer, position].astype(np.float64)
        r = result.own_references[position].astype(np.float64)
        table[f"share of the cosine of {labels[position]}"] = v[dims] * r[dims] / (v @ r)
    return table


@dataclass(frozen=True)
class Comparison:
    """Base vs large for one text: a summary per model and the layer-to-layer CKA."""

    summary: pd.DataFrame  # one row per model
    same_tokens: bool  # whether both models read the text as the same token ids
    cka_cells: pd.DataFrame | None  # first model layer, second model layer, CKA
    best_match: pd.DataFrame | None  # each first-model layer's best-matching second-model layer
    cka_note: str | None  # why there is no CKA (too few shared words)


def short_name(model: str) -> str:
    """A model's name short enough for a legend or a column: a hub id's last part, a folder's own name."""
    return Path(model.rstrip("/")).name or model


def model_labels(models: list[str]) -> list[str]:
    """`1: roberta-base`, `2: roberta-large`: models numbered in order and named short (two picks of the same
    model stay apart)."""
    return [f"{index}: {short_name(model)}" for index, model in enumerate(models, start=1)]


def comparison_report(first: AnalysisResult, second: AnalysisResult, text: str) -> Comparison:
    """Summaries of both results and linear CKA between every pair of their layers over the words of `text`;
    models named by `model_labels`."""
    labels = model_labels([first.model, second.model])
    summary = pd.DataFrame(
        [model_summary(result, label) for result, label in zip((first, second), labels, strict=True)]
    )
    same = first.tokens["token_id"].equals(second.tokens["token_id"])
    try:
        cka = cka_matrix(first, second, text)
    except ValueError as error:
        return Comparison(summary, same, None, None, str(error))
    cells = cka.stack().rename("CKA").reset_index()
    cells.columns = ["first model layer", "second model layer", "CKA"]
    best = pd.DataFrame(
        {
            f"layer of {labels[0]}": cka.index,
            f"best match in {labels[1]}": cka.to_numpy().argmax(1),
            "CKA": cka.to_numpy().max(1),
        }
    )
    return Comparison(summary, same, cells, best, None)


def token_label(position: int, text: str) -> str:
    """How a token is named in legends and pickers: `3 · like` (position, then its text)."""
    return f"{position} · {text.strip() or repr(text)}"

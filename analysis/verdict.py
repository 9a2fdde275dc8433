"""Is the spike real? The share of function and content words that spike at each layer over the shipped
corpus, under the original demo's computation and under each geometry, with 95% Wilson intervals."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from analysis.capture import Stage
from analysis.corpus import classified_spikes, spike_shares
from analysis.encoder import EncoderModel
from analysis.geometry import GEOMETRIES, check_rogue_k
from analysis.original_demo import demo_unavailable, original_demo
from analysis.references import Reference, default_reference
from analysis.sentences import corpus_sentences
from analysis.trace import analyze

METHODS: dict[str, str] = {
    "original_demo": "the seed demo's computation, its four errors included",
    **{name: f"exact stage vectors, {meaning}" for name, meaning in GEOMETRIES.items()},
}
VERDICT_CLASSES = ("function", "content")
VERDICT_COLUMNS = {
    "method": "original_demo, or the geometry of the exact computation",
    "layer": "block index l (the last layer cannot spike: nothing follows it)",
    "word_class": "function or content words",
    "spikes": "tokens of that class spiking at that layer",
    "tokens": "tokens of that class",
    "share": "spikes / tokens",
    "low": "95% Wilson interval, low end",
    "high": "95% Wilson interval, high end",
    "top_layer": "the method's layer with the largest share of spiking function and content tokens together",
}


def spike_verdict(
    encoder: EncoderModel,
    *,
    stage: Stage = "attn_residual",
    reference: Reference | None = None,
    rogue_k: int = 3,
    sentences: list[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One row per (method, layer, word class) over `sentences` (default: the shipped corpus), in VERDICT_COLUMNS.

    Methods: the original demo (its own vector and raw references; only where it is defined, see
    `demo_unavailable`) and `analyze` under each geometry at `stage` and `reference` (None: as `analyze` chooses).
    `on_progress(done, total)` counts sentences.
    """
    rogue_k = check_rogue_k(rogue_k, encoder.hidden_size)
    reference = default_reference(encoder) if reference is None else reference
    sentences = corpus_sentences() if sentences is None else sentences
    with_demo = demo_unavailable(encoder) is None
    frames: dict[str, list[pd.DataFrame]] = {method: [] for method in verdict_methods(with_demo)}
    for done, sentence in enumerate(sentences, start=1):
        if with_demo:
            frames["original_demo"].append(classified_spikes(original_demo(encoder, sentence)))
        for geometry in GEOMETRIES:
            result = analyze(
                encoder, sentence, stage=stage, reference=reference, geometry=geometry, rogue_k=rogue_k, top_k=1,
                overlap_n=1,
            )  # fmt: skip
            frames[geometry].append(classified_spikes(result))
        if on_progress:
            on_progress(done, len(sentences))
    tables = []
    for method, method_frames in frames.items():
        table = spike_shares(method_frames)
        table = table[table["word_class"].isin(VERDICT_CLASSES)]
        tables.append(table.assign(method=method, top_layer=_top_layer(table)))
    verdict = pd.concat(tables, ignore_index=True)
    verdict["top_layer"] = verdict["top_layer"].astype("Int64")
    return verdict[list(VERDICT_COLUMNS)]


def verdict_methods(with_original_demo: bool) -> dict[str, str]:
    """The verdict's methods and what each means; the original demo only where its computation is defined."""
    return {method: meaning for method, meaning in METHODS.items() if with_original_demo or method != "original_demo"}


def _top_layer(table: pd.DataFrame) -> int | None:
    """The layer where the largest share of function and content tokens spike (earliest on ties); None if none do."""
    pooled = table.groupby("layer")[["spikes", "tokens"]].sum()
    share = pooled["spikes"] / pooled["tokens"]
    return int(share.idxmax()) if share.max() > 0 else None


def verdict_summary(verdict: pd.DataFrame) -> str:
    """A plain sentence computed from a verdict: where function words spike most under the original demo, and
    how many methods that layer tops for function words."""
    function = verdict[verdict["word_class"] == "function"]
    by_method = {method: rows.set_index("layer")["share"] for method, rows in function.groupby("method", sort=False)}
    demo = by_method.get("original_demo")
    if demo is None or demo.max() == 0:
        spiking = [method for method, shares in by_method.items() if shares.max() > 0]
        if not spiking:
            return "No method finds function words spiking at any layer of this corpus."
        opening = "The original demo finds no function-word spike; " if demo is not None else ""
        return (
            opening
            + ", ".join(f"{method} peaks at layer {int(by_method[method].idxmax())}" for method in spiking)
            + "."
        )
    layer = int(demo.idxmax())
    tops = [method for method, shares in by_method.items() if shares.max() > 0 and int(shares.idxmax()) == layer]
    exact = by_method.get("cosine")
    exact_part = (
        f" Under the exact computation (cosine), {exact.get(layer, 0):.1%} of function words spike there."
        if exact is not None
        else ""
    )
    return (
        f"Under the original demo, function words spike most at layer {layer} ({demo[layer]:.1%}); that layer is "
        f"the function-word peak in {len(tops)} of {len(by_method)} methods ({', '.join(tops)})." + exact_part
    )

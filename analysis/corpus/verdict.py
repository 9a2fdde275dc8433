"""Is the spike real? The share of function and content words that spike at each layer over the shipped
corpus, under the original demo's computation and under each geometry, with 95% Wilson intervals: the
counting engine's summary (`analysis.corpus`) over the shipped corpus for every method."""

from __future__ import annotations

import pandas as pd

from analysis.corpus.counts import corpus_counts, method_shares
from analysis.data import corpus_sentences
from analysis.definitions import METHODS, VERDICT_COLUMNS, Method, OnProgress
from analysis.model.capabilities import demo_unavailable
from analysis.model.loaded import LoadedModel
from analysis.settings import DEFAULTS, AnalysisSettings

VERDICT_CLASSES = ("function", "content")
SPIKE_FLOOR = 0.01
"""A method finds function words spiking at a layer when the low end of the 95% interval of their share there
is at least this (1%)."""


def verdict_methods(with_original_demo: bool) -> dict[Method, str]:
    """The verdict's methods and what each means; the original demo only where its computation is defined."""
    return {method: meaning for method, meaning in METHODS.items() if with_original_demo or method != "original_demo"}


def spike_verdict(
    lm: LoadedModel,
    settings: AnalysisSettings = DEFAULTS,
    *,
    sentences: list[str] | None = None,
    on_progress: OnProgress | None = None,
) -> pd.DataFrame:
    """One row per (method, layer, word class) over `sentences` (default: the shipped corpus), in VERDICT_COLUMNS.

    Methods: the original demo (only where it is defined, see `demo_unavailable`) and the exact computation under
    each geometry at the settings' stage, reference and rogue_k (their geometry plays no part), all from one
    forward pass per batch of sentences. `on_progress(done, total)` counts sentences.
    """
    sentences = corpus_sentences() if sentences is None else sentences
    settings = settings.sweeping(tuple(verdict_methods(demo_unavailable(lm) is None))).resolve(lm)
    counts = corpus_counts(lm, sentences, settings, on_progress=on_progress, classes=VERDICT_CLASSES)
    shares = method_shares(counts)
    tables = [rows.assign(top_layer=top_layer(rows)) for _, rows in shares.groupby("method", sort=False)]
    verdict = pd.concat(tables, ignore_index=True)
    verdict["top_layer"] = verdict["top_layer"].astype("Int64")
    return verdict[list(VERDICT_COLUMNS)]


def top_layer(table: pd.DataFrame) -> int | None:
    """The layer where the largest share of function and content tokens spike (earliest on ties); None if none do."""
    pooled = table.groupby("layer")[["spikes", "tokens"]].sum()
    share = pooled["spikes"] / pooled["tokens"]
    return int(share.idxmax()) if share.max() > 0 else None


def _share(rows: pd.DataFrame, layer: int) -> str:
    """A method's function-word share at `layer` with its interval: `31.0% (27.1-35.2%)`."""
    share, low, high = rows.loc[layer, ["share", "low", "high"]]
    return f"{share:.1%} ({low:.1%}-{high:.1%})"


def verdict_summary(verdict: pd.DataFrame) -> str:
    """The answer to "is the spike real?", computed from a verdict. The anchor is the original demo (or, without
    it, the exact cosine): at the layer where function words spike most under it, does the exact computation and
    does every geometry control still find them spiking? A method finds a spike where the low end of the 95%
    interval of the function-word share is at least SPIKE_FLOOR."""
    function = verdict[verdict["word_class"] == "function"]
    by_method = {method: rows.set_index("layer") for method, rows in function.groupby("method", sort=False)}
    peaks = {method: int(rows["share"].idxmax()) for method, rows in by_method.items()}
    spiking = [method for method, layer in peaks.items() if by_method[method].at[layer, "low"] >= SPIKE_FLOOR]
    anchor = "original_demo" if "original_demo" in by_method else "cosine"
    criterion = f"A method finds a spike where the low end of the interval is at least {SPIKE_FLOOR:.0%}."
    if anchor not in spiking:
        largest = "; ".join(f"{method} {_share(rows, peaks[method])} at layer {peaks[method]}"
                            for method, rows in by_method.items())  # fmt: skip
        if not spiking:
            return (
                f"No: no method finds function words spiking at any layer of this corpus. The largest shares, with "
                f"95% intervals: {largest}. {criterion}"
            )
        found = ", ".join(f"{method} (layer {peaks[method]})" for method in spiking)
        return f"No clear spike under {anchor}; only {found} finds function words spiking. {largest}. {criterion}"
    layer = peaks[anchor]
    exact = [method for method in by_method if method != "original_demo"]
    held = [method for method in exact if by_method[method].at[layer, "low"] >= SPIKE_FLOOR]
    if len(held) == len(exact):
        answer = "Yes: the spike survives the exact computation and every geometry control."
    elif not held:
        answer = "No: under the exact computation and every control, function words do not spike there."
    elif "cosine" in held:
        lost = ", ".join(method for method in exact if method not in held)
        answer = f"Partly: the exact computation keeps it, but it fades under {lost}."
    else:
        answer = f"Partly: only {', '.join(held)} finds it."
    origin = "the original demo" if anchor == "original_demo" else "the exact computation (cosine)"
    shares = "; ".join(f"{method} {_share(rows, layer)}" for method, rows in by_method.items())
    return (
        f"{answer} Function words spike most at layer {layer} under {origin}. Share of function words spiking at "
        f"layer {layer}, with 95% intervals: {shares}. {criterion}"
    )

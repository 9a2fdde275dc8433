"""Corpus check: does the layer spike happen regardless of the text? Shares of function and content tokens
that spike at each layer over a shipped set of varied English sentences, with 95% Wilson intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from analysis.capture import Stage
from analysis.encoder import EncoderModel
from analysis.references import Reference
from analysis.spikes import token_spikes
from analysis.trace import AnalysisResult, analyze
from analysis.wordclass import word_classes

_Z = 1.959963984540054  # 97.5th percentile of the standard normal


def wilson_interval(successes: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval for a binomial share; NaN where there are no trials."""
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = successes / trials
        centre = (share + _Z**2 / (2 * trials)) / (1 + _Z**2 / trials)
        half = _Z * np.sqrt(share * (1 - share) / trials + _Z**2 / (4 * trials**2)) / (1 + _Z**2 / trials)
    low = np.where(successes == 0, 0.0, centre - half)  # exact at the ends, where rounding would leave 1e-17
    high = np.where(successes == trials, 1.0, centre + half)
    return low, high


def classified_spikes(result: AnalysisResult) -> pd.DataFrame:
    """Per (layer, position) of one result: layer, word_class, spikes (whether the token spikes there)."""
    spikes = token_spikes(result.metrics)
    spikes["word_class"] = spikes["position"].map(word_classes(result.tokens))
    return spikes[["layer", "word_class", "spikes"]]


def spike_counts(frame: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per `by` columns (default none), layer and word class of a `classified_spikes`-like frame: spikes and
    tokens. Counts of several frames add up; `shares_from_counts` turns the sum into shares."""
    keys = [*(by or []), "layer", "word_class"]
    return frame.groupby(keys)["spikes"].agg(spikes="sum", tokens="size").reset_index()


def shares_from_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """`spike_counts` with the share and its 95% Wilson interval (low, high). The last layer is left out:
    nothing follows it, so nothing can spike."""
    table = counts[counts["layer"] < counts["layer"].max()].reset_index(drop=True)
    table["share"] = table["spikes"] / table["tokens"]
    table["low"], table["high"] = wilson_interval(table["spikes"], table["tokens"])
    return table


def spike_shares(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Pool `classified_spikes` frames: per layer and word class, spikes (tokens that spike), tokens, share and
    its 95% Wilson interval (low, high)."""
    return shares_from_counts(spike_counts(pd.concat(frames, ignore_index=True)))


def corpus_spikes(
    encoder: EncoderModel,
    sentences: list[str],
    *,
    stage: Stage = "attn_residual",
    reference: Reference = "position",
    on_progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Per layer and word class: tokens, spiking tokens, share and its 95% interval, over all `sentences`."""
    frames = []
    for done, sentence in enumerate(sentences, start=1):
        frames.append(
            classified_spikes(analyze(encoder, sentence, stage=stage, reference=reference, top_k=1, overlap_n=1))
        )
        if on_progress:
            on_progress(done, len(sentences))
    return spike_shares(frames)

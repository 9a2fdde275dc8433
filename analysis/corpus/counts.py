"""Spike shares over many texts: per method, layer and word class, the share of tokens that spike, with 95%
Wilson intervals. The corpus check, the verdict and the sweep's summary all count with the engine in
`analysis.corpus.engine` and summarise here."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.capture.tokens import tokenize_readable
from analysis.corpus.engine import batch_rows
from analysis.definitions import COMMIT_COLUMNS, METHODS, SUMMARY_COLUMNS, OnProgress
from analysis.model.loaded import LoadedModel
from analysis.settings import DEFAULTS, AnalysisSettings, SweepSettings

_Z = 1.959963984540054  # 97.5th percentile of the standard normal
INTERACTIVE_BATCH_TOKENS = 4096
"""Padded tokens per forward pass for the app's and the verdict's corpus runs: a progress bar that moves."""


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


def spike_counts(rows: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per `by` columns (default none), layer and word class of rows with a `spike` flag (`batch.ROW_COLUMNS`):
    spikes (how many spike) and tokens. Counts of several frames add up; `shares_from_counts` turns the sum
    into shares."""
    keys = [*(by or []), "layer", "word_class"]
    return rows.groupby(keys)["spike"].agg(spikes="sum", tokens="size").reset_index()


def shares_from_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """`spike_counts` with the share and its 95% Wilson interval (low, high). The last layer is left out:
    nothing follows it, so nothing can spike."""
    table = counts[counts["layer"] < counts["layer"].max()].reset_index(drop=True)
    table["share"] = table["spikes"] / table["tokens"]
    table["low"], table["high"] = wilson_interval(table["spikes"], table["tokens"])
    return table


def method_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """`spike_counts` by method (several texts' or shards' counts, summed) → SUMMARY_COLUMNS: per method (in the
    order of `METHODS`), layer and word class, the share that spike and its 95% Wilson interval."""
    if counts.empty:  # no text had a token the model reads: no shares, and an empty table that says so
        return pd.DataFrame({column: [] for column in SUMMARY_COLUMNS})
    summed = counts.groupby(["method", "layer", "word_class"])[["spikes", "tokens"]].sum().reset_index()
    by_method = dict(list(summed.groupby("method")))
    return pd.concat(
        [shares_from_counts(by_method[method]) for method in METHODS if method in by_method], ignore_index=True
    )[list(SUMMARY_COLUMNS)]


def commit_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Tokens per word class and commitment layer (`lens_commit_layer`; -1: never) of rows of one method and
    layer (one row per token). Counts of several frames add up; `commit_shares` turns the sum into shares."""
    commits = rows["lens_commit_layer"].fillna(-1).astype(np.int64)
    return (
        pd.DataFrame({"word_class": rows["word_class"].to_numpy(), "commit_layer": commits.to_numpy()})
        .groupby(["word_class", "commit_layer"])
        .size()
        .rename("tokens")
        .reset_index()
    )


def commit_shares(counts: pd.DataFrame, layers: int) -> pd.DataFrame:
    """`commit_counts` (summed over frames) → COMMIT_COLUMNS: per word class and layer, the share of tokens
    committed at that layer or before, with its 95% Wilson interval."""
    frames = []
    for word_class, found in counts.groupby("word_class"):
        per_layer = found.groupby("commit_layer")["tokens"].sum()
        committed = np.cumsum([int(per_layer.get(layer, 0)) for layer in range(layers)])
        tokens = np.full(layers, int(per_layer.sum()))
        frames.append(
            pd.DataFrame(
                {"word_class": word_class, "layer": np.arange(layers), "committed": committed, "tokens": tokens}
            )
        )
    if not frames:
        return pd.DataFrame({column: [] for column in COMMIT_COLUMNS})
    table = pd.concat(frames, ignore_index=True)
    table["share"] = table["committed"] / table["tokens"]
    table["low"], table["high"] = wilson_interval(table["committed"], table["tokens"])
    return table[list(COMMIT_COLUMNS)]


def corpus_counts(
    lm: LoadedModel,
    texts: list[str],
    settings: SweepSettings,
    *,
    batch_tokens: int = INTERACTIVE_BATCH_TOKENS,
    on_progress: OnProgress | None = None,
    classes: Collection[str] | None = None,
) -> pd.DataFrame:
    """Spikes and tokens per method, layer and word class over `texts`, from the counting engine
    (`analysis.corpus.engine`), for the word `classes` given (default all). `on_progress(done, total)` counts texts."""
    rows = batch_rows(lm, texts, list(range(len(texts))), settings, batch_tokens, on_progress, classes)
    if rows.empty:
        raise ValueError(
            f"None of the {len(texts):,} texts has a token {lm.name} reads (only spaces, control or zero-width "
            "characters)."
        )
    return spike_counts(rows, by=["method"])


def unreadable_texts(lm: LoadedModel, texts: list[str]) -> list[int]:
    """The indices of the `texts` with no token `lm` reads (only spaces, control or zero-width characters): the
    counting engine skips them, and whoever shows its numbers says so."""
    return [index for index, tokens in enumerate(tokenize_readable(lm, texts)) if tokens is None]


def corpus_spikes(
    lm: LoadedModel,
    texts: list[str],
    settings: AnalysisSettings = DEFAULTS,
    *,
    on_progress: OnProgress | None = None,
) -> pd.DataFrame:
    """Per layer and word class over all `texts` under the settings' one geometry: tokens, spiking tokens, share and
    its 95% interval (SUMMARY_COLUMNS without the method)."""
    sweep = settings.sweeping((settings.geometry,)).resolve(lm)
    counts = corpus_counts(lm, texts, sweep, on_progress=on_progress)
    return method_shares(counts).drop(columns="method")

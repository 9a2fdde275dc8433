"""Comparing two models on one text: relative depth, per-model summaries and linear CKA between layers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.report.result import AnalysisResult
from analysis.spikes import spike_shares
from analysis.wordclass import word_classes

_WORD = re.compile(r"\w+|[^\w\s]")


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between representations of the same n items: x `[n, d1]`, y `[n, d2]` → a number in [0, 1].

    Computed in float64 whatever the input dtype, so a representation against itself gives 1 to ~1e-15."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denominator) if denominator > 0 else float("nan")


def word_vectors(result: AnalysisResult, text: str) -> tuple[list[int], np.ndarray]:
    """Mean stage vector per word of `text` (a run of letters/digits, or one punctuation mark), so models with
    different tokenizers can be compared item by item: `(word indices, [layers, words, hidden])`."""
    starts = np.array([match.start() for match in _WORD.finditer(text)])
    tokens = result.tokens[~result.tokens["special"] & (result.tokens["char_end"] > result.tokens["char_start"])]
    word_of_token = np.searchsorted(starts, tokens["char_start"].to_numpy(), side="right") - 1
    words = sorted(set(word_of_token.tolist()))
    positions = tokens["position"].to_numpy()
    pooled = np.stack([result.vectors[:, positions[word_of_token == word]].mean(1) for word in words], axis=1)
    return words, pooled


def cka_matrix(first: AnalysisResult, second: AnalysisResult, text: str) -> pd.DataFrame:
    """Linear CKA between every layer of `first` (rows) and of `second` (columns) over the words of `text`."""
    words_a, a = word_vectors(first, text)
    words_b, b = word_vectors(second, text)
    common = sorted(set(words_a) & set(words_b))
    if len(common) < 3:
        raise ValueError("CKA needs at least three words that both models read; use a longer text.")
    a = a[:, [words_a.index(word) for word in common]]
    b = b[:, [words_b.index(word) for word in common]]
    return pd.DataFrame(
        [[linear_cka(a[i], b[j]) for j in range(len(b))] for i in range(len(a))],
        index=pd.Index(range(len(a)), name="first model's layer"),
        columns=pd.Index(range(len(b)), name="second model's layer"),
    )


SUMMARY_COLUMNS = {
    "model": "the model's short label (its full name is said beside the table)",
    "layers": "number of blocks",
    "spike layers": "the (up to) three layers with the largest spike share, and their shares",
    "final rank, function": "median rank of function words' own embeddings at the last layer (1 = nearest)",
    "final rank, content": "median rank of content words' own embeddings at the last layer (1 = nearest)",
    "drift": "mean drop of the cosine to the original embedding from the first to the last layer",
}
"""The columns of a model summary (`model_summary`) and what each means."""


def model_summary(result: AnalysisResult, label: str) -> dict[str, object]:
    """Spike layers and scores, median final rank of function vs content words, total drift of the cosine; the
    model named `label` (see SUMMARY_COLUMNS)."""
    shares = spike_shares(result.metrics).dropna(subset=["share"])
    top = shares[shares["spikes"] > 0].sort_values("share", ascending=False).head(3)
    last = result.metrics[result.metrics["layer"] == result.metrics["layer"].max()]
    classes = word_classes(result.tokens)
    final_rank = last.set_index("position")["rank"]
    first = result.metrics[result.metrics["layer"] == 0].set_index("position")["cosine"]
    drift = (first - last.set_index("position")["cosine"]).mean()
    return {
        "model": label,
        "layers": int(result.metrics["layer"].max()) + 1,
        "spike layers": ", ".join(f"{int(r.layer)} ({r.share:.0%})" for r in top.itertuples()) or "none",
        "final rank, function": _median(final_rank[classes == "function"]),
        "final rank, content": _median(final_rank[classes == "content"]),
        "drift": round(float(drift), 4),
    }


def _median(ranks: pd.Series) -> float:
    return float(ranks.median()) if len(ranks) else float("nan")

"""How long corpus work will take here, said before it starts, as a range: floating-point operations counted from
the model's shapes and the texts' tokens, at the speed this machine has now: a short timed probe (a few products
with the model's own vocabulary table, the scoring's own shape) run each time an estimate is asked for, so a
machine busy with other work gives a longer estimate.

The scoring dominates: every kept token at every layer against every vocabulary row, once per product the
methods need (the geometries that share one, standardized's own, the original demo's; see
`analysis.scoring.ranks`).
`OVERHEAD` is what the rest adds (the elementwise passes, the forward passes), measured by
`benchmarks/bench_verdict.py`, which reports the estimate beside the time taken.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import torch

from analysis.capture.tokens import token_table, tokenize_readable
from analysis.definitions import SCORE_TOKENS, TUNED_TOKENS, FittedKind, Method
from analysis.fitted.fit import SPLIT
from analysis.model.loaded import LoadedModel
from analysis.scoring.geometry import GEOMETRY_SPECS
from analysis.wordclass import word_classes

OVERHEAD = (1.1, 1.6)
"""What the rest adds to the products' time at the measured speed, low and high: the verdict takes 1.1 to 1.4
times that on the bundled model and on the roberta-base shape (`benchmarks/bench_verdict.py` reports estimate
and time), and more where the products run nearer the machine's ceiling."""
PROBES = 3
"""Timed products per estimate."""


def flops_per_second(lm: LoadedModel) -> tuple[float, float]:
    """Float32 speed of this machine now on the scoring's products, slowest and fastest of PROBES products of 256
    rows with the model's vocabulary table (hundredths to a few tenths of a second)."""
    table = lm.structure.embeddings.word.weight.detach()
    rows = torch.randn(256, table.shape[1], device=table.device)
    out = torch.empty(len(rows), len(table), device=table.device)  # reused, as the scoring's workspace is
    seconds = []
    with torch.inference_mode():
        for _ in range(PROBES):
            start = time.perf_counter()
            torch.matmul(rows, table.T, out=out)[0, 0].item()  # .item() waits for an accelerator to finish
            seconds.append(time.perf_counter() - start)
    work = 2 * rows.numel() * table.shape[0]
    return work / max(seconds), work / min(seconds)


def products_needed(methods: Sequence[Method]) -> int:
    """Products with the vocabulary table per token and layer: one shared by every geometry that scores on plain
    cosine's product (`GeometrySpec.shared_product`), one for each geometry that needs its own, one for the
    original demo."""
    specs = [GEOMETRY_SPECS[method] for method in methods if method != "original_demo"]
    shared = any(spec.shared_product for spec in specs)
    return int(shared) + sum(not spec.shared_product for spec in specs) + int("original_demo" in methods)


def token_counts(lm: LoadedModel, texts: list[str], classes: Collection[str] | None = None) -> tuple[int, int]:
    """(all tokens, tokens of the word `classes` given, or all) of `texts`, each tokenised alone; a text with no
    token the model reads counts none (the counting engine skips it)."""
    readable = [(t, text) for t, text in zip(tokenize_readable(lm, texts), texts, strict=True) if t is not None]
    tokens, texts = [t for t, _ in readable], [text for _, text in readable]
    total = sum(len(t) for t in tokens)
    if classes is None:
        return total, total
    kept = sum(
        int(word_classes(token_table(t, text)).isin(classes).sum()) for t, text in zip(tokens, texts, strict=True)
    )
    return total, kept


def corpus_seconds(
    lm: LoadedModel,
    texts: list[str],
    methods: Sequence[Method],
    *,
    classes: Collection[str] | None = None,
    forward_passes: int = 1,
) -> tuple[float, float]:
    """How long the counting engine takes on `texts` under `methods` here now, low and high, with
    `forward_passes` passes over them (2 when the corpus statistics must be computed first)."""
    total, kept = token_counts(lm, texts, classes)
    scoring = 2.0 * kept * lm.num_layers * lm.vocab_size * lm.hidden_size * products_needed(methods)
    forward = 2.0 * lm.info.parameters * total * forward_passes
    slowest, fastest = flops_per_second(lm)
    return OVERHEAD[0] * (scoring + forward) / fastest, OVERHEAD[1] * (scoring + forward) / slowest


def fit_seconds(
    lm: LoadedModel, texts: list[str], kind: FittedKind, *, score_tokens: int = SCORE_TOKENS,
    tuned_tokens: int = TUNED_TOKENS,
) -> tuple[float, float]:  # fmt: skip
    """How long `fit_lens` takes on `texts` here now, low and high: one forward pass over them, the float64 moments
    (twice a float32 product's time) and the ridge's solves, the held-out vocabulary scores of each lens scored
    (with a head), and for the tuned lens its token reads through the head, forward and backward."""
    total, _ = token_counts(lm, texts)
    layers, hidden, vocabulary = lm.num_layers, lm.hidden_size, lm.vocab_size
    work = 2.0 * lm.info.parameters * total + 2 * (2.0 * 2 * layers * hidden**2 * total + 30.0 * layers * hidden**3)
    if lm.unembed is not None:
        lenses = 3 if kind == "tuned" else 2
        work += lenses * 2.0 * min(total // SPLIT, score_tokens) * layers * vocabulary * hidden
        if kind == "tuned":
            work += 3 * 2.0 * tuned_tokens * layers * vocabulary * hidden
    slowest, fastest = flops_per_second(lm)
    return work / fastest, OVERHEAD[1] * work / slowest  # the fit's products run nearer the measured speed

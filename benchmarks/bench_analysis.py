"""Speed and memory of `analyze` against the original demo's algorithm, on random-weight real shapes.

    python -m benchmarks.bench_analysis [--skip-large]

1. Seed sentence, roberta-base shape, stage attn_residual, reference position, all tokens x all layers:
   ours vs the naive reference (per token and layer: cosine against every materialised vocabulary
   reference, then a full argsort for the own rank) and vs the floor (one forward pass + one vocabulary
   matrix product). Ranks of both must agree.
2. 510 tokens on the roberta-large shape, reference position: time and peak RSS growth above the loaded model.
"""

from __future__ import annotations

import time

import torch

import analysis
from analysis.capture.trace import trace
from analysis.definitions import SEED_SENTENCE
from analysis.scoring.references import vocabulary_scorer
from benchmarks.memory import long_text_growth
from benchmarks.runner import run, timed_against_floor
from tests.synthetic import ROBERTA_BASE_SHAPE, ROBERTA_LARGE_SHAPE, random_roberta


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def naive_ranks(lm, text: str) -> torch.Tensor:
    """The original demo's algorithm (with correct references): `[layers, tokens]` 1-based ranks."""
    run = trace(lm, text, ["attn_residual"])
    tokens, vectors = run.tokens[0], run.stage("attn_residual")
    scorer = vocabulary_scorer(lm, "position")
    vocab = torch.arange(lm.vocab_size)
    ranks = torch.zeros(vectors.shape[:2], dtype=torch.long)
    with torch.inference_mode():
        for position, (token_id, position_id) in enumerate(zip(tokens.ids, tokens.position_ids, strict=True)):
            references = scorer.references(vocab, torch.full_like(vocab, position_id))
            for layer in range(vectors.shape[0]):
                cosines = torch.nn.functional.cosine_similarity(vectors[layer, position][None], references)
                order = torch.argsort(cosines, descending=True)
                ranks[layer, position] = (order == token_id).nonzero()[0, 0] + 1
    return ranks


def floor(lm, text: str) -> None:
    """One forward pass plus one `[rows, hidden] x [hidden, vocab]` product: no method can do less."""
    vectors = trace(lm, text, ["attn_residual"]).stage("attn_residual")
    with torch.inference_mode():
        vectors.reshape(-1, vectors.shape[-1]) @ lm.structure.embeddings.word.weight.T


def seed_benchmark() -> dict:
    lm = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    cold_start = time.perf_counter()
    analysis.analyze(lm, SEED_SENTENCE)
    cold = time.perf_counter() - cold_start
    ours, result = best_of(lambda: analysis.analyze(lm, SEED_SENTENCE), 5)
    floor_time, _ = best_of(lambda: floor(lm, SEED_SENTENCE), 5)
    naive_time, ranks = best_of(lambda: naive_ranks(lm, SEED_SENTENCE), 1)
    ours_ranks = torch.tensor(result.metrics["rank"].to_numpy()).view(ranks.shape)
    return {
        **timed_against_floor(lm, len(result.tokens), ours, floor_time),
        "ours_first_call_s": cold,
        "naive_s": naive_time,
        "speedup_vs_naive": naive_time / ours,
        "ranks_agree": bool(torch.equal(ours_ranks, ranks)),
    }


def large_benchmark() -> dict:
    lm = random_roberta(ROBERTA_LARGE_SHAPE, name="random roberta-large shape")
    return long_text_growth(lm, reference="position")


def main() -> None:
    run("bench_analysis", __doc__, ("seed_roberta_base", seed_benchmark), ("long_roberta_large", large_benchmark))


if __name__ == "__main__":
    main()

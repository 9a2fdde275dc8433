"""Speed and memory of `analysis.fitted.fit_lens` and of reading a fitted lens, each against its floor in the same
run, on random-weight models with heads.

    python -m benchmarks.bench_fit [--skip-large]

1. roberta-base shape, the shipped corpus: the linear fit (held-out r² only, `score_tokens=0`) against the floor
   any fit pays, one batched forward pass over the same texts reading every layer's output (best of 3 each, in
   turn). Target: within 1.3x. Beside it, the float64 arithmetic any exact fit of this size does beyond that pass
   (per layer: the moments' products over the fit and validation tokens, one eigendecomposition, one Cholesky
   solve; `float64_algebra`, random vectors) and the least ratio it leaves. The fit with its held-out vocabulary
   scores (plain and linear, 4,096 tokens at most) is timed too: those are the lens itself on the held-out texts,
   twice.
2. roberta-base and gpt2 shapes: `lens` through a fitted linear lens against the plain lens, the seed sentence and
   512 tokens (best of 5, in turn). Target: within 1.1x.
3. The tuned lens on a 6-layer, 384-wide model with a 30,522 vocabulary (the MiniLM shape, with an MLM head), 20,000
   token reads: seconds. Target: 10 minutes on this CPU.
4. (large) roberta-large shape: peak RSS growth above the loaded model while fitting the linear lens over the
   shipped corpus (r² only, and with the vocabulary scores).
"""

from __future__ import annotations

import time

import torch

import analysis
from analysis.capture.tokens import length_batches, tokenize_readable
from analysis.capture.trace import trace_tokens
from analysis.data import corpus_sentences
from analysis.definitions import SEED_SENTENCE
from analysis.fitted.fit import FIT_BATCH_TOKENS, fit_lens
from analysis.fitted.lens import FittedLens
from benchmarks.bench_analysis import best_of
from benchmarks.bench_lens import LONG_TEXT, STAGE, with_head
from benchmarks.memory import PeakRss, rss_bytes
from benchmarks.runner import run, timed_against_floor
from tests.synthetic import GPT2_SHAPE, ROBERTA_BASE_SHAPE, ROBERTA_LARGE_SHAPE

MINILM_SHAPE = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                "intermediate_size": 1536, "max_position_embeddings": 512}  # fmt: skip


def forward_floor(lm: analysis.LoadedModel, texts: list[str]) -> int:
    """One batched forward pass over `texts` (the fit's batches), reading every layer's output; the tokens read."""
    tokens = [found for found in tokenize_readable(lm, texts) if found is not None]
    for batch in length_batches([len(t) for t in tokens], FIT_BATCH_TOKENS, lm.memory_limit**2):
        trace_tokens(lm, [texts[i] for i in batch], [tokens[i] for i in batch], {STAGE})
    return sum(len(t) for t in tokens)


def float64_algebra(tokens: int, layers: int, hidden: int) -> float:
    """Seconds for the float64 arithmetic any exact fit of this size does beside the forward pass, on random
    vectors: per layer, the centred products x^T x and x^T y over `tokens` (in the fit's batches), one symmetric
    eigendecomposition (the ridge's choice) and one Cholesky solve (the map)."""
    batch = FIT_BATCH_TOKENS // 4  # about the real tokens of one padded batch of the shipped corpus
    vectors = torch.randn(batch, hidden, dtype=torch.float64)
    outputs = torch.randn(batch, hidden, dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(layers):
        xx = torch.zeros(hidden, hidden, dtype=torch.float64)
        xy = torch.zeros_like(xx)
        for _ in range(0, tokens, batch):
            xx.addmm_(vectors.T, vectors)
            xy.addmm_(vectors.T, outputs)
        torch.linalg.eigh(xx)
        torch.cholesky_solve(xy, torch.linalg.cholesky(xx + torch.eye(hidden, dtype=torch.float64)))
    return time.perf_counter() - start


def fit_speed() -> dict:
    lm = with_head("roberta", ROBERTA_BASE_SHAPE, "random roberta-base shape")
    texts = corpus_sentences()
    fit_lens(lm, texts[:10], score_tokens=0)  # warm-up
    ours = floor = float("inf")
    for _ in range(3):
        ours = min(ours, best_of(lambda: fit_lens(lm, texts, score_tokens=0), 1)[0])
        seconds, tokens = best_of(lambda: forward_floor(lm, texts), 1)
        floor = min(floor, seconds)
    scored_seconds, scored = best_of(lambda: fit_lens(lm, texts), 1)
    fitted_tokens = scored.record["tokens"]["fit"] + scored.record["tokens"]["validation"]
    algebra = min(float64_algebra(fitted_tokens, lm.num_layers - 1, lm.hidden_size) for _ in range(3))
    return {
        "linear_fit": timed_against_floor(lm, tokens, ours, floor),
        "float64_algebra_s": algebra,
        "least_ratio_of_an_exact_fit": (floor + algebra) / floor,
        "with_held_out_scores_s": scored_seconds,
        "held_out_scored_tokens": int(scored.scores["scored_tokens"].iloc[0]),
        "ridge_alpha": scored.record["ridge"]["alpha"],
    }


def fitted_against_plain(lm: analysis.LoadedModel, fitted: FittedLens, text: str) -> dict:
    """Best of 5 for the lens through `fitted` and for the plain lens, run in turn."""
    analysis.lens(lm, text, stage=STAGE, fitted=fitted)  # warm-up
    ours = plain = float("inf")
    for _ in range(5):
        seconds, result = best_of(lambda: analysis.lens(lm, text, stage=STAGE, fitted=fitted), 1)
        ours = min(ours, seconds)
        plain = min(plain, best_of(lambda: analysis.lens(lm, text, stage=STAGE), 1)[0])
    return timed_against_floor(lm, len(result.tokens), ours, plain)


def read_speed() -> dict:
    report = {}
    for key, model_type, shape in (("roberta_base", "roberta", ROBERTA_BASE_SHAPE), ("gpt2", "gpt2", GPT2_SHAPE)):
        lm = with_head(model_type, shape, f"random {key} shape")
        fitted = fit_lens(lm, corpus_sentences(), score_tokens=0)
        report[key] = {name: fitted_against_plain(lm, fitted, text)
                       for name, text in (("seed_sentence", SEED_SENTENCE), ("long_text", LONG_TEXT))}  # fmt: skip
    return report


def tuned_speed() -> dict:
    lm = with_head("bert", MINILM_SHAPE, "random MiniLM shape with an MLM head")
    start = time.perf_counter()
    tuned = fit_lens(lm, corpus_sentences(), kind="tuned", tuned_tokens=20_000)
    seconds = time.perf_counter() - start
    record = tuned.record["tuned"]
    return {
        "seconds": seconds,
        "token_reads": record["token_reads"],
        "steps": record["steps"],
        "kept_step": record["kept_step"],
        "validation_kl_start": record["validation_kl_start"],
        "validation_kl_kept": record["validation_kl_kept"],
    }


def quick() -> dict:
    return {"fit": fit_speed(), "fitted_read": read_speed(), "tuned": tuned_speed()}


def large_memory() -> dict:
    lm = with_head("roberta", ROBERTA_LARGE_SHAPE, "random roberta-large shape")
    texts = corpus_sentences()
    fit_lens(lm, texts[:10], score_tokens=0)  # warm-up
    report = {}
    for name, score_tokens in (("r2_only", 0), ("with_scores", 4096)):
        loaded = rss_bytes()
        with PeakRss() as memory:
            start = time.perf_counter()
            fit_lens(lm, texts, score_tokens=score_tokens)
            elapsed = time.perf_counter() - start
        report[name] = {"seconds": elapsed, "rss_loaded_gb": loaded / 2**30,
                        "peak_growth_gb": (memory.peak - loaded) / 2**30}  # fmt: skip
    return report


def main() -> None:
    torch.manual_seed(0)
    run("bench_fit", __doc__, ("quick", quick), ("roberta_large_memory", large_memory))


if __name__ == "__main__":
    main()

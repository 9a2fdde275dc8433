"""Speed and memory of `analysis.lens` on random-weight models with heads, each against its floor in the same run.

    python -m benchmarks.bench_lens [--skip-large]

The floor is what no lens can skip: one forward pass and the model's own head applied to every layer's vectors
(final norm + unembedding for GPT-2, the MLM head for RoBERTa), keeping nothing. The lens adds the softmax
statistics (probability, rank, entropy, KL from the final layer, top-k) over the whole vocabulary and its tables.

1. gpt2 shape (vocab 50,257; logit lens, target next) and roberta-base shape (vocab 50,265; MLM lens, target
   own), stage layer_output: the seed sentence and a 512-token text, best of 7 (seed) or 5 (long), the lens and
   its floor run in turn. Target: within 1.3x of the floor.
2. 512 tokens: peak RSS growth above the loaded model on the gpt2 and roberta-large shapes. Target: 1 GB (no
   [layers, tokens, vocabulary] tensor is ever held).
"""

from __future__ import annotations

import time

import torch

import analysis
from analysis.capture.trace import trace
from analysis.definitions import SEED_SENTENCE
from analysis.model.loaded import wrap_model
from benchmarks.bench_analysis import best_of
from benchmarks.memory import PeakRss, rss_bytes
from benchmarks.runner import run, timed_against_floor
from tests.synthetic import (
    GPT2_SHAPE,
    ROBERTA_BASE_SHAPE,
    ROBERTA_LARGE_SHAPE,
    bpe_tokenizer,
    byte_level_tokenizer,
    random_hf_model,
)

LONG_TEXT = " ".join(["Time flies like an arrow; fruit flies like a banana."] * 60)  # cut at 512 tokens
STAGE = "layer_output"


def with_head(model_type: str, shape: dict, name: str) -> analysis.LoadedModel:
    """A random model of `shape` with its causal-LM or masked-LM head, wrapped like a loaded checkpoint."""
    if model_type == "gpt2":
        tokenizer = byte_level_tokenizer(max_length=512)
    else:
        tokenizer = bpe_tokenizer()
        shape = {**shape, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    return wrap_model(random_hf_model(model_type, shape, tokenizer, head=True), tokenizer, name)


def floor(lm: analysis.LoadedModel, text: str) -> None:
    """One forward pass and the model's head on every layer's vectors, nothing kept."""
    vectors = trace(lm, text, [STAGE]).stage(STAGE)
    with torch.inference_mode():
        for layer_vectors in vectors:
            lm.unembed(layer_vectors)


def against_floor(lm: analysis.LoadedModel, text: str, repeats: int) -> dict:
    """Best of `repeats` for the lens and for its floor, run in turn so that both see the same machine."""
    analysis.lens(lm, text, stage=STAGE)  # warm-up: vocabulary pieces, allocator
    ours = floor_time = float("inf")
    for _ in range(repeats):
        seconds, result = best_of(lambda: analysis.lens(lm, text, stage=STAGE), 1)
        ours = min(ours, seconds)
        floor_time = min(floor_time, best_of(lambda: floor(lm, text), 1)[0])
    return {"target": result.target, **timed_against_floor(lm, len(result.tokens), ours, floor_time)}


def speed() -> dict:
    report = {}
    for key, model_type, shape in (("gpt2", "gpt2", GPT2_SHAPE), ("roberta_base", "roberta", ROBERTA_BASE_SHAPE)):
        lm = with_head(model_type, shape, f"random {key} shape")
        report[key] = {
            "seed_sentence": against_floor(lm, SEED_SENTENCE, 7),
            "long_text": against_floor(lm, LONG_TEXT, 5),
        }
    return report


def growth(lm: analysis.LoadedModel) -> dict:
    analysis.lens(lm, SEED_SENTENCE, stage=STAGE)
    loaded = rss_bytes()
    with PeakRss() as memory:
        start = time.perf_counter()
        result = analysis.lens(lm, LONG_TEXT, stage=STAGE)
        elapsed = time.perf_counter() - start
    return {
        "tokens": len(result.tokens),
        "layers": lm.num_layers,
        "seconds": elapsed,
        "rss_loaded_gb": loaded / 2**30,
        "peak_growth_gb": (memory.peak - loaded) / 2**30,
    }


def memory() -> dict:
    return {
        "gpt2": growth(with_head("gpt2", GPT2_SHAPE, "random gpt2 shape")),
        "roberta_large": growth(with_head("roberta", ROBERTA_LARGE_SHAPE, "random roberta-large shape")),
    }


def main() -> None:
    run("bench_lens", __doc__, ("speed", speed), ("memory_512_tokens", memory))


if __name__ == "__main__":
    main()

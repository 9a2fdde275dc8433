"""Speed and memory of `analyze` on decoder shapes beside the roberta-base shape, random weights.

    python -m benchmarks.bench_families [--skip-large]

1. Seed sentence, stage attn_residual, each model's default reference (position: word + position row):
   roberta-base shape (vocab 50,265) and gpt2 shape (vocab 50,257), each against its floor in the same
   run (one forward pass plus one [rows, hidden] x [hidden, vocab] product). Target: within 1.3x.
2. 512 tokens on the SmolLM2-135M shape (Llama-style: RMSNorm, rotary, GQA; vocab 49,152; 30 layers),
   stage attn_residual, reference embedding: time and peak RSS growth above the loaded model. Target: 1 GB.
"""

from __future__ import annotations

import analysis
from analysis.definitions import SEED_SENTENCE
from benchmarks.bench_analysis import best_of, floor
from benchmarks.memory import long_text_growth
from benchmarks.runner import run, timed_against_floor
from tests.synthetic import (
    GPT2_SHAPE,
    ROBERTA_BASE_SHAPE,
    SMOLLM2_135M_SHAPE,
    byte_level_tokenizer,
    random_model,
    random_roberta,
    sentencepiece_tokenizer,
)


def against_floor(lm: analysis.LoadedModel) -> dict:
    analysis.analyze(lm, SEED_SENTENCE)  # per-model constants, built once
    ours, result = best_of(lambda: analysis.analyze(lm, SEED_SENTENCE), 7)
    floor_time, _ = best_of(lambda: floor(lm, SEED_SENTENCE), 7)
    return {"reference": result.settings.reference, **timed_against_floor(lm, len(result.tokens), ours, floor_time)}


def seed_benchmarks() -> dict:
    roberta = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    gpt2 = random_model("gpt2", GPT2_SHAPE, byte_level_tokenizer(), "random gpt2 shape")
    return {"roberta_base": against_floor(roberta), "gpt2": against_floor(gpt2)}


def long_llama_benchmark() -> dict:
    tokenizer = sentencepiece_tokenizer(max_length=512, decoder=True)
    lm = random_model("llama", SMOLLM2_135M_SHAPE, tokenizer, "random SmolLM2-135M shape")
    return {"parameters_m": lm.info.parameters / 1e6, **long_text_growth(lm, stage="attn_residual")}


def main() -> None:
    run("bench_families", __doc__, ("seed_sentence", seed_benchmarks), ("long_smollm2_135m", long_llama_benchmark))


if __name__ == "__main__":
    main()

"""Cost of the geometry controls on random-weight real shapes, each against plain cosine in the same run.

    python -m benchmarks.bench_geometry [--skip-large]

1. Background statistics on the roberta-base shape (attn_residual, position): forward passes over the corpus,
   batched (target < 30 s). The verdict's speed is measured by bench_verdict.
2. analyze on the seed sentence, roberta-base shape, under each geometry, against geometry="cosine"
   (background excluded: it is computed once per model; target within 1.2x).
3. 510 tokens on the roberta-large shape under each geometry: time and peak RSS growth above the loaded model
   (target at most 1 GB).
"""

from __future__ import annotations

import time

import analysis
from analysis.definitions import GEOMETRIES, SEED_SENTENCE
from benchmarks.memory import PeakRss, rss_bytes
from benchmarks.runner import run
from tests.synthetic import ROBERTA_BASE_SHAPE, ROBERTA_LARGE_SHAPE, random_roberta


def base_benchmarks() -> dict:
    lm = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    start = time.perf_counter()
    found = analysis.background(lm, "attn_residual", "position")
    background_s = time.perf_counter() - start
    for geometry in GEOMETRIES:  # warm-up: vocabulary constants, first-call allocations
        analysis.analyze(lm, SEED_SENTENCE, geometry=geometry)
    seconds = dict.fromkeys(GEOMETRIES, float("inf"))
    for _ in range(7):  # interleaved, best of seven: drift in the machine's load hits every geometry alike
        for geometry in GEOMETRIES:
            start = time.perf_counter()
            analysis.analyze(lm, SEED_SENTENCE, geometry=geometry)
            seconds[geometry] = min(seconds[geometry], time.perf_counter() - start)
    return {
        "background_s": background_s,
        "background_tokens": found.vectors.n_tokens,
        "seed_seconds": seconds,
        "seed_over_cosine": {g: seconds[g] / seconds["cosine"] for g in GEOMETRIES},
    }


def large_benchmark() -> dict:
    lm = random_roberta(ROBERTA_LARGE_SHAPE, name="random roberta-large shape")
    start = time.perf_counter()
    analysis.background(lm, "attn_residual", "position")
    background_s = time.perf_counter() - start
    for geometry in GEOMETRIES:
        analysis.analyze(lm, "warm up the vocabulary constants", geometry=geometry)
    text = " ".join(["flies"] * 600)
    report = {"background_s": background_s}
    for geometry in GEOMETRIES:
        loaded = rss_bytes()
        with PeakRss() as memory:
            start = time.perf_counter()
            result = analysis.analyze(lm, text, geometry=geometry)
            elapsed = time.perf_counter() - start
        report[geometry] = {
            "tokens": len(result.tokens),
            "seconds": elapsed,
            "peak_growth_gb": (memory.peak - loaded) / 2**30,
        }
        del result
    return report


def main() -> None:
    run("bench_geometry", __doc__, ("roberta_base", base_benchmarks), ("long_roberta_large", large_benchmark))


if __name__ == "__main__":
    main()

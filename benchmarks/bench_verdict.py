"""The verdict's speed: the counting engine (one forward pass per batch for every method, geometries sharing their
products with the vocabulary table) against the per-sentence reference it replaced (per sentence and method: a
forward pass and a full `analyze`, or `original_demo`), in the same run, on the same model and corpus; and the
estimate the app shows before it starts, beside the time taken.

    python -m benchmarks.bench_verdict [--skip-large]

1. The bundled all-MiniLM-L6-v2 (real weights; five methods), the whole shipped corpus.
2. The roberta-base shape (random weights; five methods), the whole shipped corpus.
Target: the engine at least 4x the reference's sentences per second for all five methods together. Both count
the same spikes (checked). The corpus statistics are computed before either is timed (once per model and stage).
"""

from __future__ import annotations

import time

import pandas as pd

import analysis
from analysis.corpus.cost import corpus_seconds
from analysis.corpus.counts import spike_counts
from analysis.corpus.verdict import VERDICT_CLASSES, spike_verdict, verdict_methods
from analysis.data import corpus_sentences
from analysis.definitions import GEOMETRIES
from analysis.report.original_demo import original_demo
from analysis.scoring.geometry import corpus_statistics
from analysis.spikes import token_spikes
from analysis.wordclass import word_classes
from benchmarks.runner import run
from tests.synthetic import ROBERTA_BASE_SHAPE, random_roberta


def per_sentence_reference(lm: analysis.LoadedModel, sentences: list[str]) -> pd.DataFrame:
    """The verdict as it was computed before the counting engine: per sentence, the original demo and `analyze`
    under each geometry, one forward pass and one full scoring each; spikes counted per method."""
    counts = []
    for sentence in sentences:
        results = {"original_demo": original_demo(lm, sentence)}
        results |= {g: analysis.analyze(lm, sentence, geometry=g, top_k=1, overlap_n=1) for g in GEOMETRIES}
        for method, result in results.items():
            spikes = token_spikes(result.metrics)
            rows = spikes.assign(word_class=spikes["position"].map(word_classes(result.tokens)))
            counts.append(spike_counts(rows[rows["word_class"].isin(VERDICT_CLASSES)]).assign(method=method))
    return pd.concat(counts).groupby(["method", "layer", "word_class"])[["spikes", "tokens"]].sum()


def measure(lm: analysis.LoadedModel) -> dict:
    sentences = corpus_sentences()
    start = time.perf_counter()
    corpus_statistics(lm, "attn_residual")
    statistics_s = time.perf_counter() - start
    spike_verdict(lm, sentences=sentences[:3])  # first-call costs of both, outside the timings
    per_sentence_reference(lm, sentences[:3])
    methods = tuple(verdict_methods(True))
    estimate = corpus_seconds(lm, sentences, methods, classes=VERDICT_CLASSES)
    start = time.perf_counter()
    verdict = spike_verdict(lm, sentences=sentences)
    engine_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = per_sentence_reference(lm, sentences)
    reference_s = time.perf_counter() - start
    engine_counts = verdict.set_index(["method", "layer", "word_class"])[["spikes", "tokens"]]
    last_layer = lm.num_layers - 1  # the verdict leaves it out: nothing can spike there
    reference = reference[reference.index.get_level_values("layer") < last_layer]
    return {
        "sentences": len(sentences),
        "methods": list(methods),
        "corpus_statistics_s": statistics_s,
        "engine_s": engine_s,
        "engine_sentences_per_s": len(sentences) / engine_s,
        "reference_s": reference_s,
        "reference_sentences_per_s": len(sentences) / reference_s,
        "speedup": reference_s / engine_s,
        "estimate_s": list(estimate),
        "actual_within_estimate": estimate[0] <= engine_s <= estimate[1],
        "same_counts": bool(engine_counts.sort_index().equals(reference.sort_index())),
    }


def bundled() -> dict:
    return measure(analysis.load_model(analysis.BUNDLED_MODEL))


def roberta_base() -> dict:
    return measure(random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape"))


def main() -> None:
    run("bench_verdict", __doc__, ("bundled_minilm", bundled), ("roberta_base_shape", roberta_base))


if __name__ == "__main__":
    main()

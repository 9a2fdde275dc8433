"""Throughput of `python -m analysis sweep` (the local engine) against its floor, on the roberta-base shape.

    python -m benchmarks.bench_sweep [--sentences N]   # default 2,000: the shipped corpus repeated

Ours: a sweep end to end (tokenise, length-sorted padded batches, score every token under `cosine`,
spikes and word classes, Parquet shards, summary and chart). Floor, in the same run: the same batches'
forward passes plus one [tokens, hidden] x [hidden, vocab] product per layer for all tokens. Targets:
within 1.25x of the floor; peak RSS growth under 1.5 GB whatever the input size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from analysis.capture.tokens import length_batches, tokenize
from analysis.capture.trace import trace_tokens
from analysis.data import corpus_sentences
from analysis.output.sweep import open_sweep
from analysis.settings import SweepSettings
from benchmarks.memory import PeakRss, rss_bytes
from benchmarks.runner import RESULTS
from tests.synthetic import ROBERTA_BASE_SHAPE, random_roberta

BATCH_TOKENS = 4096


def floor(lm, texts: list[str]) -> int:
    """The forward passes of the sweep's batches plus one vocabulary product per layer for all their tokens."""
    tokens = [tokenize(lm, text) for text in texts]
    word = lm.structure.embeddings.word.weight
    n = 0
    for batch in length_batches([len(t) for t in tokens], BATCH_TOKENS):
        run = trace_tokens(lm, [texts[i] for i in batch], [tokens[i] for i in batch], ["attn_residual"])
        vectors = torch.cat([run.stage("attn_residual", row) for row in range(len(batch))], dim=1)
        with torch.inference_mode():
            rows = vectors.reshape(-1, vectors.shape[-1])
            for start in range(0, len(rows), 256):  # 256 rows x vocab: the sweep's score blocks are as large
                rows[start : start + 256] @ word.T
        n += vectors.shape[1]
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    args = parser.parse_args()
    shipped = corpus_sentences()
    texts = [shipped[i % len(shipped)] for i in range(args.sentences)]
    lm = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    settings = SweepSettings(reference="position")
    inputs = Path(tempfile.mkdtemp())
    (inputs / "warm.txt").write_text("\n".join(texts[:8]) + "\n")
    (inputs / "bench.txt").write_text("\n".join(texts) + "\n")
    with open_sweep(inputs / "warm", inputs / "warm.txt", model=lm.name, settings=settings) as warm:
        warm.run(lm)
    loaded = rss_bytes()
    with PeakRss() as memory, tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with open_sweep(Path(folder) / "out", inputs / "bench.txt", model=lm.name, settings=settings) as sweep:
            sweep.run(lm, batch_tokens=BATCH_TOKENS)
        ours = time.perf_counter() - start
    start = time.perf_counter()
    tokens = floor(lm, texts)
    floor_s = time.perf_counter() - start
    report = {
        "torch_threads": torch.get_num_threads(),
        "sentences": len(texts),
        "tokens": tokens,
        "ours_s": ours,
        "floor_s": floor_s,
        "ours_tokens_per_s": tokens / ours,
        "floor_tokens_per_s": tokens / floor_s,
        "ours_over_floor": ours / floor_s,
        "peak_growth_gb": (memory.peak - loaded) / 2**30,
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_sweep.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

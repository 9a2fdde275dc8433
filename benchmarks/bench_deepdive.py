"""The corpus check's speed and the base-vs-large flow's peak memory, on random weights with the real shapes.

    python -m benchmarks.bench_deepdive

1. Corpus check (all shipped sentences) on the roberta-base shape: sentences per second.
2. The Base vs large page (AppTest, the server's own work) with roberta-base and roberta-large shapes saved as
   safetensors folders: peak resident memory of the process, once with the default 2.5 GB budget and once
   with a budget that forces one model at a time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from streamlit.testing.v1 import AppTest

from analysis.corpus.counts import corpus_spikes
from analysis.data import corpus_sentences
from benchmarks.memory import PeakRss, rss_bytes
from tests.synthetic import ROBERTA_BASE_SHAPE, ROBERTA_LARGE_SHAPE, random_roberta

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def corpus_speed() -> dict:
    lm = random_roberta(ROBERTA_BASE_SHAPE, name="random roberta-base shape")
    sentences = corpus_sentences()
    corpus_spikes(lm, sentences[:2])  # vocabulary constants, first-call costs
    start = time.perf_counter()
    corpus_spikes(lm, sentences)
    elapsed = time.perf_counter() - start
    return {"sentences": len(sentences), "seconds": elapsed, "sentences_per_second": len(sentences) / elapsed}


def _save(shape_name: str, folder: str) -> None:
    shape = {"base": ROBERTA_BASE_SHAPE, "large": ROBERTA_LARGE_SHAPE}[shape_name]
    lm = random_roberta(shape)
    lm.hf_model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)


def save_real_shapes(folder: str) -> tuple[str, str]:
    """Random-weight roberta-base and roberta-large shapes saved as model folders, each built in a spawned
    child so that the caller's memory stays clean: `(base folder, large folder)`."""
    context = multiprocessing.get_context("spawn")
    paths = (f"{folder}/base", f"{folder}/large")
    for shape, path in zip(("base", "large"), paths, strict=True):
        saver = context.Process(target=_save, args=(shape, path))
        saver.start()
        saver.join()
    return paths


def compare_flow(base: str, large: str, budget_gb: float) -> dict:
    """Open Base vs large on the two folders in a fresh process state; peak RSS above the starting point."""
    os.environ["TOKEN_TRAILS_MEMORY_BUDGET_GB"] = str(budget_gb)
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=1200)
    app.query_params["model"] = base
    app.query_params["model_a"] = base
    app.query_params["model_b"] = large
    start_rss = rss_bytes()
    with PeakRss() as memory:
        started = time.perf_counter()
        app.run()
        app.switch_page("pages/4_Base_vs_large.py").run()
        elapsed = time.perf_counter() - started
    assert not app.exception and not app.error, (app.exception, [e.value for e in app.error])
    return {
        "budget_gb": budget_gb,
        "seconds": elapsed,
        "rss_at_start_gb": start_rss / 2**30,
        "peak_rss_gb": memory.peak / 2**30,
    }


def _flow_in_child(base: str, large: str, budget_gb: float, queue) -> None:
    queue.put(compare_flow(base, large, budget_gb))


def main() -> None:
    report = {"corpus_roberta_base": corpus_speed()}
    print(json.dumps(report["corpus_roberta_base"], indent=2))
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        base, large = save_real_shapes(folder)
        for budget in (2.5, 1.5):
            queue = context.Queue()
            child = context.Process(target=_flow_in_child, args=(base, large, budget, queue))
            child.start()
            flow = queue.get()
            child.join()
            report[f"base_vs_large_budget_{budget}"] = flow
            print(json.dumps(flow, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_deepdive.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

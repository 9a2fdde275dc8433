"""Resident-memory measurement shared by the benchmarks: current RSS, and a sampler of the peak."""

from __future__ import annotations

import threading
import time

import analysis


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


class PeakRss:
    """Samples resident memory every 5 ms on a thread; `.peak` is the highest seen inside the `with` block."""

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def long_text_growth(lm: analysis.LoadedModel, **options) -> dict:
    """`analyze` on 600 words (cut at the model's limit) after a warm-up: seconds and peak RSS growth above the
    loaded model and its per-model constants."""
    analysis.analyze(lm, "warm up the vocabulary constants", **options)
    loaded = rss_bytes()
    with PeakRss() as memory:
        start = time.perf_counter()
        result = analysis.analyze(lm, " ".join(["flies"] * 600), **options)
        elapsed = time.perf_counter() - start
    return {
        "reference": result.settings.reference,
        "tokens": len(result.tokens),
        "truncated": result.truncated,
        "seconds": elapsed,
        "rss_loaded_gb": loaded / 2**30,
        "peak_growth_gb": (memory.peak - loaded) / 2**30,
    }

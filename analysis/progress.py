"""Progress on the command line: a tqdm bar in a terminal; elsewhere (a log file, CI, a pipe), one plain line at
a time, never a stream of carriage returns."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 10.0
"""Seconds between two progress lines when the output is not a terminal."""


class LineProgress:
    """Progress as whole lines: `sweep: 40 of 110 texts (36%), 9.1 texts/s, about 8 s left`, once the first work
    is done, then at most every LINE_EVERY_S seconds, and once at the end."""

    def __init__(self, total: float, desc: str, unit: str, file: TextIO, started: float | None = None):
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.n = 0.0
        self.last_line = time.monotonic()
        self.started = self.last_line if started is None else started

    def update(self, count: float = 1) -> None:
        first = self.n == 0 and count > 0
        self.n += count
        if first or time.monotonic() - self.last_line >= LINE_EVERY_S:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        elapsed = max(self.last_line - self.started, 1e-9)
        rate = self.n / elapsed
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        left = f", about {(self.total - self.n) / rate:,.0f} s left" if rate > 0 and self.n < self.total else ""
        print(
            f"{self.desc}: {self.n:,.0f} of {self.total:,.0f} {self.unit}s{share}, {rate:,.1f} {self.unit}s/s{left}",
            file=self.file,
            flush=True,
        )

    def close(self) -> None:
        self._line()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()


def progress_bar(
    total: float, desc: str, unit: str, file: TextIO | None = None, started: float | None = None
) -> tqdm | LineProgress:
    """A progress bar on `file` (default stderr): tqdm where it is a terminal, `LineProgress` elsewhere. Both
    count with `update(n)` and close at the end of a `with` block. `started` (`time.monotonic()`): when the work
    began, where that was before the bar was made (its rate and estimate count from then)."""
    file = sys.stderr if file is None else file
    if file.isatty():
        bar = tqdm(total=total, desc=desc, unit=unit, file=file)
        if started is not None:  # tqdm's clock is time.time: shift it back by the time already spent
            bar.start_t -= time.monotonic() - started
        return bar
    return LineProgress(total, desc, unit, file, started)

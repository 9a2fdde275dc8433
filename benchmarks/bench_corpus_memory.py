"""Peak memory of `python -m analysis sweep` against the size of its input: the same 20 texts analysed
(`--limit 20`, bundled MiniLM) from a 2 MB and a 200 MB .txt, and from a file whose one line is 20 MB. Each run is
its own process; its peak resident memory is read from the kernel (ru_maxrss) by a parent that runs nothing
else. Target: the 200 MB input within 0.3 GB of the 2 MB one; the 20 MB line within 0.3 GB too. And claiming a
sweep folder (spooling every text, no model) for 200 MB of one-character lines, 100 M texts: within 0.5 GB of
the same for the 2 MB input (the sweep's bookkeeping grows with shards, not texts).

    .venv/bin/python -m benchmarks.bench_corpus_memory
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.data import corpus_sentences
from benchmarks.runner import RESULTS

MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def corpus_file(path: Path, megabytes: float) -> Path:
    """The shipped corpus repeated to `megabytes` of lines."""
    block = ("\n".join(corpus_sentences()) + "\n").encode()
    with path.open("wb") as file:
        for _ in range(int(megabytes * 2**20 / len(block)) + 1):
            file.write(block)
    return path


def one_long_line(path: Path, megabytes: float) -> Path:
    sentence = corpus_sentences()[0] + " "
    path.write_text(sentence * int(megabytes * 2**20 / len(sentence)) + "\n" + corpus_sentences()[1] + "\n")
    return path


SPOOL = """
import sys
from pathlib import Path
from analysis.settings import SweepSettings
from analysis.output.sweep import open_sweep
settings = SweepSettings(reference="position")
with open_sweep(Path(sys.argv[2]), Path(sys.argv[1]), model="all-MiniLM-L6-v2", settings=settings) as sweep:
    print(sweep.sentences, file=sys.stderr)
"""


def one_character_lines(path: Path, megabytes: float) -> Path:
    with path.open("wb") as file:
        for _ in range(int(megabytes * 2**20 / 2 / 2**20) + 1):
            file.write(b"a\n" * 2**20)
    return path


def spool_peak(input_path: Path, out: Path) -> tuple[int, float]:
    """Peak resident bytes and seconds of claiming a sweep folder for `input_path`: every text spooled, no model."""
    start = time.perf_counter()
    command = [sys.executable, "-c", SPOOL, str(input_path), str(out)]
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def peak_rss(input_path: Path, out: Path) -> tuple[int, float]:
    """Peak resident bytes and seconds of one sweep process over `input_path`."""
    command = [sys.executable, "-m", "analysis", "sweep", "--model", "all-MiniLM-L6-v2", "--input", str(input_path),
               "--out", str(out), "--limit", "20", "--reference", "position"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def main() -> None:
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = {
            "2 MB .txt": corpus_file(folder / "small.txt", 2),
            "200 MB .txt": corpus_file(folder / "large.txt", 200),
            "one 20 MB line": one_long_line(folder / "line.txt", 20),
        }
        for name, path in inputs.items():
            peak, seconds = peak_rss(path, folder / f"out-{path.stem}")
            report[name] = {"input_mb": path.stat().st_size / 2**20, "peak_gb": peak / 2**30, "seconds": seconds}
            print(name, json.dumps(report[name]))
        for name, path in {
            "spool 2 MB .txt": inputs["2 MB .txt"],
            "spool 200 MB of one-character lines": one_character_lines(folder / "tiny.txt", 200),
        }.items():
            peak, seconds = spool_peak(path, folder / f"spool-{path.stem}")
            report[name] = {"input_mb": path.stat().st_size / 2**20, "peak_gb": peak / 2**30, "seconds": seconds}
            print(name, json.dumps(report[name]))
    report["100 M tiny texts over 2 MB, spooling, GB"] = (
        report["spool 200 MB of one-character lines"]["peak_gb"] - report["spool 2 MB .txt"]["peak_gb"]
    )
    small = report["2 MB .txt"]["peak_gb"]
    report["200 MB over 2 MB, GB"] = report["200 MB .txt"]["peak_gb"] - small
    report["20 MB line over 2 MB, GB"] = report["one 20 MB line"]["peak_gb"] - small
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_corpus_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

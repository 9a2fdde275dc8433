"""Peak memory of each hostile case of issue 25, each in its own process (peak resident memory read from the
kernel, ru_maxrss, by a parent that runs nothing else), against the same command on a harmless input in the same
run:
- a 115 KB text (35,002 tokens) on a tiny Llama whose rotary positions allow 32,768 tokens, read as the app reads
  it (every stage, attention weights and head contexts kept; the lens), against a 10-word text. Before, it grew
  to 6.9 GB and failed to allocate 5.2 GB; now it is cut at the memory limit. The budget's own estimate of the
  cut text's pass is printed beside it, and of the uncut text's (what the position limit alone would allow);
- a sweep of one 20 MB line on a tiny Llama allowing 10^8 positions (before: 5.1 GB, then 22.9 TB asked for),
  against a sweep of two short lines;
- `export --overlap-n 1000000000` (before: 41.9 GB asked for) and a config declaring 100,000 layers (before:
  still building after 5 minutes at 1.9 GB): both refused before any weight loads.
100 M one-character texts are measured by bench_corpus_memory (spooling, +0.006 GB over the 2 MB case).

    .venv/bin/python -m benchmarks.bench_hostile_memory
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.runner import RESULTS

LONG_TEXT = "the cat sat on the mat " * 5000
SHORT_TEXT = "the cat sat on the mat and looked at the dog"

BUILD = """
import json, sys
from tests.synthetic import random_hf_model, sentencepiece_tokenizer
positions = int(sys.argv[2])
tokenizer = sentencepiece_tokenizer(decoder=True)
tokenizer.model_max_length = positions
shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 64, "max_position_embeddings": positions, "bos_token_id": 1, "eos_token_id": 2,
         "pad_token_id": 0}
random_hf_model("llama", shape, tokenizer, head=True).save_pretrained(sys.argv[1])
tokenizer.save_pretrained(sys.argv[1])
"""

APP_READ = """
import sys
import analysis
from analysis.capture.trace import EXTRAS, available_points, trace
lm = analysis.load_model(sys.argv[1])
run = trace(lm, open(sys.argv[2]).read(), available_points(lm, EXTRAS))
analysis.analyze(lm, run)
analysis.lens(lm, run)
print(len(run.tokens[0]), run.tokens[0].n_tokens_in_text, lm.pass_shape.bytes_for(len(run.tokens[0])),
      lm.pass_shape.bytes_for(min(run.tokens[0].n_tokens_in_text, lm.position_limit)))
"""


MEASURE_ANY = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr,
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def measured(command: list[str], refused: bool = False) -> tuple[int, float, str]:
    """Peak resident bytes, seconds and output of `command` in its own process: its stdout, or with `refused`
    its last error line (it must fail; otherwise it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE_ANY, *command], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    result = json.loads(done.stdout)
    if bool(result["code"]) != refused:
        raise SystemExit(f"{' '.join(command[:4])}… exited {result['code']}: {result['err'][-2000:]}")
    return result["peak"], seconds, result["err"].strip().splitlines()[-1] if refused else result["out"].strip()


def main() -> None:
    report: dict[str, dict] = {}
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name, positions in (("llama-32k", 32768), ("llama-1e8", 10**8)):
            subprocess.run([python, "-c", BUILD, str(folder / name), str(positions)], check=True, capture_output=True)
        (folder / "long.txt").write_text(LONG_TEXT)
        (folder / "short.txt").write_text(SHORT_TEXT)
        for case, text in (("app: 10-word text", "short.txt"), ("app: 115 KB text", "long.txt")):
            peak, seconds, said = measured([python, "-c", APP_READ, str(folder / "llama-32k"), str(folder / text)])
            kept, in_text, estimate, uncut = (int(x) for x in said.split())
            report[case] = {"peak_gb": peak / 2**30, "seconds": seconds, "tokens_kept": kept, "tokens_in_text": in_text,
                            "estimate_gb": estimate / 2**30, "uncut_estimate_gb": uncut / 2**30}  # fmt: skip
            print(case, json.dumps(report[case]))
        line = folder / "line.txt"
        line.write_text(SHORT_TEXT * (20 * 2**20 // len(SHORT_TEXT)) + "\n" + SHORT_TEXT + "\n")
        (folder / "two.txt").write_text(SHORT_TEXT + "\n" + SHORT_TEXT + "\n")
        for case, path in (("sweep: two short lines", "two.txt"), ("sweep: one 20 MB line", "line.txt")):
            command = [python, "-m", "analysis", "sweep", "--model", str(folder / "llama-1e8"), "--input",
                       str(folder / path), "--out", str(folder / f"out-{path}")]  # fmt: skip
            peak, seconds, _ = measured(command)
            report[case] = {"peak_gb": peak / 2**30, "seconds": seconds}
            print(case, json.dumps(report[case]))
        config = json.loads((folder / "llama-32k" / "config.json").read_text())
        (folder / "llama-32k" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 100_000}))
        refusals = {
            "export --overlap-n 1000000000": ["export", "--model", "all-MiniLM-L6-v2", "--text", SHORT_TEXT,
                                              "--overlap-n", "1000000000", "--out", str(folder / "x")],
            "export of a config with 100,000 layers": ["export", "--model", str(folder / "llama-32k"), "--text",
                                                       SHORT_TEXT, "--out", str(folder / "y")],
        }  # fmt: skip
        for case, arguments in refusals.items():
            peak, seconds, said = measured([python, "-m", "analysis", *arguments], refused=True)
            report[case] = {"peak_gb": peak / 2**30, "seconds": seconds, "refusal": said}
            print(case, json.dumps(report[case]))
    report["115 KB text over 10 words, GB"] = (
        report["app: 115 KB text"]["peak_gb"] - report["app: 10-word text"]["peak_gb"]
    )
    report["20 MB line over two lines, GB"] = (
        report["sweep: one 20 MB line"]["peak_gb"] - report["sweep: two short lines"]["peak_gb"]
    )
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_hostile_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

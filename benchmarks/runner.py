"""The command line every shape benchmark shares: a quick part on the roberta-base shape, an optional
roberta-large part, each printed, and the whole report saved to benchmarks/results/NAME.json."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from analysis.model.loaded import LoadedModel

RESULTS = Path(__file__).parent / "results"


def run(name: str, doc: str, quick: tuple[str, Callable[[], dict]], large: tuple[str, Callable[[], dict]]) -> None:
    """Parse `--skip-large`, run the `(key, function)` parts, print each and write `RESULTS/name.json`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-large", action="store_true", help="only the roberta-base shape part")
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"torch_threads": torch.get_num_threads()}
    for key, part in (quick,) if args.skip_large else (quick, large):
        report[key] = part()
        print(json.dumps(report[key], indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")


def timed_against_floor(lm: LoadedModel, tokens: int, ours: float, floor: float) -> dict:
    """What every speed report holds: the shape, our time, the floor's and their ratio (seconds)."""
    return {"tokens": tokens, "layers": lm.num_layers, "vocab": lm.vocab_size, "ours_s": ours, "floor_s": floor,
            "ours_over_floor": ours / floor}  # fmt: skip

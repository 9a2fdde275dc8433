"""The shipped corpus: varied English sentences written for this project, one per line."""

from __future__ import annotations

from pathlib import Path

CORPUS_FILE = Path(__file__).parent / "corpus.txt"


def corpus_sentences() -> list[str]:
    """The shipped sentences, stripped, empty lines left out."""
    return [line.strip() for line in CORPUS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]

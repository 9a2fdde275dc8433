"""Read a corpus of texts from a file: one per line (.txt), a `text` field (.jsonl), or a `text` column (.csv,
.parquet). Empty texts are skipped and counted; anything unreadable is a ValueError that says why."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.definitions import FORMATS


@dataclass(frozen=True)
class Texts:
    """The non-empty texts of a file, in file order, with how many empty ones were skipped."""

    texts: list[str]
    skipped_empty: int
    sha256: str  # of the file's bytes

    def described(self, name: str) -> str:
        """`2 texts of mine.txt (1 empty text skipped)`: what was read from the file `name`."""
        count = f"{len(self.texts):,} {'text' if len(self.texts) == 1 else 'texts'} of {name}"
        skipped = self.skipped_empty
        return count + (f" ({skipped:,} empty {'text' if skipped == 1 else 'texts'} skipped)" if skipped else "")


def _texts_column(frame: pd.DataFrame, path: Path) -> list[object]:
    if "text" not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise ValueError(f"{path} has no text column (columns: {found}).")
    return frame["text"].tolist()


def _raw_texts(path: Path) -> list[object]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return path.read_text(encoding="utf-8").splitlines()
    if suffix == ".jsonl":
        texts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                texts.append("")
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or "text" not in record:
                raise ValueError(f"{path}, line {number}: expected a JSON object with a text field.")
            texts.append(record["text"])
        return texts
    if suffix == ".csv":
        return _texts_column(pd.read_csv(path, dtype={"text": "string"}, keep_default_na=False), path)
    if suffix == ".parquet":
        return _texts_column(pd.read_parquet(path), path)
    kinds = "; ".join(f"{ext}: {meaning}" for ext, meaning in FORMATS.items())
    raise ValueError(f"{path} is not a file type Token Trails reads ({kinds}).")


def read_texts(path: str | Path, limit: int | None = None) -> Texts:
    """The non-empty texts of `path` (stripped of surrounding whitespace), at most `limit` of them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"No input file at {str(path)!r}.")
    try:
        raw = _raw_texts(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, pd.errors.ParserError, ValueError) as error:
        message = str(error) if isinstance(error, ValueError) and str(path) in str(error) else f"{path}: {error}"
        raise ValueError(f"Could not read the input: {message}") from error
    except Exception as error:  # pyarrow and pandas raise their own kinds for a damaged file
        raise ValueError(f"Could not read the input {path}: {type(error).__name__}: {error}") from error
    texts, skipped = [], 0
    for value in raw:
        text = value.strip() if isinstance(value, str) else ""
        if text:
            texts.append(text)
        else:
            skipped += 1
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise ValueError(f"{path} holds no text to analyse ({skipped} empty entries).")
    return Texts(texts=texts, skipped_empty=skipped, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def texts_from_upload(name: str, data: bytes, max_chars: int) -> Texts:
    """The texts of an uploaded file (its type from `name`), refused past `max_chars` characters in all, with
    the command that runs a corpus of any size."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        found = read_texts(path)
    total = sum(len(text) for text in found.texts)
    if total > max_chars:
        raise ValueError(
            f"{name} holds {total:,} characters of text, over this app's limit of {max_chars:,} (max_text_chars). "
            "For a corpus of any size, run: python -m analysis sweep --model MODEL --input FILE --out DIR."
        )
    return found

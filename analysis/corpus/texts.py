"""Read a corpus of texts from a file: one per line (.txt), a `text` field (.jsonl), or a `text` column (.csv,
.parquet). Empty texts are skipped and counted; a value that is not a string is skipped and reported by its
row; anything unreadable is a ValueError that names the line and says why.

Every reader streams: the file is copied once while its SHA-256 is taken, and the texts are parsed from that
copy, so what is analysed is exactly the bytes the hash names (a file replaced meanwhile changes nothing), and
memory stays bounded however large the file."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.definitions import FORMATS
from analysis.hashing import hashing_copy

_ROWS_PER_BATCH = 4096
NOT_TEXT_LISTED = 100
"""How many rows whose text is not a string are listed by number (all are counted)."""


@dataclass
class CorpusCount:
    """What reading a corpus file found besides its texts."""

    sha256: str = ""  # of the file's bytes
    skipped_empty: int = 0
    not_text: int = 0  # rows whose text is a number, null, a list, …
    not_text_rows: list[str] = field(default_factory=list)  # the first NOT_TEXT_LISTED: "row 5 (a number)"

    def notes(self) -> list[str]:
        """What was skipped, as sentences: `1 empty text skipped`, `2 rows whose text is not a string skipped
        (row 3 (a number), row 7 (null))`."""
        notes = []
        if self.skipped_empty:
            notes.append(f"{self.skipped_empty:,} empty {'text' if self.skipped_empty == 1 else 'texts'} skipped")
        if self.not_text:
            listed = ", ".join(self.not_text_rows) + (", …" if self.not_text > len(self.not_text_rows) else "")
            rows = "row whose text is" if self.not_text == 1 else "rows whose text is"
            notes.append(f"{self.not_text:,} {rows} not a string skipped ({listed})")
        return notes


@dataclass(frozen=True)
class Texts:
    """The non-empty texts of a file, in file order, with what was skipped."""

    texts: list[str]
    count: CorpusCount

    @property
    def skipped_empty(self) -> int:
        return self.count.skipped_empty

    @property
    def sha256(self) -> str:
        return self.count.sha256

    def described(self, name: str) -> str:
        """`2 texts of mine.txt (1 empty text skipped)`: what was read from the file `name`."""
        count = f"{len(self.texts):,} {'text' if len(self.texts) == 1 else 'texts'} of {name}"
        notes = self.count.notes()
        return count + (f" ({'; '.join(notes)})" if notes else "")


def check_format(path: Path) -> None:
    """Refuse a file type Token Trails does not read, naming the ones it does."""
    if path.suffix.lower() not in FORMATS:
        kinds = "; ".join(f"{ext}: {meaning}" for ext, meaning in FORMATS.items())
        raise ValueError(f"{path} is not a file type Token Trails reads ({kinds}).")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", newline=None) as reading:
        for number, line in enumerate(reading, start=1):
            yield number, line.rstrip("\n")


def _jsonl_values(path: Path) -> Iterator[tuple[str, object]]:
    for number, line in _lines(path):
        if not line.strip():
            yield f"line {number}", ""
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path.name}, line {number}: not valid JSON ({error.msg}, column {error.colno})."
            ) from None
        if not isinstance(record, dict) or "text" not in record:
            raise ValueError(f"{path.name}, line {number}: expected a JSON object with a text field.")
        yield f"line {number}", record["text"]


def _column_values(frames: Iterator[pd.DataFrame], path: Path) -> Iterator[tuple[str, object]]:
    row = 1
    for frame in frames:
        if "text" not in frame.columns:
            found = ", ".join(map(str, frame.columns)) or "none"
            raise ValueError(f"{path.name} has no text column (columns: {found}).")
        for value in frame["text"].tolist():
            yield f"row {row}", value
            row += 1


def _values(path: Path) -> Iterator[tuple[str, object]]:
    """(where, value) for every entry of the file, streamed: `line 51` or `row 7`, and what it holds."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return ((f"line {number}", line) for number, line in _lines(path))
    if suffix == ".jsonl":
        return _jsonl_values(path)
    if suffix == ".csv":
        frames = pd.read_csv(path, dtype={"text": "string"}, keep_default_na=False, chunksize=_ROWS_PER_BATCH)
        return _column_values(frames, path)
    parquet = pq.ParquetFile(path)
    if "text" not in parquet.schema_arrow.names:
        raise ValueError(f"{path.name} has no text column (columns: {', '.join(parquet.schema_arrow.names)}).")
    batches = parquet.iter_batches(batch_size=_ROWS_PER_BATCH, columns=["text"])
    return _column_values((batch.to_pandas() for batch in batches), path)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _kind(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple | dict) or hasattr(value, "__len__"):
        return "a list or object"
    return type(value).__name__


def stream_texts(copy: Path, count: CorpusCount) -> Iterator[str]:
    """The non-empty texts (stripped) of the file copy `copy`, counting into `count` what is skipped. Raises
    ValueError naming the line or row of anything unreadable."""
    try:
        for where, value in _values(copy):
            if not isinstance(value, str):
                count.not_text += 1
                if len(count.not_text_rows) < NOT_TEXT_LISTED:
                    count.not_text_rows.append(f"{where} ({_kind(value)})")
                continue
            text = value.strip()
            if not text:
                count.skipped_empty += 1
                continue
            if surrogate := _SURROGATE.search(text):  # JSON may escape half a character pair; no file can hold it
                raise ValueError(
                    f"{where.capitalize()} of {copy.name} holds a lone surrogate ({surrogate[0]!r}), "
                    "half of a character pair and no character of its own: fix that text or remove it."
                )
            yield text
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"Could not read the input {copy.name}: it is empty (a .csv needs a header row with a text "
                         "column).") from error  # fmt: skip
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Could not read the input {copy.name}: it is not UTF-8 text (byte {error.object[error.start]:#x}: "
            f"{error.reason}); save it as UTF-8."
        ) from error
    except pa.ArrowException as error:  # before ValueError: pyarrow's ArrowInvalid is one
        raise ValueError(
            f"Could not read the input {copy.name}: it is not a Parquet file, or a damaged one "
            f"({type(error).__name__}); write it again with pandas' to_parquet, or give the texts as .txt, .jsonl or "
            ".csv."
        ) from error
    except ValueError:
        raise
    except (OSError, pd.errors.ParserError) as error:
        raise ValueError(f"Could not read the input {copy.name}: {error}") from error
    except Exception as error:  # pyarrow and pandas raise their own kinds for a damaged file
        raise ValueError(f"Could not read the input {copy.name}: {type(error).__name__}: {error}") from error


def read_corpus(
    path: str | Path, use: Callable[[Iterator[str], CorpusCount], None], folder: Path | None = None
) -> None:
    """Copy the corpus file `path` (into `folder`, else a temporary folder, removed after), hashing it, and call
    `use(texts, count)` with the stream of its texts and the count it fills, both from that copy."""
    source = Path(path).expanduser()
    check_format(source)
    if not source.is_file():
        raise ValueError(f"No input file at {str(source)!r}.")
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        copy = Path(scratch) / source.name  # named like the input, so messages name it
        try:
            sha256 = hashing_copy(source, copy)
        except OSError as error:
            raise ValueError(f"Could not read the input {source}: {error.strerror or error}.") from error
        count = CorpusCount(sha256=sha256)
        use(stream_texts(copy, count), count)


def read_texts(path: str | Path, limit: int | None = None) -> Texts:
    """The non-empty texts of `path` (stripped of surrounding whitespace), at most `limit` of them, in memory:
    for files of a size that fits it (the app's uploads, the tests); a sweep streams (`read_corpus`)."""
    found: list[str] = []
    counted: list[CorpusCount] = []

    def collect(texts: Iterator[str], count: CorpusCount) -> None:
        found.extend(islice(texts, limit))
        counted.append(count)

    read_corpus(path, collect)
    if not found:
        raise no_texts_error(Path(path), counted[0])
    return Texts(found, counted[0])


def no_texts_error(path: Path, count: CorpusCount) -> ValueError:
    """The error for a corpus file with no text to analyse, saying what it held instead."""
    return ValueError(f"{path.name} holds no text to analyse ({'; '.join(count.notes()) or 'it is empty'}).")


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

"""SHA-256 of files, read in chunks: what a corpus copy, a sweep's shards and a fitted lens are checked against."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_COPY_CHUNK = 1 << 20


def hashing_copy(source: Path, target: Path) -> str:
    """Copy `source` to `target` in chunks, returning the SHA-256 of exactly the bytes copied; fsynced."""
    digest = hashlib.sha256()
    with source.open("rb") as reading, target.open("wb") as writing:
        while chunk := reading.read(_COPY_CHUNK):
            digest.update(chunk)
            writing.write(chunk)
        writing.flush()
        os.fsync(writing.fileno())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as reading:
        while chunk := reading.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

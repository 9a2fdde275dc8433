"""Files a sweep can trust after a crash or a full disk: JSON written whole or not at all, renames made durable,
and the lock that lets one process at a time write into a folder."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK = ".lock"


def _fsync_folder(folder: Path) -> None:
    if os.name == "posix":  # a folder cannot be opened for fsync on Windows
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def replace_durably(temporary: Path, final: Path) -> None:
    """Rename a complete, fsynced file into place and make the rename itself durable."""
    os.replace(temporary, final)
    _fsync_folder(final.parent)


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` so that a crash or a full disk leaves the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as file:
        file.write(json.dumps(data, indent=2) + "\n")
        file.flush()
        os.fsync(file.fileno())
    replace_durably(temporary, path)


def read_json(path: Path, advice: str) -> dict:
    """A JSON object from `path`; a damaged file is a ValueError naming it, followed by `advice`."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}): {advice}") from error
    if not isinstance(found, dict):
        raise ValueError(f"{path} is damaged (not a JSON object): {advice}")
    return found


class FolderLock:
    """`DIR/.lock`: who runs a sweep into DIR now. Created exclusively; a lock whose process is gone (same host)
    is stale and taken over; released on `release()`."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.held = False

    def acquire(self) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    raise ValueError(self._held_message()) from None
                self.path.unlink(missing_ok=True)
                continue
            except PermissionError as error:
                message = f"Cannot write to {self.path.parent}: {error.strerror}; pick a writable --out folder."
                raise ValueError(message) from None
            with os.fdopen(descriptor, "w") as file:
                file.write(json.dumps(holder) + "\n")
            self.held = True
            return
        raise ValueError(self._held_message())

    def _holder(self) -> dict:
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
            return found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            return {}

    def _stale(self) -> bool:
        holder = self._holder()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return not holder  # another host's lock cannot be checked from here; an unreadable one is a crash's
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # the process exists, run by someone else
            return False
        return False

    def _held_message(self) -> str:
        holder = self._holder()
        who = f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
        return (
            f"{self.path.parent} is in use by another sweep ({who}): wait for it to finish, or, if that process is "
            f"gone, delete {self.path}."
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

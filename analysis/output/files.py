"""Files a sweep can trust after a crash or a full disk: JSON written whole or not at all, renames made durable,
and the lock that lets one process at a time write into a folder."""

from __future__ import annotations

import json
import os
import socket
import sys
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
    """`DIR/.lock`: one sweep at a time writes into DIR. The lock is the operating system's (`flock` on the lock
    file; on Windows `msvcrt.locking`), so it is taken by exactly one process however many race for it, and it is
    released when its process ends, however it ends: a killed run leaves no lock to take over. After taking it, the
    holder checks that the path still names the file it locked (a release unlinks it) and writes who it is, which a
    refused sweep names."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self.descriptor is not None

    def acquire(self) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(100):  # another process released (and unlinked) it between our open and our lock: again
            descriptor = self._open()
            if not _try_lock(descriptor):
                os.close(descriptor)
                raise ValueError(self._held_message())
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(descriptor)
                continue
            os.ftruncate(descriptor, 0)
            os.write(descriptor, (json.dumps(holder) + "\n").encode())
            os.fsync(descriptor)
            self.descriptor = descriptor
            return
        raise ValueError(self._held_message())

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise ValueError(
                f"{self.path} is a folder, where a sweep keeps its lock file: remove it, or pick another --out folder."
            ) from None
        except OSError as error:
            raise ValueError(
                f"Cannot write to {self.path.parent} ({error.strerror}), where a sweep keeps its lock file "
                f"{LOCK}: pick a writable --out folder."
            ) from None

    def _holder(self) -> dict:
        try:
            found = json.loads(self.path.read_text(encoding="utf-8"))
            return found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            return {}

    def _held_message(self) -> str:
        holder = self._holder()
        who = (
            f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
            if holder
            else "a process that is starting"
        )
        return f"{self.path.parent} is in use by another sweep ({who}): wait for it to finish, or stop that process."

    def release(self) -> None:
        """Unlink the lock file while still holding it, then let go: a process that opened the old file finds
        the path gone or renamed to a new file when it checks, and tries again."""
        if self.descriptor is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.descriptor)  # closing releases the lock
            self.descriptor = None


def _try_lock(descriptor: int) -> bool:
    """Take the operating system's exclusive lock on an open file without waiting; False where another holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError, OSError):
        return False
    return True

"""Ray's helper processes end with the sweep that started them, however the sweep ends.

A local Ray started by a sweep runs a GCS server, a raylet, agents and workers as the sweep's descendants. Killed
with SIGKILL, the sweep can clean up nothing, and Ray's agents only notice minutes later. So before Ray starts,
the sweep starts this watcher with a pipe it alone holds open: every `SCAN_SECONDS` the watcher records the
sweep's new descendants (by process id and start time, so a reused id is never mistaken for one of them); when
the pipe closes (the sweep exited, returned or was killed) it stops every recorded process still alive and their
descendants: SIGTERM, then SIGKILL after `GRACE_SECONDS`. Linux only (it reads /proc); elsewhere it is not started.

    python analysis/output/reaper.py SWEEP_PID [PID_TO_LEAVE ...]
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SCAN_SECONDS = 0.5
GRACE_SECONDS = 3.0
PROC = Path("/proc")


def watch_descendants() -> subprocess.Popen | None:
    """Start the watcher for this process's descendants from now on (the children it has now are left alone);
    None where /proc is missing. Close its stdin (or exit) to have them stopped."""
    if not (PROC / str(os.getpid()) / "stat").exists():
        return None
    leave = [str(pid) for pid in _children(_table(), os.getpid())]
    return subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), *leave],  # by path: it imports nothing of the package
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the sweep's terminal does not stop the watcher before its work
    )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent id, start time in clock ticks) of process `pid`, or None when it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _table() -> dict[int, tuple[int, int]]:
    """Every process now: id -> (parent id, start time)."""
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def _children(table: dict[int, tuple[int, int]], parent: int) -> list[int]:
    return [pid for pid, (ppid, _) in table.items() if ppid == parent]


def _descendants(
    table: dict[int, tuple[int, int]], roots: set[int], skip: frozenset[int] = frozenset()
) -> dict[int, int]:
    """Every process below `roots` in `table`, except `skip` and what is below them: id -> start time."""
    found: dict[int, int] = {}
    frontier = list(roots)
    while frontier:
        for child in _children(table, frontier.pop()):
            if child not in found and child not in skip:
                found[child] = table[child][1]
                frontier.append(child)
    return found


def _alive(known: dict[int, int], table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """The recorded processes still running (same id and start time)."""
    return {pid: start for pid, start in known.items() if table.get(pid, (0, None))[1] == start}


def _stop(known: dict[int, int]) -> None:
    """SIGTERM every recorded process still alive and its descendants; SIGKILL those left after the grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        table = _table()
        alive = _alive(known, table)
        alive |= _descendants(table, set(alive))
        for pid in alive:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, sig)
        known = alive
        deadline = time.monotonic() + GRACE_SECONDS
        while sig == signal.SIGTERM and time.monotonic() < deadline and _alive(known, _table()):
            time.sleep(0.1)


def main(argv: list[str]) -> None:
    sweep, leave = int(argv[0]), frozenset({os.getpid(), *map(int, argv[1:])})
    known: dict[int, int] = {}
    while True:
        table = _table()
        known |= _descendants(table, {sweep} | set(_alive(known, table)), leave)
        ready, _, _ = select.select([sys.stdin.buffer], [], [], SCAN_SECONDS)
        if ready and not os.read(sys.stdin.fileno(), 1):  # end of file: the sweep has ended, however it did
            break
    _stop(known)


if __name__ == "__main__":
    main(sys.argv[1:])

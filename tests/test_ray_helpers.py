"""Ray's helper processes end with the sweep that started them, however it ends: the watcher
(`analysis.output.reaper`) stops what the sweep started once the sweep is gone, a SIGKILL included, and leaves
alone what the sweep's process had started before it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.output import reaper
from tests.test_cli import ROOT
from tests.test_sweep import TEXTS, texts_file

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watcher reads /proc (Linux)")

SWEEP_LIKE = """
import os, signal, subprocess, sys, time
from analysis.output.reaper import watch_descendants
before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # started before: left alone
watcher = watch_descendants()
child = subprocess.Popen([sys.executable, "-c", '''
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a helper that ignores SIGTERM is killed after the grace
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # and its own child too
time.sleep(60)
'''])
print(before.pid, watcher.pid, flush=True)
time.sleep(60)
"""


def _alive(pids: dict[int, int]) -> dict[int, int]:
    return reaper._alive(pids, reaper._table())


def _wait_until_gone(pids: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


def test_what_a_killed_process_started_after_the_watcher_is_stopped_and_nothing_else():
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP_LIKE], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    before, watcher = map(int, sweep.stdout.readline().split())
    time.sleep(2 * reaper.SCAN_SECONDS + 1)  # the helpers are up and seen
    table = reaper._table()
    started = reaper._descendants(table, {sweep.pid}, frozenset({before, watcher}))
    assert len(started) == 2  # the helper and its child
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert not _wait_until_gone(started, reaper.GRACE_SECONDS + 10)
    assert before in reaper._table()  # the process started before the watcher runs on
    os.kill(before, signal.SIGKILL)
    assert not _wait_until_gone({watcher: table[watcher][1]}, 5)  # the watcher's work is done


@pytest.mark.parametrize("how", ["SIGKILL to the sweep alone", "the sweep ends"])
def test_a_local_rays_processes_end_with_the_sweep(tmp_path, how):
    killed = how == "SIGKILL to the sweep alone"
    path = texts_file(tmp_path, TEXTS * (40 if killed else 4))  # a killed sweep must still be running when killed
    args = [sys.executable, "-m", "analysis", "sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out",
            str(tmp_path / "out"), "--engine", "ray", "--actors", "1", "--shard-size", "20"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    sweep = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    rows = tmp_path / "out" / "rows"
    while not (rows.exists() and any(rows.glob("shard-*"))) and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    table = reaper._table()
    started = {pid: start for pid, start in reaper._descendants(table, {sweep.pid}).items()}
    assert len(started) >= 4  # Ray's GCS server, raylet, agents, the actor and the watcher
    if killed:
        os.kill(sweep.pid, signal.SIGKILL)
    assert sweep.wait(timeout=300) in (0, -signal.SIGKILL)
    assert not _wait_until_gone(started, reaper.GRACE_SECONDS + 15)

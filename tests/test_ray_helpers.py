"""Ray's helper processes end with the sweep that started them, however it ends: the watcher
(`analysis.output.reaper`) stops what the sweep started once the sweep is gone, a SIGKILL included, and leaves
alone what the sweep's process had started before it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.output import reaper
from tests.test_cli import ROOT, run_cli
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


def _ray_sweep(tmp_path: Path, texts: list[str], *options: str) -> tuple[subprocess.Popen, dict[int, int]]:
    """A sweep on a local Ray in its own process, once its first shard is written, and the processes it started
    by then (pid -> start time)."""
    path = texts_file(tmp_path, texts)
    args = [sys.executable, "-m", "analysis", "sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out",
            str(tmp_path / "ray"), "--engine", "ray", "--shard-size", "20", *options]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with (tmp_path / "stderr.txt").open("w") as stderr:  # a file, not a pipe: Ray's chatter cannot fill it
        sweep = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 240
    rows = tmp_path / "ray" / "rows"
    while not (rows.exists() and any(rows.glob("shard-*"))) and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    started = dict(reaper._descendants(reaper._table(), {sweep.pid}))
    assert len(started) >= 4  # Ray's GCS server, raylet, agents, the actors and the watcher
    return sweep, started


def test_a_local_rays_processes_end_when_its_sweep_is_killed(tmp_path):
    sweep, started = _ray_sweep(tmp_path, TEXTS * 40, "--actors", "1")  # still running when killed
    os.kill(sweep.pid, signal.SIGKILL)
    assert sweep.wait(timeout=300) == -signal.SIGKILL
    assert not _wait_until_gone(started, reaper.GRACE_SECONDS + 15)


def test_the_ray_engine_gives_the_local_engines_rows_and_its_processes_end_with_it(tmp_path):
    """Two shards on an actor (plain cosine: no corpus statistics to compute first): the rows equal the local
    engine's, and every process the sweep started is gone once it ends."""
    methods = ["--method", "cosine"]
    sweep, started = _ray_sweep(tmp_path, TEXTS * 4, "--actors", "1", *methods)
    assert sweep.wait(timeout=300) == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert not _wait_until_gone(started, reaper.GRACE_SECONDS + 15)
    local = run_cli("sweep", "--model", "all-MiniLM-L6-v2", "--input", str(tmp_path / "texts.txt"), "--out",
                    str(tmp_path / "local"), "--shard-size", "20", *methods)  # fmt: skip
    assert local.returncode == 0, local.stderr
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "ray" / "rows"), pd.read_parquet(tmp_path / "local" / "rows")
    )
    assert json.loads((tmp_path / "ray" / "provenance.json").read_text())["runs"][-1]["engine"] == "ray"

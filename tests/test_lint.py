"""The tree stays `ruff check`, `ruff format` and `mypy` clean (run as part of the suite, so CI enforces it)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_type_checker_finds_nothing():
    """mypy (pinned in requirements-dev.txt, configured in pyproject.toml) over analysis/ and dashboard/: the
    package front's lazy names, every settings record and derived key are followed, with no errors."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

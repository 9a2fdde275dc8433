"""The README's scripting example runs as written against a real CLI export and draws the app's chart."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"README.md has no {marker} block"
    return block.group(1)


def test_the_chart_example_reproduces_a_chart_from_the_exported_csv(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    export = [sys.executable, "-m", "analysis", "export", "--model", "sentence-transformers/all-MiniLM-L6-v2",
              "--text", "Time flies like an arrow. Fruit flies like a banana.", "--out", "results"]  # fmt: skip
    subprocess.run(export, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    example = tmp_path / "example.py"
    example.write_text(readme_block("chart-example"))
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rank.png").read_bytes().startswith(b"\x89PNG")

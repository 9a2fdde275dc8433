"""The README's scripting example runs as written against a real CLI export and draws the app's chart."""

import re
import subprocess
import sys
from pathlib import Path

from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert block, f"README.md has no {marker} block"
    return block.group(1)


def test_the_chart_example_reproduces_a_chart_from_the_exported_csv(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    text = "Time flies like an arrow. Fruit flies like a banana."
    export = run_cli("export", "--model", "all-MiniLM-L6-v2", "--text", text, "--out", str(tmp_path / "results"))
    assert export.returncode == 0, export.stderr
    example = tmp_path / "example.py"
    example.write_text(readme_block("chart-example"))
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rank.png").read_bytes().startswith(b"\x89PNG")


def models_table() -> list[dict[str, str]]:
    """README's *Models it reads* table, one dict per row keyed by its header."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- models-table -->\n(.*?)\n<!-- /models-table -->", text, re.S)
    assert block, "README.md has no models-table block"
    header, _, *rows = block.group(1).splitlines()
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    return [dict(zip(cells(header), cells(row), strict=True)) for row in rows]


def test_the_models_table_names_every_family_once_as_the_table_reads_it():
    from analysis.model.architectures import FAMILIES

    rows = {row["model type"].strip("`"): row for row in models_table()}
    assert len(rows) == len(models_table()) and set(rows) == set(FAMILIES)
    for model_type, row in rows.items():
        family = FAMILIES[model_type]
        assert row["block"] == family.kind, model_type
        no_attn_output = family.kind in ("parallel", "norm_after")  # no norm reads attn_residual
        assert row["stages"] == ("all but attn_output" if no_attn_output else "all four"), model_type
        assert row["lens through"].startswith("causal LM" if family.causal else "masked LM"), model_type
        assert row["example hub ids"] and row["smallest to try"], model_type


def test_each_rows_stages_references_and_lens_are_what_a_tiny_model_of_its_type_offers(family_folder):
    """Every type with a tiny fixture: loaded with its head like a user's folder, it offers what its row says."""
    import analysis
    from tests.synthetic import TINY_FAMILIES

    rows = {row["model type"].strip("`"): row for row in models_table()}
    for model_type in TINY_FAMILIES:
        found = analysis.capabilities(analysis.load_model(family_folder(model_type, head=True)))
        listed = rows[model_type]["references"].split(" (")[0].split(", ")
        assert sorted(found.references) == sorted(listed), model_type
        assert ("attn_output" in found.stages) == (rows[model_type]["stages"] == "all four"), model_type
        assert found.lens, model_type
    analysis.release_models()

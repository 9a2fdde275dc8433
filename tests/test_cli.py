"""python -m analysis export: writes documented tables and provenance; bad options fail in one line."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.data import corpus_sentences
from analysis.definitions import EXPORT_FILES

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` run in this process (argument errors included): its exit code, stdout and
    stderr. Everything a separate process adds (torch's import, --help's speed) is tested with `run_process`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit:
            code = exit.code
    return subprocess.CompletedProcess(["python", "-m", "analysis", *args], code, out.getvalue(), err.getvalue())


def run_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` as a separate process, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that report an error: one, and the last, whatever progress lines came before it."""
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("python -m analysis: error:")]
    assert errors and lines[-1] == errors[-1], done.stderr
    return errors


def test_help_answers_without_loading_torch():
    """`--help` imports only the standard library and `analysis.definitions` (fast on any machine)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "analysis", "sweep", "--help"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "--method" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert imported.isdisjoint({"torch", "transformers", "pandas", "numpy", "tqdm", "streamlit"}), imported


def test_export_says_what_it_is_doing(tmp_path):
    done = run_cli("export", "--model", "all-MiniLM-L6-v2", "--text", "Time flies.", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    steps = done.stderr.strip().splitlines()
    assert steps[0] == "loading all-MiniLM-L6-v2…"
    assert steps[1].startswith("tracing the text through 6 layers") and "30,522 vocabulary items" in steps[1]
    assert steps[2] == f"writing 4 files to {tmp_path / 'o'}…"


def test_export_writes_tables_and_provenance(tmp_path):
    out = tmp_path / "out"
    done = run_cli(
        "export", "--model", "sentence-transformers/all-MiniLM-L6-v2", "--text", "Time flies like an arrow.",
        "--stage", "layer_output", "--reference", "embedding", "--top-k", "4", "--overlap-n", "12", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name, columns in EXPORT_FILES.items():
        frame = pd.read_csv(out / name)
        assert list(frame.columns) == list(columns)
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 6 * 8  # 6 layers x ([CLS] + 6 tokens + [SEP])
    assert len(pd.read_csv(out / "neighbors.csv")) == 6 * 8 * 4
    assert pd.read_csv(out / "overlap.csv")["n"].eq(12).all()
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert provenance["stage"] == "layer_output" and provenance["reference"] == "embedding"
    assert provenance["dtype"] == "float32" and provenance["truncated"] is False
    assert "revision" in provenance and provenance["analysis_version"]


def test_export_with_a_geometry_records_it_and_its_background(tmp_path):
    out = tmp_path / "out"
    done = run_cli(
        "export", "--model", "all-MiniLM-L6-v2", "--text", "Time flies like an arrow.", "--geometry", "no_rogue",
        "--rogue-k", "2", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["geometry"] == "no_rogue" and provenance["rogue_k"] == 2
    corpus = provenance["background_corpus"]
    assert corpus["file"] == "corpus.txt" and corpus["sentences"] == len(corpus_sentences()) and corpus["tokens"] > 1000
    assert len(corpus["sha256"]) == 64
    bad = run_cli("export", "--model", "all-MiniLM-L6-v2", "--text", "x", "--geometry", "whitened", "--out", str(out))
    assert bad.returncode == 2 and "invalid choice: 'whitened'" in bad.stderr


def test_help_explains_every_option_and_column():
    done = run_cli("export", "--help")
    assert done.returncode == 0
    for text in ("--model", "--text", "--stage", "--reference", "--top-k", "--overlap-n", "--out", "attn_residual"):
        assert text in done.stdout
    for columns in EXPORT_FILES.values():
        for column in columns:
            assert column in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["export", "--model", "x", "--text", "t", "--out", "o", "--top-k", "0"],
            "expected a whole number of at least 1",
        ),
        (["export", "--model", "x", "--text", "t", "--out", "o", "--stage", "middle"], "invalid choice: 'middle'"),
        (["export", "--text", "t", "--out", "o"], "the following arguments are required: --model"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_options_give_a_one_line_error(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_a_bad_model_or_text_gives_a_one_line_error(tmp_path):
    for args, message in [
        (["--model", "https://x.org/m", "--text", "t"], "is a URL"),
        (["--model", "all-MiniLM-L6-v2", "--text", "   "], "text is empty"),
    ]:
        done = run_cli("export", *args, "--out", str(tmp_path))
        assert done.returncode == 1
        assert error_lines(done) == [error_lines(done)[0]] and message in error_lines(done)[0]


def test_a_stage_or_reference_the_model_lacks_names_what_it_has(tmp_path, family_folder):
    """A decoder export works; asking a parallel block for attn_output fails in one line naming its stages."""
    decoder = str(family_folder("gpt_neox"))
    done = run_cli(
        "export", "--model", decoder, "--text", "Time flies.", "--stage", "layer_output", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "provenance.json").read_text())["architecture"] == "GPTNeoXModel"
    done = run_cli("export", "--model", decoder, "--text", "t", "--stage", "attn_output", "--out", str(tmp_path))
    assert done.returncode == 1 and len(error_lines(done)) == 1
    assert (
        "has no stage 'attn_output'" in done.stderr
        and "It has: layer_input, attn_residual, layer_output" in done.stderr
    )


def test_progress_is_a_bar_in_a_terminal_and_whole_lines_elsewhere(monkeypatch):
    from analysis import progress

    log = io.StringIO()
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    with progress.progress_bar(4, "sweep", "text", file=log) as bar:
        bar.update(1)
        bar.update(3)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[-1].startswith("sweep: 4 of 4 texts (100%)")
    assert lines[0].startswith("sweep: 1 of 4 texts (25%)") and "s left" in lines[0]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert type(progress.progress_bar(4, "sweep", "text", file=Terminal())).__name__ == "tqdm"


def test_a_sweep_is_refused_before_its_folder_is_made(tmp_path):
    """Settings the model cannot run (the lens without a head, rogue_k past its width) and a missing input are
    refused before --out exists; a missing input before the model loads. The corrected command then runs."""
    texts = tmp_path / "texts.txt"
    texts.write_text("The cat sat on the mat.\nA dog ran.\n")
    out = tmp_path / "out"
    base = ["sweep", "--model", "all-MiniLM-L6-v2", "--out", str(out), "--batch-tokens", "64"]
    for extra, said in ((["--lens"], "holds no masked-LM head"), (["--rogue-k", "1000"], "rogue_k")):
        done = run_cli(*base, "--input", str(texts), *extra)
        assert done.returncode == 1 and said in error_lines(done)[0], done.stderr
        assert not out.exists()
    missing = run_cli(*base, "--input", str(tmp_path / "nothing.txt"))
    assert missing.returncode == 1 and "No input file at" in error_lines(missing)[0]
    assert "loading" not in missing.stderr and not out.exists()
    done = run_cli(*base, "--input", str(texts))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("loading ") == 1


def test_export_refuses_lens_options_without_the_lens(tmp_path):
    for extra in (["--lens-masked"], ["--lens-target", "next"]):
        done = run_cli("export", "--model", "all-MiniLM-L6-v2", "--text", "A cat.", "--out", str(tmp_path), *extra)
        assert done.returncode == 1 and "add --lens" in error_lines(done)[0]
        assert "loading" not in done.stderr


def test_sweep_progress_moves_per_batch_in_whole_texts(tmp_path):
    """40 texts in one shard, in a log: a line once the first batch of texts is done (with a rate and the time
    left), not only one per 1000-text shard; counts in whole texts (never 15.107719928186714)."""
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(corpus_sentences()[:40]))
    done = run_cli("sweep", "--model", "all-MiniLM-L6-v2", "--input", str(texts), "--out", str(tmp_path / "out"),
                   "--batch-tokens", "256")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("sweep: ")]
    assert lines[-1].startswith("sweep: 40 of 40 texts (100%)")
    first = re.fullmatch(r"sweep: (\d+) of 40 texts \(\d+%\), [\d.]+ texts/s, about [\d,]+ s left", lines[0])
    assert first and 0 < int(first[1]) < 40, lines


def test_the_command_lines_progress_counts_whole_units(monkeypatch):
    """The counting engine reports fractions of a batch (15.107719928186714 of 110 sentences); the terminal's
    bar counts whole sentences."""
    from analysis.__main__ import _counter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    on_progress, close = _counter("verdict", "sentence")
    for done in (3.7, 15.107719928186714, 60.5, 110):
        time.sleep(0.12)  # past tqdm's least interval between redraws
        on_progress(done, 110)
    close()
    shown = terminal.getvalue()
    assert "15/110" in shown and "110/110" in shown
    assert not re.search(r"\d\.\d+/110", shown), shown

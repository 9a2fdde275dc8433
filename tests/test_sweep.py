"""Corpus sweeps: batched rows equal `analyze` on each text alone, summaries equal the verdict's, every input
format reads the same texts, and a stopped sweep continues to exactly one row per reading."""

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.capture.tokens import length_batches
from analysis.corpus.counts import shares_from_counts, spike_counts
from analysis.corpus.engine import batch_rows
from analysis.corpus.texts import read_texts
from analysis.data import corpus_sentences
from analysis.definitions import ROW_COLUMNS
from analysis.output.sweep import SweepReport, open_sweep, shard_path, write_shard
from analysis.report.original_demo import original_demo
from analysis.settings import SweepSettings
from analysis.spikes import token_spikes
from analysis.wordclass import word_classes
from tests.numerics import COSINE32
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
TEXTS = corpus_sentences()[:7]
SETTINGS = SweepSettings(reference="position", methods=("original_demo", "cosine", "no_rogue"))


def alone(lm, text: str, method: str) -> analysis.AnalysisResult:
    """One text on its own: `original_demo`, or `analyze` under the method's geometry."""
    if method == "original_demo":
        return original_demo(lm, text)
    return analysis.analyze(lm, text, stage=SETTINGS.stage, reference=SETTINGS.reference, geometry=method,
                            rogue_k=SETTINGS.rogue_k, top_k=1, overlap_n=1)  # fmt: skip


def spikes_alone(lm, text: str, method: str) -> pd.DataFrame:
    """Layer, word class and spike flag of every token of one text analysed alone."""
    result = alone(lm, text, method)
    spikes = token_spikes(result.metrics)
    return spikes.assign(word_class=spikes["position"].map(word_classes(result.tokens)))


def run_sweep(lm, input_path: Path, out: Path, settings: SweepSettings, *, shard_size: int = 1000,
              limit: int | None = None, batch_tokens: int = 4096) -> SweepReport:  # fmt: skip
    """A whole sweep in one call, as a script runs it: open (lock, check, spool), run, release."""
    with open_sweep(out, input_path, model=lm.name, settings=settings, shard_size=shard_size, limit=limit) as sweep:
        return sweep.run(lm, batch_tokens=batch_tokens)


def texts_file(folder: Path, texts: list[str] = TEXTS) -> Path:
    path = folder / "texts.txt"
    path.write_text("\n".join([*texts[:3], "", "   ", *texts[3:]]) + "\n")
    return path


def test_length_batches_sort_by_length_and_bound_the_padded_size():
    batches = list(length_batches([5, 1, 9, 3, 3, 20], 10))
    assert batches == [[1, 3, 4], [0], [2], [5]]  # 3 x 3 <= 10; 4 x 5 > 10; 2 x 9 > 10; 20 alone
    assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert length_batches([2, 2, 2, 2, 6], 100) == [[0, 1, 2, 3, 4]]  # 5 x 6 <= 100
    assert length_batches([2, 2, 2, 2, 6], 100, square_tokens=16) == [[0, 1, 2, 3], [4]]  # 4 x 2^2; 2 x 6^2 > 16
    assert length_batches([2, 2, 2, 2, 6], 100, square_tokens=15) == [[0, 1, 2], [3], [4]]


@pytest.mark.parametrize("batch_tokens", [40, 4096])
def test_batched_rows_equal_analyze_on_each_text_alone(lm, batch_tokens):
    """Padding and batching change no number beyond float32 rounding: the displayed cosine is a float64 cosine
    of float32 vectors from another kernel shape, so within COSINE32 (tests/numerics.py); ranks equal."""
    rows = batch_rows(lm, TEXTS, list(range(10, 17)), SETTINGS, batch_tokens)
    assert list(rows.columns) == list(ROW_COLUMNS)
    for sentence, text in enumerate(TEXTS):
        for method in SETTINGS.methods:
            expected = alone(lm, text, method).metrics
            mine = rows[(rows["sentence_id"] == sentence + 10) & (rows["method"] == method)]
            np.testing.assert_array_equal(
                mine[["layer", "position", "token_id"]], expected[["layer", "position", "token_id"]]
            )
            np.testing.assert_allclose(mine["cosine"], expected["cosine"], rtol=0, atol=COSINE32)
            np.testing.assert_array_equal(mine["rank"], expected["rank"])
            assert mine["token"].tolist() == expected["token"].tolist()


def test_the_summary_is_the_verdicts_numbers(tmp_path, minilm):
    report = run_sweep(minilm, texts_file(tmp_path), tmp_path / "out", SETTINGS, shard_size=3)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    for method in SETTINGS.methods:
        expected = shares_from_counts(spike_counts(pd.concat([spikes_alone(minilm, text, method) for text in TEXTS])))
        got = summary[summary["method"] == method].drop(columns="method").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert (tmp_path / "out" / "summary.png").stat().st_size > 0 and (tmp_path / "out" / "summary.svg").is_file()
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["sentences"] == 7 and provenance["skipped_empty"] == 2 and provenance["shards"] == 3
    assert provenance["model"] == analysis.BUNDLED_MODEL and provenance["methods"] == list(SETTINGS.methods)
    assert report.written == [0, 1, 2] and not report.already_done


def test_every_input_format_reads_the_same_texts(tmp_path):
    raw = ["First text.", "", "Second, text.", "  ", "Third."]
    (tmp_path / "a.txt").write_text("\n".join(raw))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(raw)))
    pd.DataFrame({"text": raw, "other": range(5)}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"text": raw}).to_parquet(tmp_path / "a.parquet")
    for suffix in ("txt", "jsonl", "csv", "parquet"):
        found = read_texts(tmp_path / f"a.{suffix}")
        assert found.texts == ["First text.", "Second, text.", "Third."] and found.skipped_empty == 2, suffix
    assert read_texts(tmp_path / "a.txt", limit=2).texts == ["First text.", "Second, text."]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n \n", "holds no text to analyse (2 empty texts skipped)"),
        ("bad.jsonl", '{"text": "ok"}\n{not json', "bad.jsonl, line 2: not valid JSON (Expecting property name"),
        ("no_column.csv", "sentence\nhello\n", "has no text column (columns: sentence)"),
        ("data.xlsx", "x", "is not a file type Token Trails reads"),
        ("latin1.txt", b"caf\xe9", "Could not read the input"),
    ],
)
def test_a_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=re.escape(message)):
        read_texts(path)
    done = run_cli("sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and message.split(" (")[0] in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_stopped_sweep_continues_and_each_reading_is_written_once(tmp_path, minilm):
    path, out = texts_file(tmp_path), tmp_path / "out"

    def stop_after_first(shards, done):
        write_shard(out, shards[0], batch_rows(minilm, TEXTS[:3], [0, 1, 2], SETTINGS, 4096))
        done(shards[0], 3)
        (out / "rows" / ".shard-00001.parquet.tmp").write_bytes(b"half a file from a killed process")
        raise KeyboardInterrupt

    sweep = open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(minilm, run_shards=stop_after_first)
    sweep.close()
    assert [p.name for p in sorted((out / "rows").glob("shard-*"))] == ["shard-00000.parquet"]
    first = shard_path(out, 0).stat()
    report = run_sweep(minilm, path, out, SETTINGS, shard_size=3)
    assert report.written == [1, 2] and shard_path(out, 0).stat().st_mtime_ns == first.st_mtime_ns
    assert not list((out / "rows").glob(".*.tmp"))
    rows = pd.read_parquet(out / "rows")  # the whole dataset, every shard
    keys = ["sentence_id", "layer", "position", "method"]
    assert not rows.duplicated(keys).any()
    assert sorted(rows["sentence_id"].unique()) == list(range(7))
    assert len(rows) == len(SETTINGS.methods) * 6 * sum(len(minilm.tokenizer(t)["input_ids"]) for t in TEXTS)
    again = run_sweep(minilm, path, out, SETTINGS, shard_size=3)
    assert again.already_done and again.written == []
    with pytest.raises(ValueError, match=r"holds a different sweep .*rogue_k: 3 there, 5 now"):
        run_sweep(minilm, path, out, replace(SETTINGS, rogue_k=5), shard_size=3)
    assert not (out / ".lock").exists()


def test_a_folder_holding_other_files_is_not_mixed_with(tmp_path, minilm):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no Token Trails sweep"):
        run_sweep(minilm, texts_file(tmp_path), tmp_path, SETTINGS)


def test_over_long_texts_are_cut_and_flagged(tmp_path, tiny_roberta):
    long_text = " ".join(["flies like an arrow"] * 40)
    path = texts_file(tmp_path, [TEXTS[0], long_text])
    report = run_sweep(tiny_roberta, path, tmp_path / "out", SweepSettings(stage="layer_output", reference="raw"))
    rows = pd.read_parquet(tmp_path / "out" / "rows")
    assert report.truncated == [1]
    assert rows.groupby("sentence_id")["truncated"].all().tolist() == [False, True]
    assert rows.loc[rows["sentence_id"] == 1, "position"].max() == tiny_roberta.max_tokens - 1
    assert json.loads((tmp_path / "out" / "provenance.json").read_text())["truncated_sentence_ids"] == [1]


def test_the_sweep_command_runs_resumes_and_says_when_there_is_nothing_to_do(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": text}) for text in TEXTS))
    args = ["sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out", str(tmp_path / "out"),
            "--shard-size", "4", "--batch-tokens", "64", "--device", "auto", "--limit", "6"]  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    from analysis.devices import resolve_device

    assert f"6 texts from {path}\n" in done.stderr and f"on {resolve_device('auto')}: 2 of 2 shards" in done.stderr
    assert "\r" not in done.stderr  # not a terminal: progress as whole lines
    assert re.search(r"^sweep: 6 of 6 texts \(100%\), [\d.]+ texts/s$", done.stderr, re.M)
    assert sorted(p.name for p in (tmp_path / "out" / "rows").glob("shard-*")) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]
    again = run_cli(*args)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert "sweep:" not in again.stderr  # no empty progress bar


def test_without_ray_the_ray_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from analysis.__main__ import main
    from analysis.output.ray_engine import INSTALL_HINT

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if it were not installed
    path = texts_file(tmp_path)
    code = main(["sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out", str(tmp_path / "o"),
                 "--engine", "ray"])  # fmt: skip
    assert code == 1 and not (tmp_path / "o").exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"python -m analysis: error: {INSTALL_HINT}"


def test_devices_resolve_to_what_torch_sees():
    import torch

    from analysis.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    seen = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(seen)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no cuda device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        resolve_device("tpu")

"""Hostile corpora and folders for `sweep`: unreadable texts are skipped and listed, never a stuck shard;
manifests survive a full disk; one sweep per folder at a time, with stale locks recognised; the analysed texts
are the bytes hashed; odd rows are named; refusals come before the model loads; every run is recorded."""

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis.__main__ import main
from analysis.capture.tokens import tokenize
from analysis.corpus import texts as texts_module
from analysis.corpus.texts import read_texts
from analysis.data import corpus_sentences
from analysis.model import loading
from analysis.output import files as files_module
from analysis.output.files import FolderLock
from analysis.output.sweep import MANIFEST, SPOOL, open_sweep, write_json
from analysis.settings import SweepSettings
from tests.synthetic import TINY_FAMILIES
from tests.test_sweep import TEXTS, run_sweep, texts_file

SETTINGS = SweepSettings(reference="position")
UNREADABLE = ["\u200b\u200b\u200b", "\x01\x02\x03"]  # only zero-width spaces; only control characters


def sweep_args(path: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--model", "all-MiniLM-L6-v2", "--input", str(path), "--out", str(out), "--reference",
            "position", "--shard-size", "3", *extra]  # fmt: skip


def test_texts_with_no_readable_token_are_skipped_counted_and_listed(tmp_path, minilm, capsys):
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in [TEXTS[0], *UNREADABLE, TEXTS[1]]) + "\n")
    assert main(sweep_args(path, tmp_path / "out")) == 0
    said = capsys.readouterr().err
    assert "note: 2 texts have no token the model reads" in said
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["unreadable_sentence_ids"] == [1, 2] and provenance["sentences"] == 4
    rows = pd.read_parquet(tmp_path / "out" / "rows")
    assert sorted(rows["sentence_id"].unique()) == [0, 3]


def test_manifests_survive_a_full_disk_and_a_damaged_one_is_named(tmp_path, minilm, monkeypatch):
    out = tmp_path / "out"
    run_sweep(minilm, texts_file(tmp_path), out, SETTINGS, shard_size=3)
    before = (out / MANIFEST).read_text()

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(files_module.os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space left"):
            write_json(out / MANIFEST, {"anything": 1})
    assert (out / MANIFEST).read_text() == before  # the old file, whole
    assert run_sweep(minilm, texts_file(tmp_path), out, SETTINGS, shard_size=3).already_done
    (out / MANIFEST).write_bytes(b"")  # what an in-place write on a full disk left before
    with pytest.raises(
        ValueError, match=rf"{MANIFEST} is damaged \(JSONDecodeError\): what this folder holds is unknown"
    ):
        run_sweep(minilm, texts_file(tmp_path), out, SETTINGS, shard_size=3)
    (out / MANIFEST).write_text(before)
    (out / "provenance.json").write_text("{half")
    with pytest.raises(
        ValueError, match=r"provenance.json has changed since it was written: delete it and run the same command again"
    ):
        run_sweep(minilm, texts_file(tmp_path), out, SETTINGS, shard_size=3)


def test_a_second_sweep_into_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path, minilm):
    out, path = tmp_path / "out", texts_file(tmp_path)
    holder = open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)
    with pytest.raises(ValueError, match=rf"is in use by another sweep \(process {os.getpid()} on .*wait for it"):
        open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)
    holder.close()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"pid": int(gone.stdout), "host": os.uname().nodename, "started": "earlier"}
    (out / ".lock").write_text(json.dumps(lock))  # a killed run's lock: its process is gone
    report = run_sweep(minilm, path, out, SETTINGS, shard_size=3)
    assert report.written == [0, 1, 2] and not (out / ".lock").exists()
    (out / ".lock").write_text('{"pid": ')  # a lock cut short by a crash while it was written
    assert run_sweep(minilm, path, out, SETTINGS, shard_size=3).already_done


def test_the_texts_analysed_are_the_bytes_hashed_even_if_the_input_is_replaced(tmp_path, minilm, monkeypatch):
    path, out = texts_file(tmp_path), tmp_path / "out"
    original = path.read_bytes()
    copy = texts_module.hashing_copy

    def copy_then_replace(source, target):
        digest = copy(source, target)
        source.write_text("A different corpus.\n")  # replaced once read
        return digest

    monkeypatch.setattr(texts_module, "hashing_copy", copy_then_replace)
    sweep = open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)
    sweep.close()
    assert sweep.manifest["input_sha256"] == hashlib.sha256(original).hexdigest()
    spooled = [json.loads(line) for line in (out / SPOOL).read_text().splitlines()]
    assert spooled == TEXTS
    monkeypatch.undo()
    with pytest.raises(ValueError, match="holds a sweep of another input"):
        open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)


def test_odd_rows_are_named_by_line_and_row(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([json.dumps({"text": t}) for t in TEXTS[:50]] + ["{oops"]))
    with pytest.raises(ValueError, match=r"bad.jsonl, line 8: not valid JSON \(Expecting property name"):
        read_texts(bad)
    odd = tmp_path / "odd.jsonl"
    values = ["A text.", 123, None, ["a", "list"], "", "Another text.", True]
    odd.write_text("\n".join(json.dumps({"text": value}) for value in values))
    found = read_texts(odd)
    assert found.texts == ["A text.", "Another text."]
    assert found.described("odd.jsonl") == (
        "2 texts of odd.jsonl (1 empty text skipped; 4 rows whose text is not a string skipped (line 2 (a number), "
        "line 3 (null), line 4 (a list or object), line 7 (true/false)))"
    )


def test_refusals_and_unwritable_folders_come_before_the_model_loads(tmp_path, monkeypatch, capsys):
    path, out = texts_file(tmp_path), tmp_path / "out"
    assert main(sweep_args(path, out, "--limit", "3")) == 0
    capsys.readouterr()
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(sweep_args(path, out, "--limit", "3", "--rogue-k", "5")) == 1
    assert "holds a different sweep (rogue_k: 3 there, 5 now)" in capsys.readouterr().err
    assert main(sweep_args(path, out, "--limit", "3")) == 0  # finished: nothing to do, no model
    assert "nothing to do" in capsys.readouterr().err
    real_open = os.open

    def read_only(file, flags, *args):
        if str(file).endswith(".lock") and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(file, flags, *args)

    monkeypatch.setattr(files_module.os, "open", read_only)
    assert main(sweep_args(path, out)) == 1
    assert "Cannot write to" in capsys.readouterr().err


def test_every_runs_settings_are_recorded(tmp_path, minilm):
    path, out = texts_file(tmp_path), tmp_path / "out"
    first = open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)

    def stop(shards, done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.run(minilm, batch_tokens=64, run_shards=stop)
    first.close()
    run_sweep(minilm, path, out, SETTINGS, shard_size=3, batch_tokens=512)
    runs = json.loads((out / "provenance.json").read_text())["runs"]
    assert [(run["batch_tokens"], run["shards_written"], run["finished"] is None) for run in runs] == [
        (64, 0, True),
        (512, 3, False),
    ]


@pytest.mark.parametrize("filler", [" ", "\n", ""])
def test_a_long_text_is_cut_before_tokenising_with_the_same_tokens(lm, filler):
    """A text far past the model's limit is tokenised from a prefix: the same ids, offsets and count as the whole
    text tokenised at once (with no whitespace at all, too)."""
    words = ("flies like an arrow" + filler) * (lm.max_tokens * 8)
    mine = tokenize(lm, words)
    whole = lm.tokenizer(words, truncation=True, max_length=lm.max_tokens, return_offsets_mapping=True)
    assert mine.ids == whole["input_ids"] and mine.offsets == [tuple(o) for o in whole["offset_mapping"]]
    full_count = len(lm.tokenizer(words)["input_ids"])
    assert mine.n_tokens_in_text == full_count and mine.truncated
    assert len(words) > 16 * lm.max_tokens  # the prefix path was taken
    assert analysis.analyze(lm, words, top_k=1, overlap_n=1).n_tokens_in_text == full_count


RACER = """
import json, sys, time
from pathlib import Path
from analysis.output.files import FolderLock
folder, start = Path(sys.argv[1]), float(sys.argv[2])
lock = FolderLock(folder)
while time.time() < start:
    pass
try:
    lock.acquire()
except ValueError:
    print("refused")
else:
    print("held", flush=True)
    time.sleep(0.3)
    lock.release()
"""


@pytest.mark.parametrize("stale", [False, True])
def test_racing_processes_never_share_a_folder(tmp_path, stale):
    """Six processes take the lock at the same instant, five times over (with a killed run's lock file left
    there, or none): each time exactly one holds it. The lock is the operating system's, checked after it is
    taken, so no two can both see themselves as holders."""
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for _ in range(5):
        if stale:
            (folder / ".lock").write_text(json.dumps({"pid": 999_999_999, "host": os.uname().nodename}))
        start = time.time() + 0.6  # every racer imported and waiting
        racers = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(start)], stdout=subprocess.PIPE,
                                   text=True, env=env) for _ in range(6)]  # fmt: skip
        outcomes = [racer.communicate(timeout=60)[0].strip() for racer in racers]
        assert sorted(outcomes) == ["held"] + ["refused"] * 5, outcomes


def test_a_killed_holders_lock_is_free_at_once_and_a_lock_folder_is_named(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    holder = subprocess.Popen([sys.executable, "-c", RACER.replace("0.3", "60"), str(folder), "0"],
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=rf"in use by another sweep \(process {holder.pid} on"):
        FolderLock(folder).acquire()
    holder.kill()  # SIGKILL: no cleanup runs; the kernel lets go of the lock
    holder.wait(timeout=30)
    lock = FolderLock(folder)
    lock.acquire()
    lock.release()
    (folder / ".lock").mkdir()
    with pytest.raises(ValueError, match="is a folder, where a sweep keeps its lock file"):
        FolderLock(folder).acquire()


def test_refusing_a_folder_that_is_no_sweep_touches_nothing_in_it(tmp_path, minilm):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / ".lock").write_text("their own lock file")
    with pytest.raises(ValueError, match="holds no Token Trails sweep"):
        open_sweep(out, texts_file(tmp_path), model=minilm.name, settings=SETTINGS, shard_size=3)
    assert (out / ".lock").read_text() == "their own lock file" and sorted(p.name for p in out.iterdir()) == [
        ".lock", "notes.txt"
    ]  # fmt: skip


def test_a_corpus_with_no_readable_text_finishes_empty_and_says_so(tmp_path, capsys):
    path, out = tmp_path / "unreadable.txt", tmp_path / "out"
    path.write_text("\u200b\u200b\n\x01\x02\n")
    assert main(sweep_args(path, out)) == 0
    said = capsys.readouterr()
    assert "none of the 2 texts has a token" in said.err and "the dataset and the summary are empty" in said.err
    assert pd.read_csv(out / "summary.csv").empty and pd.read_parquet(out / "rows").empty
    assert json.loads((out / "provenance.json").read_text())["unreadable_sentence_ids"] == [0, 1]
    assert main(sweep_args(path, out)) == 0 and "nothing to do" in capsys.readouterr().err  # finished, not stuck


def _runs(out: Path) -> list[dict]:
    try:
        return json.loads((out / MANIFEST).read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return []


def test_a_sweep_killed_after_a_shard_records_it_and_continues_to_the_same_rows(tmp_path):
    """SIGKILL (no cleanup runs) once the first shard is on disk: the run's record says how many shards it wrote,
    and the same command continues to rows identical to a sweep never stopped."""
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(corpus_sentences()[:12]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "HF_HUB_OFFLINE": "1"}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["--shard-size", "2", "--batch-tokens", "64"]
    sweep = subprocess.Popen([sys.executable, "-m", "analysis", *sweep_args(path, killed), *args], env=env,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not _runs(killed) or not _runs(killed)[-1]["shards_written"]:  # recorded as the shard lands
        assert time.monotonic() < deadline and sweep.poll() is None, "no shard was recorded while the run went on"
        time.sleep(0.02)
    sweep.kill()
    sweep.wait(timeout=30)
    (run,) = json.loads((killed / MANIFEST).read_text())["runs"]
    assert run["finished"] is None and run["shards_written"] >= 1
    assert main([*sweep_args(path, killed), *args]) == 0
    assert main([*sweep_args(path, whole), *args]) == 0
    rows = pd.read_parquet(killed / "rows").sort_values(["sentence_id", "layer", "position"], ignore_index=True)
    expected = pd.read_parquet(whole / "rows").sort_values(["sentence_id", "layer", "position"], ignore_index=True)
    pd.testing.assert_frame_equal(rows, expected, check_exact=False, rtol=1e-6)
    assert not rows.duplicated(["sentence_id", "layer", "position", "method"]).any()


@pytest.mark.parametrize(
    "extra", [["--overlap-n", "1000000000"], ["--top-k", "30523"], ["--lens", "--lens-top-k", "999999"]]
)
def test_counts_past_the_vocabulary_are_refused_in_one_line(tmp_path, extra, capsys, family_folder):
    """A count of vocabulary items past the vocabulary would only allocate (1e9 neighbours asked for 41.9 GB)."""
    model = str(family_folder("roberta", head=True)) if "--lens" in extra else "all-MiniLM-L6-v2"
    args = ["export", "--model", model, "--text", "A cat.", "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "more than the" in error and "vocabulary items of" in error and "choose at most" in error
    assert not (tmp_path / "out").exists()


def test_the_spool_keeps_one_offset_per_shard_and_each_is_where_its_shard_starts(tmp_path, minilm):
    """Bookkeeping grows with shards, not texts (100 M one-character texts held gigabytes of per-text offsets):
    every recorded offset is, read back independently, the first byte of its shard's first text."""
    path = tmp_path / "tiny.txt"
    path.write_text("".join(f"{chr(97 + i % 26)}\n" for i in range(2500)))
    with open_sweep(tmp_path / "out", path, model=minilm.name, settings=SETTINGS, shard_size=1000) as sweep:
        offsets = sweep.manifest["shard_offsets"]
    lines = (tmp_path / "out" / SPOOL).read_bytes().splitlines(keepends=True)
    starts = [sum(len(line) for line in lines[:first]) for first in range(0, len(lines), 1000)]
    assert len(lines) == 2500 and offsets == starts and len(offsets) == 3


def test_unclear_one_liners_now_name_the_file_the_line_and_what_to_do(tmp_path, capsys):
    """An empty .csv, a lone surrogate in a .jsonl, a damaged shard: each refused in one line that names the file
    (and the line) and says what to do; the damaged shard's advice works."""
    empty, odd = tmp_path / "empty.csv", tmp_path / "odd.jsonl"
    empty.write_text("")
    odd.write_text('{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n')
    for path, said in ((empty, "empty.csv: it is empty (a .csv needs a header row"),
                       (odd, "Line 2 of odd.jsonl holds a lone surrogate")):  # fmt: skip
        assert main(sweep_args(path, tmp_path / f"out-{path.stem}")) == 1
        assert said in capsys.readouterr().err.strip().splitlines()[-1]
    path, out = texts_file(tmp_path), tmp_path / "out"
    assert main(sweep_args(path, out)) == 0
    shard = out / "rows" / "shard-00001.parquet"
    shard.write_bytes(b"not a parquet file")
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["shard_sha256"]  # a sweep made before shard hashes were recorded: the reader names the damage
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "summary.csv").unlink()  # the summary is made again from every shard
    assert main(sweep_args(path, out)) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{shard} is damaged" in error and "delete it and run the same command again" in error
    shard.unlink()
    assert main(sweep_args(path, out)) == 0


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (
            lambda out: (out / SPOOL).write_text((out / SPOOL).read_text().replace('"', '"Edited: ', 1)),
            "texts.jsonl has changed since the sweep wrote it",
        ),
        (
            lambda out: (out / SPOOL).write_bytes((out / SPOOL).read_bytes()[:40]),
            "texts.jsonl has changed since the sweep wrote it",
        ),
        (
            lambda out: (out / "rows" / "shard-00000.parquet").write_bytes(
                (out / "rows" / "shard-00001.parquet").read_bytes()
            ),
            "shard-00000.parquet has changed since it was written",
        ),
        (
            lambda out: (out / "provenance.json").write_text('{"edited": true}'),
            "provenance.json has changed since it was written: delete it and run the same command again",
        ),
    ],
)
def test_files_changed_behind_a_sweeps_back_are_named_with_the_repair(tmp_path, damage, said, capsys):
    """Every file a sweep wrote is checked against the SHA-256 recorded when it was written, whenever the folder is
    opened again: an edited or truncated texts.jsonl (it gave "zip() argument 3 is longer ..."), a shard replaced
    by another, an edited provenance.json on a finished sweep (it said "nothing to do")."""
    path, out = texts_file(tmp_path), tmp_path / "out"
    assert main(sweep_args(path, out)) == 0
    capsys.readouterr()
    damage(out)
    assert main(sweep_args(path, out)) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert said in error and "nothing to do" not in error


@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_a_models_outline_offers_what_it_offers_loaded(family, head, family_folder):
    """The outline (config, weight headers and tokenizer; modules on the meta device) has the loaded model's
    stages, references, lens, sizes and limits, and holds no weights."""
    folder = family_folder(family, head)
    outline, loaded = analysis.outline_model(str(folder)), analysis.load_model(str(folder))
    assert {p.device.type for p in outline.hf_model.parameters()} == {"meta"}
    assert outline.info == loaded.info
    assert analysis.capabilities(outline) == analysis.capabilities(loaded)
    assert (outline.position_limit, outline.memory_limit) == (loaded.position_limit, loaded.memory_limit)


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--lens"], "has no lens: its checkpoint holds no masked-LM head"),
        (["--rogue-k", "1000"], "rogue_k"),
        (["--max-tokens", "100000"], "max_tokens is 100,000, more than the"),
        (["--method", "original_demo", "--model-type", "llama"], "original demo"),
    ],
)
def test_what_the_model_cannot_do_is_refused_before_it_loads_or_the_folder_is_claimed(
    tmp_path, extra, said, family_folder, monkeypatch, capsys
):
    family = "llama" if "--model-type" in extra else "roberta"
    extra = [arg for arg in extra if arg not in ("--model-type", "llama")]
    path, out = texts_file(tmp_path), tmp_path / "out"
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    args = ["sweep", "--model", str(family_folder(family)), "--input", str(path), "--out", str(out), *extra]
    assert main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert said in error
    assert not out.exists()


def test_another_sweeps_folder_is_refused_before_the_model_loads(tmp_path, minilm, monkeypatch, capsys):
    path, out = texts_file(tmp_path), tmp_path / "out"
    first = open_sweep(out, path, model=minilm.name, settings=SETTINGS, shard_size=3)
    first.close()  # claimed, never run: unfinished
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(sweep_args(path, out, "--rogue-k", "5")) == 1
    assert "holds a different sweep (rogue_k: 3 there, 5 now)" in capsys.readouterr().err
    assert main(["export", "--model", "all-MiniLM-L6-v2", "--text", "A cat.", "--out", str(tmp_path / "x"),
                 "--overlap-n", "1000000000"]) == 1  # fmt: skip
    assert "more than the 30,522 vocabulary items" in capsys.readouterr().err


def test_an_unreadable_input_is_refused_before_the_model_loads_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    path, out = tmp_path / "texts.parquet", tmp_path / "out"
    path.write_bytes(b"not a parquet file at all")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(sweep_args(path, out)) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Could not read the input texts.parquet: it is not a Parquet file, or a damaged one" in error
    assert "magic bytes" not in error
    assert not out.exists()

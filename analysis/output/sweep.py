"""`sweep`: the analysis over a whole corpus as a resumable batch job, writing a Parquet dataset.

`open_sweep` claims the folder DIR before any model is loaded: it takes DIR's lock (a second sweep into the
same DIR is refused, naming the holder; a lock left by a killed run is recognised and taken over), refuses a
DIR holding another sweep or anything else, and copies the input's texts into `DIR/texts.jsonl` as it hashes
the input, so every shard reads exactly the bytes the recorded hash names, in bounded memory. `run` then cuts
the texts into shards of `shard_size`; each shard's rows (`ROW_COLUMNS`) go to `DIR/rows/shard-NNNNN.parquet`,
written to a temporary name, fsynced and renamed when complete, so a stopped sweep, run again with the same
command, continues from the first missing shard and every (sentence, layer, position, method) is written
exactly once. `sweep.json` records what the sweep is and every run's settings; `summary.csv` (spike shares
per method, layer and word class with 95% Wilson intervals: the numbers `spike_verdict` gives on the same
texts), its chart and `provenance.json` are written when every shard is there. Every JSON file is written
like a shard: temporary name, fsync, rename, fsync of the folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.charts import verdict_chart
from analysis.corpus.counts import commit_counts, commit_shares, method_shares, spike_counts
from analysis.corpus.engine import batch_rows
from analysis.corpus.texts import CorpusCount, no_texts_error, read_corpus
from analysis.definitions import LENS_ROW_COLUMNS, ROW_COLUMNS, OnProgress, Reference
from analysis.hashing import file_sha256
from analysis.model.checkpoint import first_line
from analysis.model.loaded import LoadedModel
from analysis.output.files import LOCK, FolderLock, read_json, replace_durably, write_json
from analysis.report.lens import default_target, lens_record
from analysis.settings import SweepSettings
from analysis.version import provenance

MANIFEST = "sweep.json"
MANIFEST_DAMAGED = "what this folder holds is unknown, so use a new --out folder."
PROVENANCE_DAMAGED = "delete it and run the same command again; the finished shards are kept."
SHARD_REPAIR = "delete it and run the same command again; that shard is computed again, the others are kept."
SPOOL = "texts.jsonl"
"""The sweep's texts, one JSON string per line, copied from the input as it was hashed."""
ROWS = "rows"
"""The dataset's folder inside DIR: `pd.read_parquet(DIR / "rows")` reads every shard."""
ROW_SCHEMA = pa.schema(
    [
        ("sentence_id", pa.int64()), ("layer", pa.int64()), ("position", pa.int64()), ("token", pa.large_string()),
        ("token_id", pa.int64()), ("word_class", pa.large_string()), ("special", pa.bool_()),
        ("method", pa.large_string()), ("cosine", pa.float64()), ("rank", pa.int64()), ("spike", pa.bool_()),
        ("truncated", pa.bool_()),
    ]
)  # fmt: skip
assert ROW_SCHEMA.names == list(ROW_COLUMNS)
LENS_SCHEMA = pa.schema(
    [
        ("lens_rank", pa.int64()),
        ("lens_prob", pa.float64()),
        ("entropy", pa.float64()),
        ("kl_final", pa.float64()),
        ("lens_commit_layer", pa.int64()),
    ]
)
assert LENS_SCHEMA.names == list(LENS_ROW_COLUMNS)
IDENTITY_KEYS = ("model", *SweepSettings.IDENTITY, "shard_size", "limit")
"""What a sweep is, known before its model loads; the input's hash and the model's revision complete it."""
SPOOL_HASH, SHARD_HASHES, PROVENANCE_HASH = "spool_sha256", "shard_sha256", "provenance_sha256"
"""Manifest keys of the SHA-256 of texts.jsonl, of each shard (by number) and of provenance.json, each recorded
when the file is written and checked whenever the folder is opened again (`verify_files`)."""
IDENTITY_DEFAULTS = {"lens": False, "max_tokens": None, "lens_fitted": None, "lens_fitted_sha256": None}
"""What a sweep made before a key existed had (a sweep without the lens continues as one)."""


@dataclass(frozen=True)
class SweepReport:
    """What one run of a sweep did."""

    out: Path
    shards: int
    written: list[int]  # shard numbers written by this run
    already_done: bool  # the folder held the finished sweep: nothing was computed
    sentences: int
    truncated: list[int]  # sentence ids cut at the model's length limit (every shard, this run or before)
    unreadable: list[int] = field(default_factory=list)  # sentence ids with no token the model reads
    notes: list[str] = field(default_factory=list)  # what reading the input skipped


def shard_path(out: Path, shard: int) -> Path:
    return out / ROWS / f"shard-{shard:05d}.parquet"


def read_shard(out: Path, shard: int, columns: list[str]) -> pd.DataFrame:
    """One shard's rows; a damaged shard is a ValueError naming it and how to recompute it."""
    path = shard_path(out, shard)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as error:  # pyarrow raises its own kinds for a damaged file
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {first_line(error)}): {SHARD_REPAIR}") from error


def write_shard(out: Path, shard: int, rows: pd.DataFrame) -> None:
    """Write a shard (ROW_COLUMNS, and LENS_ROW_COLUMNS where the rows have them) under a temporary name, fsync
    it, then rename it into place (atomic on one file system)."""
    final = shard_path(out, shard)
    temporary = final.with_name(f".{final.name}.tmp")
    schema = pa.unify_schemas([ROW_SCHEMA, LENS_SCHEMA]) if "lens_rank" in rows else ROW_SCHEMA
    table = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
    with temporary.open("wb") as file:
        pq.write_table(table, file)
        file.flush()
        os.fsync(file.fileno())
    replace_durably(temporary, final)


def _spool(out: Path, input_path: Path, limit: int | None, shard_size: int) -> tuple[int, CorpusCount, list[int], str]:
    """Copy the input's texts (at most `limit`) into DIR/texts.jsonl while hashing the input: (how many, what
    was skipped, the byte offset in the spool of each shard's first text, the spool's own SHA-256). Memory holds
    one offset per shard, not per text: 100 M one-character texts would otherwise hold gigabytes of offsets."""
    temporary = out / f".{SPOOL}.tmp"
    shard_offsets: list[int] = []
    texts_spooled = 0
    counted: list[CorpusCount] = []
    digest = hashlib.sha256()

    def write(texts: Iterator[str], count: CorpusCount) -> None:
        nonlocal texts_spooled
        with temporary.open("wb") as spool:
            for text in islice(texts, limit):
                if texts_spooled % shard_size == 0:
                    shard_offsets.append(spool.tell())
                line = json.dumps(text, ensure_ascii=False).encode("utf-8") + b"\n"
                spool.write(line)
                digest.update(line)
                texts_spooled += 1
            spool.flush()
            os.fsync(spool.fileno())
        counted.append(count)

    read_corpus(input_path, write, folder=out)
    if not texts_spooled:
        temporary.unlink(missing_ok=True)
        raise no_texts_error(input_path, counted[0])
    replace_durably(temporary, out / SPOOL)
    return texts_spooled, counted[0], shard_offsets, digest.hexdigest()


def spool_texts(out: Path, offset: int, count: int) -> list[str]:
    """`count` texts of DIR/texts.jsonl from byte `offset` (where a shard starts)."""
    with (out / SPOOL).open("rb") as spool:
        spool.seek(offset)
        return [json.loads(line) for line in islice(spool, count)]


ShardDone = Callable[[int, int], None]
"""`done(shard, sentences)`: a shard is written, holding that many sentences."""
ShardRunner = Callable[[list[int], ShardDone], None]
"""`run(shards, done)`: compute and write the given shards (Ray actors, say), calling `done(shard, sentences)`
as each is written."""


@dataclass
class Sweep:
    """A claimed sweep folder (its lock held), its texts spooled: ready to compute with a model."""

    out: Path
    manifest: dict  # what sweep.json holds
    lock: FolderLock

    @property
    def sentences(self) -> int:
        return self.manifest["sentences"]

    @property
    def shard_size(self) -> int:
        return self.manifest["shard_size"]

    @property
    def shards(self) -> int:
        return math.ceil(self.sentences / self.shard_size)

    def shard_offset(self, shard: int) -> int:
        return self.manifest["shard_offsets"][shard]

    def shard_ids(self, shard: int) -> range:
        """The sentence ids of one shard."""
        first = shard * self.shard_size
        return range(first, min(first + self.shard_size, self.sentences))

    def shard_texts(self, shard: int) -> tuple[list[str], list[int]]:
        """The texts of one shard and their sentence ids."""
        ids = self.shard_ids(shard)
        return spool_texts(self.out, self.shard_offset(shard), len(ids)), list(ids)

    @property
    def notes(self) -> list[str]:
        """What reading the input skipped, as sentences."""
        return CorpusCount(**self.manifest["skipped"]).notes()

    @property
    def finished(self) -> bool:
        """Whether the summary and provenance of every shard are written (`finished_sweep`)."""
        return finished_sweep(self.out)

    def missing(self) -> list[int]:
        return [shard for shard in range(self.shards) if not shard_path(self.out, shard).exists()]

    def run(
        self,
        lm: LoadedModel,
        *,
        batch_tokens: int = 4096,
        engine: str = "local",
        run_shards: ShardRunner | None = None,
        on_progress: OnProgress | None = None,
    ) -> SweepReport:
        """Compute the missing shards with `lm` (here, or by `run_shards(shards, done)`), then the summary
        and provenance; `on_progress(done, total)` counts sentences as each batch of texts finishes (here; by
        shard with `run_shards`)."""
        self._check_model(lm)
        for stale in (self.out / ROWS).glob(".shard-*.parquet.tmp"):  # left by a killed run: recomputed below
            stale.unlink()
        missing, notes = self.missing(), self.notes
        if not missing and self.finished:
            recorded = read_json(self.out / "provenance.json", PROVENANCE_DAMAGED)
            return SweepReport(
                self.out, self.shards, [], True, self.sentences, recorded["truncated_sentence_ids"],
                recorded.get("unreadable_sentence_ids", []), notes,
            )  # fmt: skip
        run: dict[str, object] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "finished": None, "engine": engine,
               "device": str(lm.device), "batch_tokens": batch_tokens, "shards_written": 0}  # fmt: skip
        self.manifest["runs"].append(run)
        write_json(self.out / MANIFEST, self.manifest)
        done_sentences = self.sentences - sum(len(self.shard_ids(shard)) for shard in missing)
        written: list[int] = []

        def done(shard: int, sentences: int) -> None:
            nonlocal done_sentences
            written.append(shard)
            done_sentences += sentences
            run["shards_written"] = len(written)  # recorded as each shard lands: a killed run runs no `finally`
            self.manifest.setdefault(SHARD_HASHES, {})[str(shard)] = file_sha256(shard_path(self.out, shard))
            write_json(self.out / MANIFEST, self.manifest)
            if on_progress:
                on_progress(done_sentences, self.sentences)

        if on_progress:
            on_progress(done_sentences, self.sentences)
        started = time.perf_counter()
        try:
            if run_shards is None:
                settings = self.settings
                for shard in missing:
                    texts, ids = self.shard_texts(shard)
                    within = None
                    if on_progress:  # every batch of the shard moves the count on, not just the shard's end

                        def within(texts_done: float, _: float, before: int = done_sentences) -> None:
                            on_progress(before + texts_done, self.sentences)

                    write_shard(self.out, shard, batch_rows(lm, texts, ids, settings, batch_tokens, within))
                    done(shard, len(texts))
            else:
                run_shards(missing, done)
        finally:
            run["shards_written"] = len(written)
            run["seconds"] = round(time.perf_counter() - started, 3)
            write_json(self.out / MANIFEST, self.manifest)
        truncated, unreadable, tokens = self._finish()
        run["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(self.out / MANIFEST, self.manifest)
        record = provenance(
            lm,
            **{key: value for key, value in self.manifest.items() if key != "shard_offsets"},
            skipped_empty=self.manifest["skipped"]["skipped_empty"],
            truncated_sentence_ids=truncated,
            unreadable_sentence_ids=unreadable,
            tokens=tokens,
            shards=self.shards,
            columns=self.settings.columns,
            **(lens_record(lm, default_target(lm)) if self.settings.lens else {}),
        )
        write_json(self.out / "provenance.json", record)
        self.manifest[PROVENANCE_HASH] = file_sha256(self.out / "provenance.json")
        write_json(self.out / MANIFEST, self.manifest)
        return SweepReport(self.out, self.shards, written, False, self.sentences, truncated, unreadable, notes)

    @property
    def settings(self) -> SweepSettings:
        return SweepSettings.from_identity(self.manifest)

    def _check_model(self, lm: LoadedModel) -> None:
        """The model's revision completes the identity on the first run; later runs must load the same one."""
        recorded = self.manifest.get("revision", "unknown")
        if recorded == "unknown":
            self.manifest["revision"] = lm.revision
            write_json(self.out / MANIFEST, self.manifest)
        elif recorded != lm.revision:
            raise ValueError(
                f"{self.out} holds a sweep of {lm.name} at revision {recorded}, but revision {lm.revision} "
                "is loaded now: use another --out folder."
            )

    def _finish(self) -> tuple[list[int], list[int], int]:
        """summary.csv and its chart from every shard, one shard in memory at a time; the ids of the texts cut at
        the length limit and of those with no readable token, and the number of tokens analysed."""
        lens = self.settings.lens
        columns = ["sentence_id", "method", "layer", "word_class", "spike", "truncated"]
        counts, truncated, unreadable, tokens, commits = [], set(), [], 0, []
        layers = 0
        for shard in range(self.shards):
            rows = read_shard(self.out, shard, columns + (["lens_commit_layer"] if lens else []))
            counts.append(spike_counts(rows, by=["method"]))
            truncated.update(rows.loc[rows["truncated"], "sentence_id"].tolist())
            first = rows["method"].iat[0] if len(rows) else None
            token_rows = rows[(rows["method"] == first) & (rows["layer"] == 0)]  # one row per token
            tokens += len(token_rows)
            layers = max(layers, int(rows["layer"].max()) + 1) if len(rows) else layers
            if lens:  # the lens does not depend on the method or the layer
                commits.append(commit_counts(token_rows))
            present = set(rows["sentence_id"].unique().tolist())
            unreadable += [i for i in self.shard_ids(shard) if i not in present]
        summary = method_shares(pd.concat(counts))
        summary.to_csv(self.out / "summary.csv", index=False)
        if len(summary):  # a corpus with no readable text has no shares to draw
            figure = verdict_chart(summary)
            figure.save(self.out / "summary.png")
            figure.save(self.out / "summary.svg")
        if lens:
            found = (
                pd.concat(commits) if commits else pd.DataFrame({"word_class": [], "commit_layer": [], "tokens": []})
            )
            commit_shares(found, layers).to_csv(self.out / "commitment.csv", index=False)
        return sorted(truncated), unreadable, tokens

    def close(self) -> None:
        """Release the folder's lock."""
        self.lock.release()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sweep(
    out: Path,
    input_path: Path,
    *,
    model: str,
    settings: SweepSettings,
    shard_size: int = 1000,
    limit: int | None = None,
    input_name: str = "",
) -> Sweep:
    """Claim `out` for this sweep before any model loads: lock it, check that it holds this very sweep (its
    settings, then its input's hash) or nothing, and spool the input's texts on a first run. Raises ValueError
    naming what differs, who holds the lock, or which file is damaged. Use it as a context manager, which
    releases the lock at the end:

        with open_sweep(out, corpus, model=lm.name, settings=settings) as sweep:
            sweep.run(lm)
    """
    out, input_path = Path(out), Path(input_path).expanduser()
    wanted = _identity(model, settings, shard_size, limit)
    if out.is_dir() and not (out / MANIFEST).is_file() and any(path.name != LOCK for path in out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no Token Trails sweep; choose a new or empty --out folder.")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create {out}: {error.strerror}; pick a writable --out folder.") from None
    lock = FolderLock(out)
    lock.acquire()
    try:
        manifest = _claimed(out, input_path, wanted) or _first_claim(out, input_path, wanted, input_name)
        (out / ROWS).mkdir(exist_ok=True)
    except BaseException:
        lock.release()
        if created:  # a folder this call made holds nothing worth keeping
            shutil.rmtree(out, ignore_errors=True)
        raise
    return Sweep(out, manifest, lock)


def check_sweep_folder(
    out: Path, input_path: Path, *, model: str, settings: SweepSettings, shard_size: int, limit: int | None
) -> None:
    """What `open_sweep` would refuse about `out` (a folder that is no sweep, another sweep, another input),
    checked without claiming or changing anything, so a command is refused before its model loads. The files'
    hashes are checked when the folder is claimed."""
    out = Path(out)
    if out.is_dir():
        _claimed(out, Path(input_path).expanduser(), _identity(model, settings, shard_size, limit), verify=False)
    elif out.exists():
        raise ValueError(f"{out} is a file, not a folder: choose a new or empty --out folder.")


def _identity(model: str, settings: SweepSettings, shard_size: int, limit: int | None) -> dict:
    """The sweep's IDENTITY_KEYS as its manifest records them."""
    return {"model": model, **settings.identity, "shard_size": shard_size, "limit": limit}


def finished_sweep(out: Path) -> bool:
    """Whether `out` holds a finished sweep (its manifest, summary and provenance), which a rerun of the same
    command leaves as it is without loading the model."""
    out = Path(out)
    return all((out / name).is_file() for name in (MANIFEST, "summary.csv", "provenance.json"))


def recorded_reference(out: Path) -> Reference | None:
    """The reference of the sweep `out` holds, if it holds one (what a rerun without --reference continues)."""
    manifest = Path(out) / MANIFEST
    return read_json(manifest, MANIFEST_DAMAGED).get("reference") if manifest.is_file() else None


def _claimed(out: Path, input_path: Path, wanted: dict, verify: bool = True) -> dict | None:
    """The manifest of the sweep `out` already holds, checked against this one (and its files against their
    hashes, with `verify`); None for a new folder."""
    if not (out / MANIFEST).is_file():
        if any(path.name != LOCK for path in out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no Token Trails sweep; choose a new or empty --out folder.")
        return None
    found = read_json(out / MANIFEST, MANIFEST_DAMAGED)
    recorded = {key: found.get(key, IDENTITY_DEFAULTS.get(key)) for key in IDENTITY_KEYS}
    differing = [key for key in IDENTITY_KEYS if recorded[key] != wanted[key]]
    if differing:
        details = "; ".join(f"{key}: {recorded[key]!r} there, {wanted[key]!r} now" for key in differing)
        raise ValueError(
            f"{out} holds a different sweep ({details}). Use another --out folder, or the same settings to continue it."
        )
    if not input_path.is_file():
        raise ValueError(f"No input file at {str(input_path)!r}.")
    if file_sha256(input_path) != found["input_sha256"]:
        raise ValueError(
            f"{out} holds a sweep of another input (SHA-256 {found['input_sha256'][:12]}…; {input_path} is not that "
            "file now): use another --out folder, or the original input to continue it."
        )
    if not (out / SPOOL).is_file():
        raise ValueError(f"{out / SPOOL} is missing, so the sweep's texts are unknown: use a new --out folder.")
    if verify:
        verify_files(out, found)
    return found


def verify_files(out: Path, manifest: dict) -> None:
    """Check texts.jsonl, every shard on disk and provenance.json against the SHA-256 recorded when each was
    written (a sweep made before a hash was recorded is checked for the ones it has). A changed file is a
    ValueError naming it and the command that repairs it."""
    recorded = manifest.get(SPOOL_HASH)
    if recorded and file_sha256(out / SPOOL) != recorded:
        raise ValueError(
            f"{out / SPOOL} has changed since the sweep wrote it, so its texts are not the ones the shards were "
            "computed from: start over with a new --out folder."
        )
    for shard, digest in manifest.get(SHARD_HASHES, {}).items():
        path = shard_path(out, int(shard))
        if path.exists() and file_sha256(path) != digest:
            raise ValueError(f"{path} has changed since it was written: {SHARD_REPAIR}")
    recorded = manifest.get(PROVENANCE_HASH)
    if recorded and (out / "provenance.json").is_file() and file_sha256(out / "provenance.json") != recorded:
        raise ValueError(f"{out / 'provenance.json'} has changed since it was written: {PROVENANCE_DAMAGED}")


def _first_claim(out: Path, input_path: Path, wanted: dict, input_name: str) -> dict:
    sentences, count, shard_offsets, spool_sha256 = _spool(out, input_path, wanted["limit"], wanted["shard_size"])
    manifest = {
        **wanted,
        "revision": "unknown",
        "input": input_name or str(input_path),
        "input_sha256": count.sha256,
        "sentences": sentences,
        "skipped": {key: value for key, value in asdict(count).items() if key != "sha256"},
        "shard_offsets": shard_offsets,
        SPOOL_HASH: spool_sha256,
        "runs": [],
    }
    write_json(out / MANIFEST, manifest)
    return manifest

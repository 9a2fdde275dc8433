"""`sweep`: the analysis over a whole corpus as a resumable batch job, writing a Parquet dataset.

The texts are cut into shards of `shard_size` consecutive texts; each shard's rows (see `batch.ROW_COLUMNS`)
go to `DIR/rows/shard-NNNNN.parquet`, written to a temporary name and renamed when complete, so a stopped
sweep, run again with the same command, continues from the first missing shard and every (sentence, layer,
position, method) is written exactly once. `sweep.json` records what the sweep is (model, settings,
input); a folder holding another sweep is refused, never mixed. When every shard is there, `summary.csv`
(spike shares per method, layer and word class with 95% Wilson intervals: the numbers `spike_verdict`
gives on the same texts), its chart (`summary.png`, `summary.svg`) and `provenance.json` are written.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers

from analysis.charts import verdict_chart
from analysis.corpus.counts import method_shares, spike_counts
from analysis.corpus.engine import SweepSettings, batch_rows
from analysis.corpus.texts import Texts
from analysis.definitions import ROW_COLUMNS
from analysis.model.encoder import EncoderModel
from analysis.version import __version__

MANIFEST = "sweep.json"


@dataclass(frozen=True)
class SweepReport:
    """What one run of a sweep did."""

    out: Path
    shards: int
    written: list[int]  # shard numbers written by this run
    already_done: bool  # the folder held the finished sweep: nothing was computed
    sentences: int
    truncated: list[int]  # sentence ids cut at the model's length limit (every shard, this run or before)


ROWS = "rows"
"""The dataset's folder inside DIR: `pd.read_parquet(DIR / "rows")` reads every shard."""


def shard_path(out: Path, shard: int) -> Path:
    return out / ROWS / f"shard-{shard:05d}.parquet"


def identity(encoder: EncoderModel, texts: Texts, settings: SweepSettings, shard_size: int) -> dict:
    """What a folder's sweep is: a run with another identity must not add to it."""
    return {
        "model": encoder.name,
        "revision": encoder.revision,
        **asdict(settings),
        "methods": list(settings.methods),
        "input_sha256": texts.sha256,
        "sentences": len(texts.texts),
        "shard_size": shard_size,
    }


def _claim(out: Path, wanted: dict) -> None:
    """Create `out` for this sweep, or check that it already holds this very sweep."""
    manifest = out / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        differing = sorted(key for key in wanted if found.get(key) != wanted[key])
        if differing:
            details = "; ".join(f"{key}: {found.get(key)!r} there, {wanted[key]!r} now" for key in differing)
            raise ValueError(
                f"{out} holds a different sweep ({details}). Use another --out folder, or the same settings to "
                "continue it."
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no Token Trails sweep; choose a new or empty --out folder.")
    (out / ROWS).mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(wanted, indent=2) + "\n")


def write_shard(out: Path, shard: int, rows: pd.DataFrame) -> None:
    """Write a shard under a temporary name, then rename it into place (atomic on one file system)."""
    final = shard_path(out, shard)
    temporary = final.with_name(f".{final.name}.tmp")
    pq.write_table(pa.Table.from_pandas(rows[list(ROW_COLUMNS)], preserve_index=False), temporary)
    os.replace(temporary, final)


def shard_texts(texts: Texts, shard_size: int, shard: int) -> tuple[list[str], list[int]]:
    """The texts of one shard and their sentence ids."""
    first = shard * shard_size
    chunk = texts.texts[first : first + shard_size]
    return chunk, list(range(first, first + len(chunk)))


ShardRunner = Callable[[list[int], Callable[[int, int], None]], None]
"""`run(shards, done)`: compute and write the given shards (Ray actors, say), calling `done(shard, sentences)`
as each is written."""


def run_sweep(
    encoder: EncoderModel,
    texts: Texts,
    out: Path,
    settings: SweepSettings,
    *,
    shard_size: int = 1000,
    batch_tokens: int = 4096,
    input_name: str = "",
    engine: str = "local",
    run_shards: ShardRunner | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SweepReport:
    """Run (or continue) the sweep of `texts` into `out`. `run_shards(shards, done)` computes and writes the given
    shards, calling `done(shard, sentences)` after each (default: here, one after another); `on_progress(done,
    total)` counts sentences."""
    out = Path(out)
    wanted = identity(encoder, texts, settings, shard_size)
    _claim(out, wanted)
    for stale in (out / ROWS).glob(".shard-*.parquet.tmp"):  # left by a killed run: recomputed below
        stale.unlink()
    n_shards = math.ceil(len(texts.texts) / shard_size)
    missing = [shard for shard in range(n_shards) if not shard_path(out, shard).exists()]
    finished = (out / "summary.csv").is_file() and (out / "provenance.json").is_file()
    if not missing and finished:
        provenance = json.loads((out / "provenance.json").read_text())
        return SweepReport(out, n_shards, [], True, len(texts.texts), provenance["truncated_sentence_ids"])
    done_sentences = len(texts.texts) - sum(len(shard_texts(texts, shard_size, s)[0]) for s in missing)
    written: list[int] = []

    def done(shard: int, sentences: int) -> None:
        nonlocal done_sentences
        written.append(shard)
        done_sentences += sentences
        if on_progress:
            on_progress(done_sentences, len(texts.texts))

    if on_progress:
        on_progress(done_sentences, len(texts.texts))
    started = time.perf_counter()
    if run_shards is None:
        for shard in missing:
            chunk, ids = shard_texts(texts, shard_size, shard)
            write_shard(out, shard, batch_rows(encoder, chunk, ids, settings, batch_tokens))
            done(shard, len(chunk))
    else:
        run_shards(missing, done)
    truncated, tokens = _finish(out, n_shards)
    provenance = {
        **wanted,
        "input": input_name,
        "skipped_empty": texts.skipped_empty,
        "truncated_sentence_ids": truncated,
        "tokens": tokens,
        "shards": n_shards,
        "engine": engine,
        "device": str(encoder.device),
        "batch_tokens": batch_tokens,
        "seconds_this_run": time.perf_counter() - started,
        "columns": ROW_COLUMNS,
        "analysis_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "pyarrow_version": pa.__version__,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return SweepReport(out, n_shards, written, False, len(texts.texts), truncated)


def _finish(out: Path, n_shards: int) -> tuple[list[int], int]:
    """summary.csv and its chart from every shard, one shard in memory at a time; the ids of the texts cut at
    the length limit, and the number of tokens analysed."""
    columns = ["sentence_id", "method", "layer", "word_class", "spike", "truncated"]
    counts, truncated, tokens = [], set(), 0
    for shard in range(n_shards):
        rows = pd.read_parquet(shard_path(out, shard), columns=columns)
        counts.append(spike_counts(rows, by=["method"]))
        truncated.update(rows.loc[rows["truncated"], "sentence_id"].tolist())
        tokens += int(((rows["method"] == rows["method"].iat[0]) & (rows["layer"] == 0)).sum())
    summary = method_shares(pd.concat(counts))
    summary.to_csv(out / "summary.csv", index=False)
    figure = verdict_chart(summary)
    figure.save(out / "summary.png")
    figure.save(out / "summary.svg")
    return sorted(truncated), tokens

"""The counting engine: many texts at once, every method from one forward pass per batch.

Texts run in batches sorted by length, padded on the right and masked. From each batch's one forward pass come
the stage vectors and, where the original demo is asked for, its vectors (from the same block inputs and
attention weights). Every token of the batch is then scored against the whole vocabulary under each method,
the geometries sharing their products with the vocabulary table (`analysis.scoring.ranks`). Each text's rows equal
`analyze` (or `original_demo`) on it alone up to float32 rounding: padding is masked, and each score depends
only on its own vector and reference. The sweep, the verdict and the corpus check all count spikes here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd
import torch

from analysis.capture.demo import DEMO_POINTS, demo_vectors
from analysis.capture.tokens import Tokens, length_batches, token_table, tokenize_readable
from analysis.capture.trace import trace_tokens
from analysis.definitions import Geometry, LensTarget, OnProgress
from analysis.fitted.lens import load_fitted
from analysis.model.capabilities import check_lens
from analysis.model.derived import FittedFile
from analysis.model.loaded import LoadedModel
from analysis.report.lens import default_target, lens_targets
from analysis.scoring.geometry import PLAIN, GeometryMap, geometry_map, own_cosine
from analysis.scoring.logits import NEVER_COMMITS, NO_TARGET, commit_layers, lens_scores
from analysis.scoring.ranks import map_scorer, rank_tokens
from analysis.scoring.references import vocabulary_scorer
from analysis.settings import SweepSettings
from analysis.spikes import spike_mask
from analysis.wordclass import word_classes

_COSINE_CHUNK = 512  # tokens per float64 own-cosine piece
DEMO_ATTENTION_BYTES = 256 * 2**20
"""Upper bound on the attention weights a batch keeps for the original demo (a long text still goes alone)."""


def batch_rows(
    lm: LoadedModel,
    texts: list[str],
    sentence_ids: list[int],
    settings: SweepSettings,
    batch_tokens: int,
    on_progress: OnProgress | None = None,
    classes: Collection[str] | None = None,
) -> pd.DataFrame:
    """ROW_COLUMNS rows for `texts` (labelled `sentence_ids`), ordered by sentence, method, layer, position; only
    the tokens of the word `classes` given (default: every token: a token's rows depend on it alone, so leaving
    others out changes none of them). A text with no token the model reads has no rows (callers count the ids
    missing from the rows). `on_progress(done, total)` counts texts as their batches finish."""
    tokenized = tokenize_readable(lm, texts, settings.max_tokens)
    readable = [
        (text, tokens, i) for text, tokens, i in zip(texts, tokenized, sentence_ids, strict=True) if tokens is not None
    ]
    if not readable:
        return pd.DataFrame({column: [] for column in settings.columns})
    texts, tokens, sentence_ids = (list(column) for column in zip(*readable, strict=True))
    square = _attention_budget(lm, "original_demo" in settings.methods)
    frames = []
    done = 0
    for batch in length_batches([len(t) for t in tokens], batch_tokens, square):

        def batch_progress(fraction: float, before: int = done, size: int = len(batch)) -> None:
            if on_progress:
                on_progress(before + size * fraction, len(texts))

        chosen = [tokens[i] for i in batch]
        frame = _batch_frame(lm, [texts[i] for i in batch], chosen, settings, classes, batch_progress)
        frame["sentence_id"] = np.asarray([sentence_ids[i] for i in batch])[frame.pop("text_in_batch")]
        frames.append(frame)
        done += len(batch)
    rows = pd.concat(frames, ignore_index=True)
    method_order = rows["method"].map({method: index for index, method in enumerate(settings.methods)})
    rows = rows.assign(method_order=method_order).sort_values(
        ["sentence_id", "method_order", "layer", "position"], kind="stable", ignore_index=True
    )
    return rows[settings.columns]


def _attention_budget(lm: LoadedModel, with_demo: bool) -> int:
    """Texts times squared length a batch may hold: what one text of the model's memory limit holds, and where the
    demo keeps every layer's attention weights, within DEMO_ATTENTION_BYTES of them."""
    by_memory = lm.memory_limit**2
    if not with_demo:
        return by_memory
    return min(by_memory, max(1, DEMO_ATTENTION_BYTES // (4 * lm.num_heads * lm.num_layers)))


def _batch_frame(
    lm: LoadedModel,
    texts: list[str],
    tokens: list[Tokens],
    settings: SweepSettings,
    classes: Collection[str] | None,
    on_progress: Callable[[float], None],
) -> pd.DataFrame:
    """The rows of one batch: one forward pass, then each method's ranks and own cosines for the tokens kept.
    `on_progress(fraction)` follows the scoring, the bulk of the work."""
    tables = _token_rows(texts, tokens, default_target(lm) if settings.lens else None)
    kept = np.ones(len(tables), dtype=bool) if classes is None else tables["word_class"].isin(classes).to_numpy()
    tables = tables[kept].reset_index(drop=True)
    geometries: list[Geometry] = [method for method in settings.methods if method != "original_demo"]
    with_demo = "original_demo" in settings.methods
    points = {settings.stage} if geometries else set()
    points |= {settings.stage, "layer_output"} if settings.lens else set()
    run = trace_tokens(lm, texts, tokens, points | set(DEMO_POINTS) if with_demo else points)
    device = lm.device
    keep = torch.from_numpy(kept.copy()).to(device)

    def joined(per_text: torch.Tensor) -> torch.Tensor:
        """`[layers, batch, padded tokens, hidden]` → the kept tokens side by side `[layers, tokens, hidden]`."""
        return torch.cat([per_text[:, row, : len(t)] for row, t in enumerate(tokens)], dim=1)[:, keep]

    token_ids = torch.tensor(tables["token_id"].to_numpy(), device=device)
    position_ids = torch.tensor(tables["position_id"].to_numpy(), device=device)
    ranks: dict[str, np.ndarray] = {}
    cosines: dict[str, np.ndarray] = {}
    work, scored = max(1, len(tables) * len(settings.methods)), 0

    def on_scored(tokens_scored: int) -> None:
        nonlocal scored
        scored += tokens_scored
        on_progress(scored / work)

    with torch.inference_mode():
        if geometries:
            vectors = joined(run.batch(settings.stage))
            reference = settings.chosen_reference
            scorer = vocabulary_scorer(lm, reference)
            maps = [geometry_map(lm, settings.stage, reference, g, settings.rogue_k) for g in geometries]
            scorers = [map_scorer(lm, scorer, m) for m in maps]
            found = rank_tokens(scorer, scorers, vectors, token_ids, position_ids, on_scored)
            own_reference = scorer.references(token_ids, position_ids, torch.float64)
            for geometry, mapping, rank in zip(geometries, maps, found, strict=True):
                ranks[geometry] = rank.cpu().numpy()
                cosines[geometry] = _own_cosines(mapping, vectors, own_reference)
        if with_demo:
            vectors = joined(demo_vectors(lm, run))
            raw = vocabulary_scorer(lm, "raw")
            (rank,) = rank_tokens(raw, [map_scorer(lm, raw, PLAIN)], vectors, token_ids, position_ids, on_scored)
            ranks["original_demo"] = rank.cpu().numpy()
            cosines["original_demo"] = _own_cosines(
                PLAIN, vectors, raw.references(token_ids, position_ids, torch.float64)
            )
        lens_columns = {}
        if settings.lens:
            final = None if settings.stage == "layer_output" else joined(run.batch("layer_output"))[-1]
            lens_columns = _lens_columns(lm, settings, joined(run.batch(settings.stage)), final, tables)

    n_layers = lm.num_layers
    token_columns = {
        "layer": np.repeat(np.arange(n_layers), len(tables)),
        **{column: np.tile(tables[column].to_numpy(), n_layers) for column in _TOKEN_COLUMNS},
    }
    frames = []
    for method in settings.methods:
        rank = ranks[method]
        spikes = spike_mask(rank)  # token by token (column by column)
        frames.append(
            pd.DataFrame(
                {
                    **token_columns,
                    "method": method,
                    "cosine": cosines[method].reshape(-1),
                    "rank": rank.reshape(-1),
                    "spike": spikes.reshape(-1),
                    **lens_columns,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_TOKEN_COLUMNS = ["position", "token", "token_id", "word_class", "special", "truncated", "text_in_batch"]


def _token_rows(texts: list[str], tokens: list[Tokens], lens_target: LensTarget | None) -> pd.DataFrame:
    """Every token of a batch, text after text: `token_table` plus word class, text index, truncation flag and,
    with a `lens_target`, each token's target id (`lens_targets`)."""
    frames = []
    for row, (text, text_tokens) in enumerate(zip(texts, tokens, strict=True)):
        table = token_table(text_tokens, text)
        table = table.assign(word_class=word_classes(table), text_in_batch=row, truncated=text_tokens.truncated)
        if lens_target is not None:
            table["lens_target"] = lens_targets(text_tokens.ids, lens_target)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _lens_columns(
    lm: LoadedModel, settings: SweepSettings, vectors: torch.Tensor, final: torch.Tensor | None, tables: pd.DataFrame
) -> dict[str, np.ndarray]:
    """LENS_ROW_COLUMNS for the kept tokens, layer-major: `vectors [layers, tokens, hidden]` at the sweep's stage,
    `final [tokens, hidden]` the last layer's output (None: the stage is layer_output, so it is the last layer),
    read through the sweep's fitted lens where it has one."""
    targets = torch.from_numpy(tables["lens_target"].to_numpy(dtype=np.int64, copy=True)).to(vectors.device)
    if settings.lens_fitted is not None:
        path, sha256 = settings.lens_fitted, settings.lens_fitted_sha256
        fitted = lm.cached(FittedFile(path, sha256 or ""), lambda: load_fitted(path, sha256))
        fitted.check_for(lm, settings.stage)
        vectors, final = fitted.read(vectors, final)
    scores = lens_scores(check_lens(lm), vectors, targets, 1, lm.vocab_size, final)
    has_target = np.tile(targets != NO_TARGET, lm.num_layers)
    commits = np.tile(commit_layers(scores.top_ids, scores.final_top).cpu().numpy(), lm.num_layers)
    return {
        "lens_rank": pd.arrays.IntegerArray(scores.target_rank.reshape(-1).cpu().numpy(), mask=~has_target),
        "lens_prob": scores.target_prob.reshape(-1).cpu().double().numpy(),
        "entropy": scores.entropy.reshape(-1).cpu().double().numpy(),
        "kl_final": scores.kl_final.reshape(-1).cpu().double().numpy(),
        "lens_commit_layer": pd.arrays.IntegerArray(commits.astype(np.int64), mask=commits == NEVER_COMMITS),
    }


def _own_cosines(mapping: GeometryMap, vectors: torch.Tensor, own_reference: torch.Tensor) -> np.ndarray:
    """float64 own cosines `[layers, tokens]` in pieces (all of a batch at once would double its vectors' memory
    twice), clipped to [-1, 1]."""
    pieces = [
        own_cosine(mapping, vectors[:, part], own_reference[part])
        for part in (slice(a, a + _COSINE_CHUNK) for a in range(0, vectors.shape[1], _COSINE_CHUNK))
    ]
    return torch.cat(pieces, dim=1).clamp(-1.0, 1.0).numpy()

"""Many texts at once: batched forward passes (sorted by length, padded on the right and masked) and every
token of a batch scored against the whole vocabulary in blocks, under each geometry. Each text's rows equal
`analyze` on it alone up to float32 rounding: padding is masked, and each score depends only on its own
vector and reference."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from analysis.capture import Stage, Tokens, read_stage, run_model, stage_taps, token_table, tokenize
from analysis.encoder import EncoderModel
from analysis.geometry import Geometry, geometry_scorer, own_cosine
from analysis.metrics import score_tokens
from analysis.references import Reference, vocabulary_scorer
from analysis.spikes import spike_mask
from analysis.wordclass import word_classes

ROW_COLUMNS = {
    "sentence_id": "the text's index among the input's non-empty texts, 0-based",
    "layer": "block index l, 0-based",
    "position": "token position in the text, 0-based, special tokens included",
    "token": "the tokenizer's piece",
    "token_id": "vocabulary id of the token",
    "word_class": "function, content, punctuation or special",
    "special": "True for tokens the tokenizer adds",
    "geometry": "how vectors and references are compared (cosine, centered, standardized, no_rogue)",
    "cosine": "cosine of the stage vector with the token's own reference, under the geometry",
    "rank": "1 + number of other vocabulary items scoring strictly higher; 1 = nearest",
    "spike": "True where the token spikes at this layer (rank >= 10x its rank before and after)",
    "truncated": "True for every row of a text cut at the model's length limit",
}


_COSINE_CHUNK = 512  # tokens per float64 own-cosine piece


@dataclass(frozen=True)
class SweepSettings:
    """What every text of a sweep is analysed with."""

    stage: Stage
    reference: Reference
    geometries: tuple[Geometry, ...]
    rogue_k: int


def length_batches(lengths: list[int], batch_tokens: int) -> Iterator[list[int]]:
    """Indices into `lengths`, shortest first, grouped so that a batch's padded size (its longest length times
    its size) stays within `batch_tokens` (a longer text goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for index in order:
        if batch and lengths[index] * (len(batch) + 1) > batch_tokens:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def batch_stage_vectors(encoder: EncoderModel, batch: list[Tokens], stage: Stage) -> list[torch.Tensor]:
    """Each text's stage vectors from one padded forward pass: `[layers, tokens, hidden]` per text."""
    with encoder.lock:
        readings = run_model(encoder, batch, stage_taps(encoder, stage))
    vectors = read_stage(encoder, readings, stage)  # [layers, batch, padded tokens, hidden]
    return [vectors[:, row, : len(tokens)] for row, tokens in enumerate(batch)]


def batch_rows(
    encoder: EncoderModel, texts: list[str], sentence_ids: list[int], settings: SweepSettings, batch_tokens: int
) -> pd.DataFrame:
    """ROW_COLUMNS rows for `texts` (labelled `sentence_ids`), ordered by sentence, geometry, layer, position."""
    tokens = [tokenize(encoder, text) for text in texts]
    frames = []
    for batch in length_batches([len(t) for t in tokens], batch_tokens):
        vectors = batch_stage_vectors(encoder, [tokens[i] for i in batch], settings.stage)
        frame = _score(encoder, [texts[i] for i in batch], [tokens[i] for i in batch], vectors, settings)
        frame["sentence_id"] = np.asarray([sentence_ids[i] for i in batch])[frame.pop("text_in_batch")]
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    return rows.sort_values(["sentence_id", "geometry", "layer", "position"], kind="stable", ignore_index=True)[
        list(ROW_COLUMNS)
    ]


def _score(
    encoder: EncoderModel, texts: list[str], tokens: list[Tokens], vectors: list[torch.Tensor], settings: SweepSettings
) -> pd.DataFrame:
    """Score every token of a batch at once (its tokens side by side as positions) under each geometry."""
    joined = torch.cat(vectors, dim=1)  # [layers, batch tokens, hidden]
    n_layers, n_tokens = joined.shape[:2]
    device = joined.device
    token_ids = torch.tensor([i for t in tokens for i in t.ids], device=device)
    position_ids = torch.tensor([p for t in tokens for p in t.position_ids], device=device)
    scorer = vocabulary_scorer(encoder, settings.reference)
    with torch.inference_mode():
        own_reference = scorer.references(token_ids, position_ids, torch.float64)
    tables = [token_table(t, text) for t, text in zip(tokens, texts, strict=True)]
    classes = np.concatenate([word_classes(table).to_numpy() for table in tables])
    lengths = [len(t) for t in tokens]
    per_text = np.cumsum([0, *lengths])
    frames = []
    for geometry in settings.geometries:
        layer_scorer = geometry_scorer(encoder, settings.stage, settings.reference, geometry, settings.rogue_k)
        with torch.inference_mode():
            ranks = score_tokens(layer_scorer, joined, token_ids, position_ids, 1).rank.cpu().numpy()
            cosines = torch.cat(  # float64 in pieces: all of a batch at once would double its vectors' memory twice
                [
                    own_cosine(layer_scorer, joined[:, part], own_reference[part])
                    for part in (slice(a, a + _COSINE_CHUNK) for a in range(0, n_tokens, _COSINE_CHUNK))
                ],
                dim=1,
            )
            cosines = cosines.clamp(-1.0, 1.0).cpu().numpy()
        spikes = np.concatenate([spike_mask(ranks[:, a:b]) for a, b in itertools.pairwise(per_text)], axis=1)
        frames.append(
            pd.DataFrame(
                {
                    "layer": np.repeat(np.arange(n_layers), n_tokens),
                    "position": np.tile(np.concatenate([table["position"] for table in tables]), n_layers),
                    "token": np.tile(np.concatenate([table["token"] for table in tables]), n_layers),
                    "token_id": np.tile(token_ids.cpu().numpy(), n_layers),
                    "word_class": np.tile(classes, n_layers),
                    "special": np.tile(np.concatenate([table["special"] for table in tables]), n_layers),
                    "geometry": geometry,
                    "cosine": cosines.reshape(-1),
                    "rank": ranks.reshape(-1),
                    "spike": spikes.reshape(-1),
                    "truncated": np.tile(np.repeat([t.truncated for t in tokens], lengths), n_layers),
                    "text_in_batch": np.tile(np.repeat(np.arange(len(tokens)), lengths), n_layers),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)

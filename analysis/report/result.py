"""`analyze`: every token's cosine, rank, neighbours and neighbour overlap at every layer, as tidy tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.capture.tokens import Tokens, token_table
from analysis.capture.trace import Trace, traced
from analysis.definitions import Geometry, Method, Reference, Stage
from analysis.model import derived
from analysis.model.loaded import LoadedModel
from analysis.scoring.geometry import GEOMETRY_SPECS, PLAIN, geometry_map, own_cosine
from analysis.scoring.ranks import TokenScores, map_scorer, overlap_counts, score_tokens
from analysis.scoring.references import vocabulary_scorer
from analysis.settings import DEFAULTS, AnalysisSettings
from analysis.version import provenance as provenance_record


@dataclass(frozen=True)
class AnalysisResult:
    """Everything one text yields for one model, stage and reference. Picklable: numpy and pandas only."""

    model: str  # the model's name (hub id or folder)
    settings: AnalysisSettings  # resolved: the reference is the one used
    method: Method  # how ranks were computed: the settings' geometry, or "original_demo"
    tokens: pd.DataFrame  # position, token, token_id, position_id, text, special, char_start, char_end
    metrics: pd.DataFrame  # METRICS_COLUMNS, one row per (layer, position)
    neighbors: pd.DataFrame  # NEIGHBORS_COLUMNS, top_k rows per (layer, position)
    overlap: pd.DataFrame  # OVERLAP_COLUMNS, one row per (layer, position)
    vectors: np.ndarray  # [layers, tokens, hidden] stage vectors
    own_references: np.ndarray  # [tokens, hidden] each token's own reference vector ref_i(p)
    n_tokens_in_text: int
    truncated_at_char: int | None
    provenance: dict
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see `derived`

    @property
    def truncated(self) -> bool:
        return self.truncated_at_char is not None

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        """`build()`, computed once per result and kept with it: tables drawn from this result on every rerun
        (word classes, chart rows) are not rebuilt when only the highlight changes."""
        if name not in self._derived:
            self._derived[name] = build()
        return self._derived[name]


def vocabulary_pieces(lm: LoadedModel) -> np.ndarray:
    """The piece of every embedding row `[vocab]`; rows the tokenizer does not name show as `<id N>`."""

    def build() -> np.ndarray:
        pieces = lm.tokenizer.convert_ids_to_tokens(list(range(lm.vocab_size)))
        return np.array([p if p is not None else f"<id {i}>" for i, p in enumerate(pieces)], dtype=object)

    return lm.cached(derived.VocabularyPieces(), build)


def _display_cosine(cosines: torch.Tensor) -> np.ndarray:
    """Flattened float64 cosines, clipped to [-1, 1] (float32 rounding can reach 1 + 4e-7)."""
    return cosines.reshape(-1).cpu().double().clamp(-1.0, 1.0).numpy()


def _read_only(array: np.ndarray) -> np.ndarray:
    """`array`, no longer writable: results are shared between sessions and must not change under them."""
    array.setflags(write=False)
    return array


def per_layer(token_frame: pd.DataFrame, n_layers: int, columns: list[str]) -> pd.DataFrame:
    """Repeat the token columns for every layer: `[layers * tokens]` rows, layer-major."""
    frame = pd.concat([token_frame[columns]] * n_layers, ignore_index=True)
    frame.insert(0, "layer", np.repeat(np.arange(n_layers), len(token_frame)))
    return frame


def analyze(
    lm: LoadedModel,
    text: str | Trace,
    *,
    stage: Stage = DEFAULTS.stage,
    reference: Reference | None = DEFAULTS.reference,
    geometry: Geometry = DEFAULTS.geometry,
    rogue_k: int = DEFAULTS.rogue_k,
    top_k: int = DEFAULTS.top_k,
    overlap_n: int = DEFAULTS.overlap_n,
) -> AnalysisResult:
    """Trace every token of `text` through every layer of `lm`: a text (run once here), or a `Trace` of one
    text that holds `stage` (so several analyses of one text share one forward pass).

    `reference` None: `position` where the model has an absolute position table, else `embedding`.
    The stage vectors come from one forward pass; every vocabulary row is scored exactly (see
    `analysis.scoring.references`), under `geometry` (see `analysis.scoring.geometry`; `rogue_k` dimensions for
    `no_rogue`).
    The overlap with the token's original neighbourhood uses that neighbourhood under plain cosine: it
    belongs to no layer. Raises ValueError on empty text, an unknown stage, reference, geometry or count, or a
    stage or reference this model does not have (the message names the ones it has).
    """
    if not isinstance(lm, LoadedModel):
        raise TypeError(f"analyze needs a model from analysis.load_model(name), not {type(lm).__name__}.")
    settings = AnalysisSettings(stage, reference, geometry, rogue_k, top_k, overlap_n).resolve(lm)
    reference = settings.chosen_reference
    scorer = vocabulary_scorer(lm, reference)
    geometry_maps = geometry_map(lm, stage, reference, geometry, rogue_k)
    run = traced(lm, text, [stage])
    text, tokens, vectors = run.texts[0], run.tokens[0], run.stage(stage)
    token_ids = torch.tensor(tokens.ids, device=vectors.device)
    position_ids = torch.tensor(tokens.position_ids, device=vectors.device)
    k_scored = max(top_k, overlap_n)
    with torch.inference_mode():
        own_reference = scorer.references(token_ids, position_ids)
        requests = [  # the token's own reference belongs to no layer: its neighbourhood is plain cosine's
            (vectors, map_scorer(lm, scorer, geometry_maps)),
            (own_reference.unsqueeze(0), map_scorer(lm, scorer, PLAIN)),
        ]
        layers, original = score_tokens(scorer, requests, token_ids, position_ids, k_scored)
        scores = TokenScores(
            *(torch.cat([getattr(layers, f), getattr(original, f)]) for f in TokenScores.__dataclass_fields__)
        )
        cosine = own_cosine(geometry_maps, vectors, scorer.references(token_ids, position_ids, torch.float64))
    background = geometry_maps.background
    record = {
        "rogue_k": rogue_k if GEOMETRY_SPECS[geometry].uses_rogue_k else None,
        "background_corpus": None if background is None else background.corpus,
    }
    return assemble_result(
        lm, text, tokens, vectors, scores, cosine, own_reference, settings, geometry, provenance=record
    )


def assemble_result(
    lm: LoadedModel,
    text: str,
    tokens: Tokens,
    vectors: torch.Tensor,
    scores: TokenScores,
    cosine: torch.Tensor,
    own_reference: torch.Tensor,
    settings: AnalysisSettings,
    method: Method,
    *,
    provenance: dict,
) -> AnalysisResult:
    """The tidy tables of one text: `vectors [layers, tokens, hidden]`, `scores` of the layers followed by one
    group for the tokens' own references, the displayed own `cosine [layers, tokens]`, the `own_reference`
    vectors `[tokens, hidden]`, under the resolved `settings` and `method` (the geometry, or "original_demo");
    `provenance` adds to (or overrides) the common record."""
    top_k, overlap_n = settings.top_k, settings.overlap_n
    n_layers, n_tokens = vectors.shape[:2]
    token_frame = token_table(tokens, text)
    ids_n = scores.top_ids[..., :overlap_n]
    previous = [overlap_counts(ids_n[layer], ids_n[layer - 1]).tolist() for layer in range(1, n_layers)]
    reference_overlap = overlap_counts(ids_n[:n_layers], ids_n[n_layers].unsqueeze(0))

    metrics = per_layer(token_frame, n_layers, ["position", "token", "token_id", "text", "special"])
    metrics["cosine"] = _display_cosine(cosine)
    metrics["rank"] = scores.rank[:n_layers].reshape(-1).cpu().numpy()

    overlap = per_layer(token_frame, n_layers, ["position", "token", "token_id"])
    overlap["n"] = min(overlap_n, lm.vocab_size)
    overlap["previous"] = pd.array([pd.NA] * n_tokens + [c for row in previous for c in row], dtype="Int64")
    overlap["reference"] = reference_overlap.reshape(-1).cpu().numpy()

    k = min(top_k, lm.vocab_size)
    top_ids = scores.top_ids[:n_layers, :, :k].reshape(-1).cpu().numpy()
    position = np.tile(np.repeat(np.arange(n_tokens), k), n_layers)
    own_ids = token_frame["token_id"].to_numpy()[position]
    neighbors = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), n_tokens * k),
            "position": position,
            "token": token_frame["token"].to_numpy()[position],
            "token_id": own_ids,
            "neighbor_rank": np.tile(np.arange(1, k + 1), n_layers * n_tokens),
            "neighbor_id": top_ids,
            "neighbor": vocabulary_pieces(lm)[top_ids],
            "cosine": _display_cosine(scores.top_cosines[:n_layers, :, :k]),
            "is_own": top_ids == own_ids,
        }
    )

    record = provenance_record(
        lm,
        stage=settings.stage,
        reference=settings.reference,
        geometry=settings.geometry,
        method=method,
        top_k=top_k,
        overlap_n=overlap_n,
        **tokens.record,
    )
    return AnalysisResult(
        model=lm.name,
        settings=settings,
        method=method,
        tokens=token_frame,
        metrics=metrics,
        neighbors=neighbors,
        overlap=overlap,
        vectors=_read_only(vectors.cpu().numpy().copy()),
        own_references=_read_only(own_reference.cpu().numpy().copy()),
        n_tokens_in_text=tokens.n_tokens_in_text,
        truncated_at_char=tokens.truncated_at_char,
        provenance={**record, **provenance},
    )

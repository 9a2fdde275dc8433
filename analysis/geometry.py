"""Geometry controls: is a layer-wise finding real, or an effect of anisotropy and rogue dimensions?

The background of (model, stage, reference) is every non-special token of the shipped corpus, each line run
alone. From it: per-layer mean and spread of the stage vectors and of the tokens' own references, the mean
cosine of distinct pairs (anisotropy, Ethayarajh 2019), and each dimension's share of it (rogue dimensions,
Timkey & van Schijndel 2021). A geometry transforms the stage vector v by f and every reference r by g
before the cosine:

    cosine        f(v) = v                       g(r) = r
    centered      f(v) = v - mu_l                g(r) = r - mu_R
    standardized  f(v) = (v - mu_l) / sigma_l    g(r) = (r - mu_R) / sigma_R
    no_rogue      v with the layer's top rogue_k dimensions set to 0, and r with the same ones

Every g is diagonal-affine, g(r) = d * (r - m), so cos(f(v), g(r)) = (a . r - a . m) / (|f(v)| |g(r)|) with
a = d * f(v): the scorer's exact products with the word table, and a weighted norm of each reference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from analysis.capture import Stage, check_stage, stage_vectors
from analysis.checks import check_choice
from analysis.encoder import EncoderModel
from analysis.references import Reference, VocabularyScorer, Weighting, check_reference, vocabulary_scorer
from analysis.sentences import CORPUS_FILE, corpus_sentences

Geometry = Literal["cosine", "centered", "standardized", "no_rogue"]

GEOMETRIES: dict[Geometry, str] = {
    "cosine": "plain cosine, as the model's vectors are",
    "centered": "subtract the corpus mean of each layer (and of the references): removes the common direction",
    "standardized": "centre, then divide each dimension by its corpus spread: no dimension dominates by scale",
    "no_rogue": "set to zero the rogue_k dimensions that carry most of the layer's mean cosine (rogue dimensions)",
}
assert tuple(GEOMETRIES) == get_args(Geometry)

STD_FLOOR = 1e-6
"""Spreads below this are raised to it, so a constant dimension does not divide by zero."""


@dataclass(frozen=True)
class Background:
    """Corpus statistics of one (model, stage, reference), in float64. Arrays: `[layers, hidden]` or `[hidden]`."""

    model: str
    stage: Stage
    reference: Reference
    stage_mean: np.ndarray  # [layers, hidden] mu_l
    stage_std: np.ndarray  # [layers, hidden] sigma_l (population, floored at STD_FLOOR)
    reference_mean: np.ndarray  # [hidden] mu_R
    reference_std: np.ndarray  # [hidden] sigma_R
    anisotropy: np.ndarray  # [layers] mean cosine of distinct pairs of stage vectors
    rogue_contribution: np.ndarray  # [layers, hidden] each dimension's share; sums over hidden to anisotropy
    rogue_order: np.ndarray  # [layers, hidden] dimension indices, largest contribution first (stable)
    n_tokens: int
    n_sentences: int
    corpus_sha256: str

    @property
    def corpus(self) -> dict[str, object]:
        """What the statistics were computed from, for provenance."""
        return {
            "file": CORPUS_FILE.name,
            "sha256": self.corpus_sha256,
            "sentences": self.n_sentences,
            "tokens": self.n_tokens,
        }


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al.'s pairwise update), float64."""

    count: int = 0
    mean: np.ndarray | float = 0.0
    m2: np.ndarray | float = 0.0

    def add(self, rows: np.ndarray, axis: int) -> None:
        n = rows.shape[axis]
        batch_mean = rows.mean(axis)
        batch_m2 = ((rows - np.expand_dims(batch_mean, axis)) ** 2).sum(axis)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total

    def std(self) -> np.ndarray:
        return np.maximum(np.sqrt(self.m2 / self.count), STD_FLOOR)


def compute_background(
    encoder: EncoderModel,
    stage: Stage = "attn_residual",
    reference: Reference = "position",
    sentences: list[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Background:
    """The background statistics from `sentences` (default: the shipped corpus), one forward pass each."""
    sentences = corpus_sentences() if sentences is None else sentences
    scorer = vocabulary_scorer(encoder, reference)
    stage_moments, reference_moments = _Moments(), _Moments()
    unit_sum = unit_sq_sum = 0.0
    for done, sentence in enumerate(sentences, start=1):
        tokens, vectors = stage_vectors(encoder, sentence, stage)
        keep = ~np.array(tokens.special)
        x = vectors.cpu().numpy()[:, keep].astype(np.float64)  # [layers, n, hidden]
        ids, positions = torch.tensor(tokens.ids)[keep], torch.tensor(tokens.position_ids)[keep]
        y = scorer.references(ids, positions, torch.float64).cpu().numpy()  # [n, hidden]
        stage_moments.add(x, axis=1)
        reference_moments.add(y, axis=0)
        unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
        unit_sum = unit_sum + unit.sum(1)
        unit_sq_sum = unit_sq_sum + (unit**2).sum(1)
        if on_progress:
            on_progress(done, len(sentences))
    n = stage_moments.count
    if n < 2:
        raise ValueError("The background needs at least two non-special tokens.")
    contribution = (unit_sum**2 - unit_sq_sum) / (n * (n - 1))
    return Background(
        model=encoder.name,
        stage=stage,
        reference=reference,
        stage_mean=np.asarray(stage_moments.mean),
        stage_std=stage_moments.std(),
        reference_mean=np.asarray(reference_moments.mean),
        reference_std=reference_moments.std(),
        anisotropy=contribution.sum(-1),
        rogue_contribution=contribution,
        rogue_order=np.argsort(-contribution, axis=-1, kind="stable"),
        n_tokens=n,
        n_sentences=len(sentences),
        corpus_sha256=hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
    )


def background(encoder: EncoderModel, stage: Stage = "attn_residual", reference: Reference = "position") -> Background:
    """The background statistics of the shipped corpus, computed once per model, stage and reference."""
    check_stage(encoder, stage)
    check_reference(encoder, reference)
    return encoder.cached(f"background/{stage}/{reference}", lambda: compute_background(encoder, stage, reference))


def check_rogue_k(rogue_k: object, hidden: int) -> int:
    """A whole number with 0 <= rogue_k < hidden."""
    if isinstance(rogue_k, bool) or not isinstance(rogue_k, int) or not 0 <= rogue_k < hidden:
        raise ValueError(f"rogue_k must be a whole number from 0 to {hidden - 1}, not {rogue_k!r}.")
    return rogue_k


class GeometryScorer:
    """Scores the stage vectors of every layer against all vocabulary references under one geometry.

    `cosine(vectors [layers, positions, hidden], position_ids)` → `[layers, positions, vocab]`; group g of
    `vectors` is layer g (blocks of positions, never of layers, are passed in). Built once per model, stage,
    reference, geometry and rogue_k: its weightings are one pass over the word table each.
    """

    def __init__(self, scorer: VocabularyScorer, geometry: Geometry, background: Background | None, rogue_k: int):
        self.scorer = scorer
        self.geometry = geometry
        self.vocab_size = scorer.vocab_size
        if geometry != "cosine" and background is None:
            raise ValueError(f"The geometry {geometry!r} needs background statistics.")
        self.background = background
        self.weighting: Weighting | None = None  # centered / standardized: the weighted reference norm
        device = scorer.table.device
        as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)  # noqa: E731
        if geometry in ("centered", "standardized"):
            standardized = geometry == "standardized"
            self.stage_mean = as_tensor(background.stage_mean)  # [layers, hidden]
            self.stage_scale = as_tensor(1 / background.stage_std) if standardized else None
            self.reference_mean = as_tensor(background.reference_mean)
            self.reference_scale = as_tensor(1 / background.reference_std) if standardized else None
            weights = self.reference_scale**2 if standardized else torch.ones_like(self.reference_mean)
            self.weighting = scorer.weighting(weights, self.reference_mean)
        if geometry == "no_rogue":
            rogue_dims = torch.from_numpy(np.ascontiguousarray(background.rogue_order[:, :rogue_k])).to(device)
            masks = torch.zeros(len(rogue_dims), scorer.hidden_size, device=device).scatter_(1, rogue_dims, 1.0)
            self.kept = 1 - masks  # [layers, hidden]
            self.removed = [scorer.weighting(mask) if rogue_k else None for mask in masks]

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Groups 0..layers-1 are layers, scored under the geometry; any group after them (a token's own
        reference, whose neighbourhood belongs to no layer) under plain cosine. All from one product with the
        word table."""
        if self.geometry == "cosine":
            return self.scorer.cosine(vectors, position_ids)
        n_layers = len(self.background.anisotropy)
        layers, plain = vectors[:n_layers], vectors[n_layers:]
        if self.geometry == "no_rogue":
            a = layers * self.kept.unsqueeze(1)
            transformed = a
        else:
            transformed = layers - self.stage_mean.unsqueeze(1)  # f(v), layer by layer
            if self.stage_scale is not None:
                transformed = transformed * self.stage_scale.unsqueeze(1)
            a = transformed if self.reference_scale is None else transformed * self.reference_scale
        scores, block = self.scorer.dots(torch.cat([a, plain]), position_ids, self.weighting)
        full_norm = self.scorer.norm_sq(block)  # |r|^2
        if self.geometry == "no_rogue":
            for layer, removed in enumerate(self.removed):  # |g(r)|^2 = |r|^2 - the removed dimensions' share
                removed_sq = self.scorer.norm_sq(block, removed) if removed is not None else 0
                scores[layer].div_(torch.sub(full_norm, removed_sq).clamp_min_(1e-24).sqrt_())
        else:
            scores[:n_layers].sub_((a @ self.reference_mean).unsqueeze(-1))
            scores[:n_layers].div_(self.scorer.norm_sq(block, self.weighting).clamp_min_(1e-24).sqrt_())
        scores[n_layers:].div_(full_norm.clamp_min(1e-24).sqrt_())
        vector_norm = torch.linalg.vector_norm(torch.cat([transformed, plain]), dim=-1, keepdim=True)
        return scores.div_(vector_norm.clamp_min_(1e-12))


def geometry_scorer(
    encoder: EncoderModel, stage: Stage, reference: Reference, geometry: Geometry, rogue_k: int
) -> GeometryScorer:
    """The scorer for `geometry`, with the background it needs; both built once per model and settings."""
    check_choice("geometry", geometry, GEOMETRIES)
    rogue_k = check_rogue_k(rogue_k, encoder.hidden_size)
    if geometry == "cosine":
        return GeometryScorer(vocabulary_scorer(encoder, reference), geometry, None, rogue_k)

    def build() -> GeometryScorer:
        with torch.inference_mode():
            scorer = vocabulary_scorer(encoder, reference)
            return GeometryScorer(scorer, geometry, background(encoder, stage, reference), rogue_k)

    key = f"geometry/{stage}/{reference}/{geometry}/{rogue_k if geometry == 'no_rogue' else ''}"
    return encoder.cached(key, build)


def own_cosine(geometry: GeometryScorer, vectors: torch.Tensor, own_reference: torch.Tensor) -> torch.Tensor:
    """cos(f(v), g(ref_i(p))) in float64, f and g applied explicitly: vectors `[layers, tokens, hidden]`, each
    token's own reference `[tokens, hidden]` → `[layers, tokens]`, on the CPU (MPS has no float64). Exact to the
    digits shown."""
    v = vectors.cpu().double()
    r = own_reference.cpu().double().expand(v.shape[0], -1, -1)
    found = geometry.background
    if geometry.geometry in ("centered", "standardized"):
        v = v - torch.from_numpy(found.stage_mean).unsqueeze(1)
        r = r - torch.from_numpy(found.reference_mean)
        if geometry.geometry == "standardized":
            v = v / torch.from_numpy(found.stage_std).unsqueeze(1)
            r = r / torch.from_numpy(found.reference_std)
    elif geometry.geometry == "no_rogue":
        keep = geometry.kept.cpu().double().unsqueeze(1)
        v, r = v * keep, r * keep
    norms = torch.linalg.vector_norm(v, dim=-1) * torch.linalg.vector_norm(r, dim=-1)
    return (v * r).sum(-1) / norms.clamp_min(1e-300)

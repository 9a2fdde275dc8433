"""Geometry controls: is a layer-wise finding real, or an effect of anisotropy and rogue dimensions?

The background of (model, stage, reference) is every non-special token of the shipped corpus, each line run
alone. From it: per-layer mean and spread of the stage vectors and of the tokens' own references, the mean
cosine of distinct pairs (anisotropy, Ethayarajh 2019), and each dimension's share of it (rogue dimensions,
Timkey & van Schijndel 2021). The stage's statistics need a forward pass over the corpus, once per (model,
stage); the reference's need none, so changing the reference costs a fraction of a second.

A geometry transforms the stage vector v of layer l by f and every reference r by g before the cosine, each an
affine map with a diagonal scale (`GeometryMap`, described once here):

    cosine        f(v) = v                       g(r) = r
    centered      f(v) = v - mu_l                g(r) = r - mu_R
    standardized  f(v) = (v - mu_l) / sigma_l    g(r) = (r - mu_R) / sigma_R
    no_rogue      v with the layer's top rogue_k dimensions set to 0, and r with the same ones

The float64 own cosine applies the maps explicitly (`own_cosine`); the fast scorer (`analysis.scoring.ranks`)
derives its products with the vocabulary table from the same maps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from analysis.capture.tokens import length_batches, tokenize_all
from analysis.capture.trace import trace_tokens
from analysis.checks import check_choice
from analysis.data import CORPUS_FILE, corpus_sentences
from analysis.definitions import GEOMETRIES, Geometry, OnProgress, Reference, Stage
from analysis.model import derived
from analysis.model.capabilities import check_reference, check_stage
from analysis.model.loaded import LoadedModel
from analysis.scoring.references import vocabulary_scorer

STD_FLOOR = 1e-6
"""Spreads below this are raised to it, so a constant dimension does not divide by zero."""

BACKGROUND_BATCH_TOKENS = 1024
"""Padded tokens per forward pass when reading the corpus (small enough for a progress bar to move)."""


@dataclass(frozen=True)
class StageStatistics:
    """Corpus statistics of one (model, stage), float64: `[layers, hidden]` or `[layers]`."""

    stage: Stage
    mean: np.ndarray  # [layers, hidden] mu_l
    std: np.ndarray  # [layers, hidden] sigma_l (population, floored at STD_FLOOR)
    anisotropy: np.ndarray  # [layers] mean cosine of distinct pairs of stage vectors
    rogue_contribution: np.ndarray  # [layers, hidden] each dimension's share; sums over hidden to anisotropy
    rogue_order: np.ndarray  # [layers, hidden] dimension indices, largest contribution first (stable)
    n_tokens: int


@dataclass(frozen=True)
class ReferenceStatistics:
    """Mean and spread of the corpus tokens' own reference vectors, float64 `[hidden]`."""

    reference: Reference
    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class Background:
    """Corpus statistics of one (model, stage, reference), in float64: its stage vectors' and its references'."""

    model: str
    vectors: StageStatistics  # of the stage vectors, per layer
    references: ReferenceStatistics  # of the tokens' own references
    n_sentences: int
    corpus_sha256: str

    @property
    def corpus(self) -> dict[str, object]:
        """What the statistics were computed from, for provenance."""
        return {
            "file": CORPUS_FILE.name,
            "sha256": self.corpus_sha256,
            "sentences": self.n_sentences,
            "tokens": self.vectors.n_tokens,
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


def stage_statistics(
    lm: LoadedModel,
    stage: Stage,
    sentences: list[str],
    on_progress: OnProgress | None = None,
) -> StageStatistics:
    """The stage's statistics over the non-special tokens of `sentences`, in padded batches (each text's rows are
    what it gives alone: padding is masked). `on_progress(done, total)` counts sentences."""
    tokens = tokenize_all(lm, sentences)
    moments = _Moments()
    unit_sum = unit_sq_sum = 0.0
    done = 0
    for batch in length_batches([len(t) for t in tokens], BACKGROUND_BATCH_TOKENS):
        run = trace_tokens(lm, [sentences[i] for i in batch], [tokens[i] for i in batch], [stage])
        for index, text in enumerate(run.tokens):
            x = (
                run.stage(stage, index).cpu().numpy()[:, ~np.array(text.special)].astype(np.float64)
            )  # [layers, n, hidden]
            moments.add(x, axis=1)
            unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
            unit_sum = unit_sum + unit.sum(1)
            unit_sq_sum = unit_sq_sum + (unit**2).sum(1)
        done += len(batch)
        if on_progress:
            on_progress(done, len(sentences))
    n = moments.count
    if n < 2:
        raise ValueError("The background needs at least two non-special tokens.")
    contribution = np.asarray((unit_sum**2 - unit_sq_sum) / (n * (n - 1)))  # [layers, hidden]
    return StageStatistics(
        stage=stage,
        mean=np.asarray(moments.mean),
        std=moments.std(),
        anisotropy=contribution.sum(-1),
        rogue_contribution=contribution,
        rogue_order=np.argsort(-contribution, axis=-1, kind="stable"),
        n_tokens=n,
    )


def reference_statistics(lm: LoadedModel, reference: Reference, sentences: list[str]) -> ReferenceStatistics:
    """Mean and spread of the own references of the non-special tokens of `sentences`: no forward pass."""
    scorer = vocabulary_scorer(lm, reference)
    moments = _Moments()
    for tokens in tokenize_all(lm, sentences):
        keep = ~np.array(tokens.special)
        ids, positions = torch.tensor(tokens.ids)[keep], torch.tensor(tokens.position_ids)[keep]
        moments.add(scorer.references(ids, positions, torch.float64).numpy(), axis=0)
    return ReferenceStatistics(reference=reference, mean=np.asarray(moments.mean), std=moments.std())


def compute_background(
    lm: LoadedModel,
    stage: Stage,
    reference: Reference,
    sentences: list[str] | None = None,
    on_progress: OnProgress | None = None,
) -> Background:
    """The background statistics from `sentences` (default: the shipped corpus), computed afresh."""
    sentences = corpus_sentences() if sentences is None else sentences
    found = stage_statistics(lm, stage, sentences, on_progress)
    return combine(lm, found, reference_statistics(lm, reference, sentences), sentences)


def combine(
    lm: LoadedModel, stage: StageStatistics, reference: ReferenceStatistics, sentences: list[str]
) -> Background:
    """One (model, stage, reference)'s background from its stage's and its reference's statistics."""
    return Background(
        model=lm.name,
        vectors=stage,
        references=reference,
        n_sentences=len(sentences),
        corpus_sha256=hashlib.sha256("\n".join(sentences).encode()).hexdigest(),
    )


def corpus_statistics(lm: LoadedModel, stage: Stage, on_progress: OnProgress | None = None) -> StageStatistics:
    """The shipped corpus's statistics of `stage` for this model, computed once per model and stage (a forward
    pass per batch of sentences; `on_progress(done, total)` counts them)."""
    check_stage(lm, stage)
    return lm.cached(
        derived.StageStatistics(stage), lambda: stage_statistics(lm, stage, corpus_sentences(), on_progress)
    )


def background(
    lm: LoadedModel,
    stage: Stage,
    reference: Reference,
    on_progress: OnProgress | None = None,
) -> Background:
    """The background statistics of the shipped corpus: the stage's computed once per model and stage
    (`corpus_statistics`), the reference's once per model and reference (no forward pass)."""
    found = corpus_statistics(lm, stage, on_progress)
    check_reference(lm, reference)
    sentences = corpus_sentences()
    references = lm.cached(
        derived.ReferenceStatistics(reference), lambda: reference_statistics(lm, reference, sentences)
    )
    return lm.cached(derived.Background(stage, reference), lambda: combine(lm, found, references, sentences))


@dataclass(frozen=True)
class GeometryMap:
    """How one geometry compares: a stage vector v of layer l becomes f(v) = vector_scale[l] * (v -
    vector_shift[l]) and every reference r becomes g(r) = reference_scale[l] * (r - reference_shift). float64
    arrays, `[layers, hidden]` (`reference_shift` `[hidden]`); None where the map does not scale or shift."""

    source: derived.MapSource  # what the map is built from (its geometry first): names its scorer among derived data
    vector_scale: np.ndarray | None = None
    vector_shift: np.ndarray | None = None
    reference_scale: np.ndarray | None = None
    reference_shift: np.ndarray | None = None
    background: Background | None = None  # what the maps were built from, for provenance

    def apply(self, vectors: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(v) and g(r) in float64 on the CPU: vectors `[layers, tokens, hidden]`, each token's reference
        `[tokens, hidden]` → both `[layers, tokens, hidden]`."""
        v = vectors.cpu().double()
        r = references.cpu().double().expand(v.shape[0], -1, -1)
        if self.vector_shift is not None:
            v = v - torch.from_numpy(self.vector_shift).unsqueeze(1)
        if self.vector_scale is not None:
            v = v * torch.from_numpy(self.vector_scale).unsqueeze(1)
        if self.reference_shift is not None:
            r = r - torch.from_numpy(self.reference_shift)
        if self.reference_scale is not None:
            r = r * torch.from_numpy(self.reference_scale).unsqueeze(1)
        return v, r


PLAIN = GeometryMap(derived.MapSource("cosine"))
"""Plain cosine: no map at all."""


def _centered(found: Background, source: derived.MapSource, rogue_k: int) -> GeometryMap:
    return GeometryMap(source, vector_shift=found.vectors.mean, reference_shift=found.references.mean, background=found)


def _standardized(found: Background, source: derived.MapSource, rogue_k: int) -> GeometryMap:
    return GeometryMap(
        source,
        vector_scale=1 / found.vectors.std,
        vector_shift=found.vectors.mean,
        reference_scale=np.tile(1 / found.references.std, (len(found.vectors.std), 1)),
        reference_shift=found.references.mean,
        background=found,
    )


def _no_rogue(found: Background, source: derived.MapSource, rogue_k: int) -> GeometryMap:
    kept = np.ones_like(found.vectors.mean)
    np.put_along_axis(kept, found.vectors.rogue_order[:, :rogue_k], 0.0, axis=-1)
    return GeometryMap(source, vector_scale=kept, reference_scale=kept, background=found)


@dataclass(frozen=True)
class GeometrySpec:
    """Everything the code needs to know about one geometry (its meaning is `GEOMETRIES`'s)."""

    build: Callable[[Background, derived.MapSource, int], GeometryMap] | None  # None: no map, no background
    uses_rogue_k: bool  # whether rogue_k changes it
    wording: str  # how a chart's axis says it: "after centering" ("" for plain cosine)
    shared_product: bool  # scored on the product with the table that plain cosine uses (`analysis.scoring.ranks`)

    @property
    def needs_background(self) -> bool:
        """Whether it needs the corpus statistics (one forward pass over the shipped corpus per model and stage)."""
        return self.build is not None


GEOMETRY_SPECS: dict[Geometry, GeometrySpec] = {
    "cosine": GeometrySpec(None, uses_rogue_k=False, wording="", shared_product=True),
    "centered": GeometrySpec(_centered, uses_rogue_k=False, wording="after centering", shared_product=True),
    "standardized": GeometrySpec(
        _standardized, uses_rogue_k=False, wording="after standardizing", shared_product=False
    ),
    "no_rogue": GeometrySpec(_no_rogue, uses_rogue_k=True, wording="rogue dimensions removed", shared_product=True),
}
"""One spec per geometry; adding a geometry is a name in `GEOMETRIES` and a row here (README: A new geometry)."""
assert GEOMETRY_SPECS.keys() == GEOMETRIES.keys()


def geometry_spec(geometry: object) -> GeometrySpec:
    """The spec of `geometry`; a ValueError naming the geometries there are for any other."""
    return GEOMETRY_SPECS[check_choice("geometry", geometry, GEOMETRIES)]


def geometry_map(
    lm: LoadedModel,
    stage: Stage,
    reference: Reference,
    geometry: Geometry,
    rogue_k: int,
    on_progress: OnProgress | None = None,
) -> GeometryMap:
    """The maps of `geometry` (see the module's table) for this model, stage and reference, built once from the
    background it needs. Its settings are resolved (`AnalysisSettings.resolve` checks them once)."""
    spec = GEOMETRY_SPECS[geometry]
    if spec.build is None:
        return PLAIN
    build = spec.build
    found = background(lm, stage, reference, on_progress)
    removed = rogue_k if spec.uses_rogue_k else None
    source = derived.MapSource(geometry, stage, reference, found.corpus_sha256, removed)
    return lm.cached(derived.GeometryMap(stage, reference, geometry, removed), lambda: build(found, source, rogue_k))


def own_cosine(geometry: GeometryMap, vectors: torch.Tensor, own_reference: torch.Tensor) -> torch.Tensor:
    """cos(f(v), g(ref_i(p))) in float64, f and g applied explicitly: vectors `[layers, tokens, hidden]`, each
    token's own reference `[tokens, hidden]` → `[layers, tokens]`, on the CPU (MPS has no float64). Exact to the
    digits shown."""
    v, r = geometry.apply(vectors, own_reference)
    norms = torch.linalg.vector_norm(v, dim=-1) * torch.linalg.vector_norm(r, dim=-1)
    return (v * r).sum(-1) / norms.clamp_min(1e-300)

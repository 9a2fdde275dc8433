"""Everything derived from a loaded model and kept with it (`LoadedModel.cached`), named once here: one frozen key
type per kind of derived data, so no module spells a key by hand, and the one place that says whether a value
is ready. A model moved to another device drops them all (`LoadedModel.move_to`); each is rebuilt when next asked
for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from analysis.definitions import Geometry, Reference, Stage

if TYPE_CHECKING:
    from analysis.model.loaded import LoadedModel


@dataclass(frozen=True)
class MemoryLimit:
    """The longest input whose pass stays within the model's text budget (`analysis.model.budget`)."""


@dataclass(frozen=True)
class VocabularyPieces:
    """The piece of every embedding row (`analysis.report.result.vocabulary_pieces`)."""


@dataclass(frozen=True)
class VocabConstants:
    """Per-item constants of the word table (`analysis.scoring.references.vocab_constants`)."""


@dataclass(frozen=True)
class ProjectedTable:
    """The word table projected into the hidden size, LayerNorm'd first where `normalised`."""

    normalised: bool


@dataclass(frozen=True)
class ScorerTable:
    """Which table a vocabulary scorer scores against: its reference's, normalised or not."""

    reference: Reference
    normalised: bool


@dataclass(frozen=True)
class PlainWeighting:
    """The plain cosine's weighting of a scorer's table (`VocabularyScorer.plain`)."""

    reference: Reference


@dataclass(frozen=True)
class StageStatistics:
    """The shipped corpus's statistics of one stage (`analysis.scoring.geometry.corpus_statistics`): one forward
    pass over the corpus."""

    stage: Stage


@dataclass(frozen=True)
class ReferenceStatistics:
    """Mean and spread of the corpus tokens' own references (no forward pass)."""

    reference: Reference


@dataclass(frozen=True)
class Background:
    """One (stage, reference)'s background: its stage's and its reference's statistics together."""

    stage: Stage
    reference: Reference


@dataclass(frozen=True)
class MapSource:
    """What a geometry map is built from: the geometry (or "original_demo"), and where it needs a background, its
    stage, reference and corpus, and the rogue dimensions removed."""

    geometry: str
    stage: Stage | None = None
    reference: Reference | None = None
    corpus_sha256: str | None = None
    rogue_k: int | None = None


@dataclass(frozen=True)
class GeometryMap:
    """One geometry's map at a stage and reference (`analysis.scoring.geometry.geometry_map`)."""

    stage: Stage
    reference: Reference
    geometry: Geometry
    rogue_k: int | None  # None where the geometry removes no dimensions


@dataclass(frozen=True)
class MapScorer:
    """A geometry map's scorer on one table (`analysis.scoring.ranks.map_scorer`)."""

    table: ScorerTable
    source: MapSource


@dataclass(frozen=True)
class FittedFile:
    """A fitted lens read from its file (`analysis.fitted.lens.load_fitted`), the weights its record names."""

    path: str
    sha256: str


DerivedKey = (
    MemoryLimit
    | VocabularyPieces
    | VocabConstants
    | ProjectedTable
    | PlainWeighting
    | StageStatistics
    | ReferenceStatistics
    | Background
    | GeometryMap
    | MapScorer
    | FittedFile
)
"""What a model keeps derived data under."""


def statistics_ready(lm: LoadedModel, stage: Stage) -> bool:
    """Whether this model's corpus statistics of `stage` are computed (the geometries and the anisotropy baseline
    need them; computing them is one forward pass over the shipped corpus)."""
    return lm.has_cached(StageStatistics(stage))

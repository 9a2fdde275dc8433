"""The settings records: how one text is analysed (`AnalysisSettings`) and how every text of a sweep is
(`SweepSettings`, the same record plus the sweep's own fields). Their defaults are the only ones: the API, the
command line, the app, the sweep and the verdict take theirs from here. `resolve(lm)` fills in what depends on
the model and checks every value against it, once, before anything runs; the code below it trusts a resolved
record. Importing this module loads no torch (the command line's `--help` reads the defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Self

from analysis.checks import check_choice
from analysis.definitions import GEOMETRIES, LENS_ROW_COLUMNS, METHODS, ROW_COLUMNS, Geometry, Method, Reference, Stage

if TYPE_CHECKING:
    from analysis.model.loaded import LoadedModel


@dataclass(frozen=True)
class AnalysisSettings:
    """How one text is analysed. `reference` None stands for the model's default (`resolve` fills it in)."""

    stage: Stage = "attn_residual"
    reference: Reference | None = None  # None: position where the model has absolute positions, else embedding
    geometry: Geometry = "cosine"
    rogue_k: int = 3  # dimensions the no_rogue geometry removes
    top_k: int = 15  # nearest vocabulary neighbours kept per token and layer
    overlap_n: int = 100  # neighbourhood size N of the overlap counts

    def resolve(self, lm: LoadedModel) -> Self:
        """These settings for `lm` (a loaded model or its outline): the default reference filled in, and every
        value checked against what the model has (its stages, references, width and vocabulary). A ValueError
        names the value and what the model has instead."""
        from analysis.model.capabilities import check_vocabulary_count

        resolved = self._resolve_scoring(lm)
        check_vocabulary_count(lm, "top_k", self.top_k)
        check_vocabulary_count(lm, "overlap_n", self.overlap_n)
        return resolved

    @property
    def chosen_reference(self) -> Reference:
        """The reference of resolved settings (`resolve` fills in the model's default)."""
        if self.reference is None:
            raise ValueError("These settings leave the reference to the model's default: resolve them first.")
        return self.reference

    def sweeping(
        self, methods: tuple[Method, ...], *, lens: bool = False, max_tokens: int | None = None
    ) -> SweepSettings:
        """These settings over many texts, scored under every one of `methods` (`SweepSettings`)."""
        own = {field.name: getattr(self, field.name) for field in fields(AnalysisSettings)}
        return SweepSettings(**own, methods=methods, lens=lens, max_tokens=max_tokens)

    def _resolve_scoring(self, lm: LoadedModel) -> Self:
        """The stage, reference (default filled in), geometry and rogue_k checked against `lm`."""
        from analysis.model.capabilities import check_reference, check_rogue_k, check_stage, default_reference

        check_stage(lm, self.stage)
        check_choice("geometry", self.geometry, GEOMETRIES)
        reference = check_reference(lm, default_reference(lm) if self.reference is None else self.reference)
        check_rogue_k(lm, self.rogue_k)
        return replace(self, reference=reference)


DEFAULTS = AnalysisSettings()
SEED_SETTINGS = AnalysisSettings(reference="position")
"""The seed's settings: the defaults, with the word + position reference it used (the app opens on them; a model
without absolute positions falls back)."""


@dataclass(frozen=True)
class SweepSettings(AnalysisSettings):
    """What every text of a sweep is analysed with: the analysis settings, scored under every one of `methods`
    (which takes the place of the one `geometry`; a sweep keeps no neighbours, so `top_k` and `overlap_n` play no
    part), with the lens columns where `lens`, and texts read whole up to `max_tokens`."""

    methods: tuple[Method, ...] = ("cosine",)
    lens: bool = False  # add the lens columns (LENS_ROW_COLUMNS) at the stage, against the model's default target
    max_tokens: int | None = None  # the longest text read whole; None: the model's own (LoadedModel.max_tokens)
    lens_fitted: str | None = None  # the lens reads each layer through this fitted lens (its file); None: plain
    lens_fitted_sha256: str | None = None  # the weights that fitted lens's record names (a changed file is refused)

    IDENTITY = ("stage", "reference", "methods", "rogue_k", "lens", "max_tokens", "lens_fitted", "lens_fitted_sha256")
    """The fields that make a sweep what it is (recorded in its manifest; a rerun must match them)."""

    @property
    def columns(self) -> list[str]:
        """The columns of the rows: ROW_COLUMNS, then LENS_ROW_COLUMNS with the lens."""
        return [*ROW_COLUMNS, *(LENS_ROW_COLUMNS if self.lens else ())]

    @property
    def identity(self) -> dict[str, object]:
        """The IDENTITY fields as a manifest records them (JSON: methods as a list)."""
        return {name: list(self.methods) if name == "methods" else getattr(self, name) for name in self.IDENTITY}

    @classmethod
    def from_identity(cls, record: Mapping[str, Any]) -> SweepSettings:
        """The settings a manifest's IDENTITY fields record; a field recorded before it existed keeps its default
        (a sweep made without the lens continues as one)."""
        found = {name: record[name] for name in cls.IDENTITY if name in record}
        if "methods" in found:
            found["methods"] = tuple(found["methods"])  # JSON holds it as a list
        return cls(**found)

    def resolve(self, lm: LoadedModel) -> Self:
        """These settings for `lm` (a loaded model or its outline): the default reference filled in; the stage,
        reference, methods (the original demo only where it is defined), rogue_k, the lens and max_tokens checked
        against it."""
        from analysis.model.capabilities import check_lens, check_max_tokens, demo_unavailable

        if not self.methods:
            raise ValueError("A sweep needs at least one method.")
        for method in self.methods:
            check_choice("method", method, METHODS)
        if "original_demo" in self.methods and (why := demo_unavailable(lm)) is not None:
            raise ValueError(f"--method original_demo: {why}.")
        resolved = self._resolve_scoring(lm)
        if self.lens:
            check_lens(lm)
        if self.lens_fitted is not None and not self.lens:
            raise ValueError("--lens-fitted chooses how the lens reads: add --lens to the sweep.")
        if self.max_tokens is not None:
            check_max_tokens(lm, self.max_tokens)
        return resolved

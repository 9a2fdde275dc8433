"""What a loaded model offers: its stages and references, and each missing one with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from analysis.capture import unavailable_stages
from analysis.definitions import REFERENCES, STAGES, Reference, Stage
from analysis.encoder import EncoderModel
from analysis.original_demo import demo_unavailable
from analysis.references import unavailable_references


@dataclass(frozen=True)
class Capabilities:
    """Which stages and references a model has, why the others are missing, and whether the original demo's
    computation (DESIGN section 8) is defined for it."""

    model: str
    family: str
    stages: tuple[Stage, ...]
    references: tuple[Reference, ...]
    unavailable: dict[str, str]  # stage or reference name -> why the model lacks it
    original_demo: str | None  # None where the demo applies, else why not

    def reason(self, choice: str) -> str | None:
        """Why `choice` (a stage or reference) is unavailable, or None where the model has it."""
        return self.unavailable.get(choice)


def capabilities(encoder: EncoderModel) -> Capabilities:
    """The stages and references `encoder` has, and each unavailable one with the reason."""
    missing_stages = unavailable_stages(encoder)
    missing_references = unavailable_references(encoder)
    return Capabilities(
        model=encoder.name,
        family=encoder.structure.label,
        stages=tuple(stage for stage in STAGES if stage not in missing_stages),
        references=tuple(reference for reference in REFERENCES if reference not in missing_references),
        unavailable={**missing_stages, **missing_references},
        original_demo=demo_unavailable(encoder),
    )

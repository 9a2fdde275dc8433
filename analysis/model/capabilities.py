"""What a loaded model offers: its stages, references and lens, and each missing one with the reason."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.checks import check_available, check_count
from analysis.definitions import REFERENCES, STAGES, Reference, Stage
from analysis.model.loaded import LoadedModel


@dataclass(frozen=True)
class Capabilities:
    """Which stages and references a model has, why the others are missing, and whether the original demo's
    computation (docs/design.md, section 6) is defined for it."""

    model: str
    family: str
    stages: tuple[Stage, ...]
    references: tuple[Reference, ...]
    unavailable: dict[str, str]  # stage, reference, "lens" or "masked" (the masked lens) -> why the model lacks it
    original_demo: str | None  # None where the demo applies, else why not

    @property
    def lens(self) -> bool:
        """Whether the model has a lens: its own prediction head was loaded."""
        return "lens" not in self.unavailable

    def reason(self, choice: str) -> str | None:
        """Why `choice` (a stage, reference, "lens" or "masked") is unavailable, or None where the model has it."""
        return self.unavailable.get(choice)


def capabilities(lm: LoadedModel) -> Capabilities:
    """The stages and references `lm` has, and each unavailable one with the reason."""
    missing_stages = unavailable_stages(lm)
    missing_references = unavailable_references(lm)
    return Capabilities(
        model=lm.name,
        family=lm.structure.label,
        stages=tuple(stage for stage in STAGES if stage not in missing_stages),
        references=tuple(reference for reference in REFERENCES if reference not in missing_references),
        unavailable={
            name: why
            for table in (missing_stages, missing_references, unavailable_lens(lm))
            for name, why in table.items()
        },
        original_demo=demo_unavailable(lm),
    )


def unavailable_stages(lm: LoadedModel) -> dict[Stage, str]:
    """The stages this model does not have, each with the reason."""
    if lm.structure.kind == "parallel":
        return {
            "attn_output": f"{lm.structure.label} runs attention and MLP side by side on the block input, so no "
            "norm is ever applied to attn_residual"
        }
    if lm.structure.kind == "norm_after":
        return {
            "attn_output": f"{lm.structure.label} normalises the attention's and the MLP's outputs, never their "
            "inputs, so no norm is ever applied to attn_residual"
        }
    return {}


def check_stage(lm: LoadedModel, stage: object) -> Stage:
    """A stage this model has; otherwise a ValueError naming the ones it has and why this one is missing."""
    return check_available(lm.name, "stage", stage, STAGES, unavailable_stages(lm))


def unavailable_references(lm: LoadedModel) -> dict[Reference, str]:
    """The references this model does not have, each with the reason."""
    if lm.structure.embeddings.positions_after_projection:
        why = (
            f"{lm.structure.label} adds its position rows after projecting its word rows into the hidden size, so "
            "only the projected word row (raw) is read as a reference"
        )
        return {"position": why, "embedding": why}
    if lm.structure.embeddings.position is None:
        return {
            "position": f"{lm.structure.label} has no absolute position table (its positions act inside "
            "attention), so word + position row does not exist"
        }
    return {}


def default_reference(lm: LoadedModel) -> Reference:
    """`position` where the model has an absolute position table (the seed's choice), else `embedding`, else
    `raw`."""
    missing = unavailable_references(lm)
    return next(reference for reference in ("position", "embedding", "raw") if reference not in missing)


def check_reference(lm: LoadedModel, reference: object) -> Reference:
    """A reference this model has; otherwise a ValueError naming the ones it has and why this one is missing."""
    return check_available(lm.name, "reference", reference, REFERENCES, unavailable_references(lm))


def demo_unavailable(lm: LoadedModel) -> str | None:
    """Why the demo's computation is not defined for this model, or None: it needs a post-LayerNorm encoder with
    hidden-size embeddings and square value and attention-output matrices, as roberta-base has."""
    structure = lm.structure
    hidden = lm.hidden_size
    square = all(
        parts.value is not None
        and tuple(parts.value.weight.shape) == (hidden, hidden)
        and isinstance(parts.out_projection, torch.nn.Linear)
        and tuple(parts.out_projection.weight.shape) == (hidden, hidden)
        for parts in structure.layers
    )
    if structure.kind != "post_ln" or structure.embeddings.projection is not None or not square:
        return (
            f"the original demo's computation is defined for post-LayerNorm encoders with hidden-size embeddings "
            f"and square value and output matrices (the RoBERTa family); {lm.name} is a {structure.label}"
        )
    return None


def unavailable_lens(lm: LoadedModel) -> dict[str, str]:
    """Why `lm` has no lens (key "lens") or no masked lens (key "masked"); empty where it has both."""
    if lm.unembed is None:
        why = lm.no_lens or "it was loaded without its prediction head"
        return {"lens": why, "masked": why}
    if lm.structure.causal:
        return {"masked": "a decoder predicts the next token from the ones before it and never sees a mask token"}
    if lm.tokenizer.mask_token_id is None:
        return {"masked": "its tokenizer has no mask token"}
    return {}


def check_lens(lm: LoadedModel, masked: bool = False) -> torch.nn.Module:
    """The model's prediction head (`lm.unembed`); a ValueError saying why where it has no lens (or no masked
    lens)."""
    missing = unavailable_lens(lm)
    for kind in ("lens", "masked") if masked else ("lens",):
        if kind in missing:
            what = "masked lens" if kind == "masked" else "lens"
            raise ValueError(f"{lm.name} has no {what}: {missing[kind]}.")
    return lm.unembed


def check_max_tokens(lm: LoadedModel, max_tokens: object) -> int:
    """A text length this model can read: room for its special tokens and a word (3), at most its position limit;
    a ValueError otherwise. Past its memory limit it is allowed: that is how a user with the memory asks for more."""
    value = check_count("max_tokens", max_tokens, lm.position_limit, f"positions {lm.name} reads")
    if value < 3:
        raise ValueError(f"max_tokens is {value}: a text needs room for its special tokens and a word (3 or more).")
    return value


def check_rogue_k(lm: LoadedModel, rogue_k: object) -> int:
    """A number of dimensions the no_rogue geometry can remove: whole, 0 <= rogue_k < the model's width."""
    hidden = lm.hidden_size
    if isinstance(rogue_k, bool) or not isinstance(rogue_k, int) or not 0 <= rogue_k < hidden:
        raise ValueError(f"rogue_k must be a whole number from 0 to {hidden - 1}, not {rogue_k!r}.")
    return rogue_k


def check_vocabulary_count(lm: LoadedModel, name: str, value: object) -> int:
    """A count of vocabulary items (`top_k`, `overlap_n`, …): whole, at least 1 and at most the model's vocabulary;
    a ValueError otherwise (a count past it would only allocate)."""
    return check_count(name, value, lm.vocab_size, f"vocabulary items of {lm.name}")

"""The model's own prediction head, as one module the lens applies to any layer's vectors: the norm the model
applies after its last block (decoders, ModernBERT), then its masked-LM or causal-LM head (`families.toml`:
`final_norm`, `lens_head`; for a decoder the table does not name, its output embedding), then what its config does
to the logits: a scale (Cohere, Granite) or a soft cap (Gemma 2). These are the model's modules, with its weights;
only the scale and the soft cap, formulas of the config, are written here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

from analysis.model.architectures import UnsupportedModelError, family_of, module_at

LensKind = Literal["masked", "causal"]
"""Which head a lens reads: a masked-LM head (encoders) or a causal-LM head (decoders)."""


def lens_kind(config: PretrainedConfig) -> LensKind | None:
    """The head a model of this config's family has a lens through; None where the family table names none. A
    type the table does not name has one where transformers builds it as a causal LM and not as a masked LM (a
    decoder: its head is its output embedding)."""
    family = family_of(config)
    if family is None:
        decoder = type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and type(config) not in MODEL_FOR_MASKED_LM_MAPPING
        return "causal" if decoder else None
    if not family.lens_head:
        return None
    return "causal" if family.causal else "masked"


def head_class(config: PretrainedConfig) -> type[Any] | None:
    """The transformers auto class that builds the model with its prediction head; None where there is no lens."""
    kind = lens_kind(config)
    if kind is None:
        return None
    return AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM


def is_head_model(hf_model: PreTrainedModel) -> bool:
    """Whether `hf_model` is a task model wrapping a base model (GPT2LMHeadModel, BertForMaskedLM, …)."""
    return hf_model.base_model is not hf_model


def find_unembed(head_model: PreTrainedModel, final_norm: nn.Module | None) -> nn.Sequential:
    """The final norm (`final_norm`, the structure's) and prediction head of `head_model` in the order the model
    applies them, then what its config does to the logits beyond (a soft cap, a scale): `[..., hidden] ->
    [..., vocabulary]` logits. The head is the table's modules, or for a type it does not name, the model's output
    embedding. Raises UnsupportedModelError naming a part that is missing."""
    config = head_model.config
    family = family_of(config)
    if family is not None and not family.lens_head:
        raise UnsupportedModelError(f"Token Trails has no lens table for the model type {config.model_type}.")
    if family is None:
        parts = [("output embedding", head_model.get_output_embeddings())]
    else:
        parts = [(path, module_at(head_model, path)) for path in family.lens_head]
    for path, module in parts:
        if module is None:
            raise UnsupportedModelError(
                f"The prediction head of {type(head_model).__name__} has no {path!r}: its lens cannot be read."
            )
    modules = [final_norm] if final_norm is not None else []
    modules += [module for _, module in parts]
    if scale := getattr(config, "logit_scale", None):  # Cohere multiplies its logits
        modules.append(LogitScale(float(scale)))
    if scaling := getattr(config, "logits_scaling", None):  # Granite divides them
        modules.append(LogitScale(1 / float(scaling)))
    if cap := getattr(config, "final_logit_softcapping", None):  # Gemma 2 soft-caps them
        modules.append(LogitSoftCap(float(cap)))
    return nn.Sequential(*modules)


class LogitScale(nn.Module):
    """`factor * logits`: a scale a model's config applies to its logits after its head (Cohere's `logit_scale`,
    Granite's `1 / logits_scaling`), as its own forward pass does."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.factor


class LogitSoftCap(nn.Module):
    """`cap * tanh(logits / cap)`: the soft cap a model applies to its logits after its head (Gemma 2's
    `final_logit_softcapping`), as its own forward pass does."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.cap * torch.tanh(logits / self.cap)


_SAVE = "save the model again with its head, model.save_pretrained(folder)"


def no_lens_reason(
    config: PretrainedConfig,
    architecture: str,
    missing: Sequence[str] = (),
    partial: bool = False,
    unread: Sequence[str] = (),
    head_class_name: str = "",
) -> str:
    """Why a model of `config`, saved as `architecture`, has no lens: its checkpoint holds none of its head, only
    part of it (`partial`, lacking `missing`), or a head in a form the `head_class_name` class does not read
    (`unread`: the checkpoint's weights nothing reads)."""
    kind = lens_kind(config)
    if kind is None:
        return f"Token Trails has no table of the prediction head for the model type {config.model_type}"
    head = "masked-LM head" if kind == "masked" else "language-model head"
    if partial:
        return f"its checkpoint holds only part of its {head} (it lacks {_examples(missing)}): {_SAVE}"
    if unread:
        return (
            f"its checkpoint holds no {head} that transformers' {head_class_name or 'head class'} reads (it holds "
            f"{_examples(unread)} instead): it was saved as {architecture}"
        )
    return (
        f"its checkpoint holds no {head}: it was saved as {architecture}, without the layer that turns vectors into "
        "token predictions"
    )


def _examples(keys: Sequence[str]) -> str:
    return ", ".join(keys[:2]) + (" and more" if len(keys) > 2 else "")

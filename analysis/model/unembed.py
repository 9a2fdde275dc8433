"""The model's own prediction head, as one module the lens applies to any layer's vectors: the norm the model
applies after its last block (decoders, ModernBERT), then its masked-LM or causal-LM head (`families.toml`:
`final_norm`, `lens_head`), then the soft cap of its logits where its config sets one (Gemma 2). These are the
model's modules, with its weights; only the soft cap, a formula of the config, is written here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel

from analysis.model.architectures import UnsupportedModelError, family_of, module_at

LensKind = Literal["masked", "causal"]
"""Which head a lens reads: a masked-LM head (encoders) or a causal-LM head (decoders)."""


def lens_kind(config: PretrainedConfig) -> LensKind | None:
    """The head a model of this config's family has a lens through; None where the family table names none."""
    family = family_of(config)
    if family is None or not family.lens_head:
        return None
    return "causal" if family.causal else "masked"


def head_class(config: PretrainedConfig) -> type | None:
    """The transformers auto class that builds the model with its prediction head; None where there is no lens."""
    kind = lens_kind(config)
    if kind is None:
        return None
    return AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM


def is_head_model(hf_model: PreTrainedModel) -> bool:
    """Whether `hf_model` is a task model wrapping a base model (GPT2LMHeadModel, BertForMaskedLM, …)."""
    return hf_model.base_model is not hf_model


def find_unembed(head_model: PreTrainedModel) -> nn.Sequential:
    """The final norm and prediction head of `head_model` in the order the model applies them:
    `[..., hidden] -> [..., vocabulary]` logits. Raises UnsupportedModelError naming a part that is missing."""
    config = head_model.config
    family = family_of(config)
    if family is None or not family.lens_head:
        raise UnsupportedModelError(f"Token Trails has no lens table for the model type {config.model_type}.")
    parts = [(path, module_at(head_model, path)) for path in family.lens_head]
    if family.final_norm is not None:
        parts.insert(0, (family.final_norm, module_at(head_model.base_model, family.final_norm)))
    for path, module in parts:
        if module is None:
            raise UnsupportedModelError(
                f"The prediction head of {type(head_model).__name__} has no {path!r}: its lens cannot be read."
            )
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:  # Gemma 2 soft-caps its logits after the head
        parts.append(("final_logit_softcapping", LogitSoftCap(float(cap))))
    return nn.Sequential(*(module for _, module in parts))


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

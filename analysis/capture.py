"""Tokenise a text and run one forward pass, reading vectors where the model itself computes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.checks import check_choice, check_text
from analysis.encoder import EncoderModel

Stage = Literal["layer_input", "attn_residual", "attn_output", "layer_output"]
"""Where in block l a token's vector is read (TransformerLens: resid_pre, resid_mid, -, resid_post)."""

STAGES: dict[Stage, str] = {
    "layer_input": "the input of block l (for l = 0, the embedding layer's output)",
    "attn_residual": "input + attention sublayer output, before the attention LayerNorm",
    "attn_output": "the attention LayerNorm's output (attn_residual after LayerNorm)",
    "layer_output": "the output of block l (the input of block l + 1)",
}
assert tuple(STAGES) == get_args(Stage)


@dataclass(frozen=True)
class Tokens:
    """The tokens fed to the model, special tokens included, after any truncation."""

    ids: list[int]
    pieces: list[str]
    special: list[bool]
    offsets: list[tuple[int, int]]
    position_ids: list[int]
    n_tokens_in_text: int  # special tokens included, before truncation
    truncated_at_char: int | None

    @property
    def truncated(self) -> bool:
        return self.truncated_at_char is not None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Tap:
    """Where to read a tensor: a module's first positional input, or an item of its output."""

    module: nn.Module
    read: Literal["input", "output"]
    item: int | None = None


@dataclass(frozen=True)
class ForwardPass:
    tokens: Tokens
    hidden_states: torch.Tensor  # [layers + 1, tokens, hidden]
    taps: dict[str, torch.Tensor]  # each without the batch dimension


def tokenize(encoder: EncoderModel, text: str) -> Tokens:
    """Tokenise `text`, keeping at most `encoder.max_tokens` tokens and recording where it was cut."""
    tokenizer = encoder.tokenizer
    limit = encoder.max_tokens
    n_in_text = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    n_in_text += tokenizer.num_special_tokens_to_add()
    encoding = tokenizer(
        text,
        truncation=True,
        max_length=limit,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    ids = encoding["input_ids"]
    special = [bool(s) for s in encoding["special_tokens_mask"]]
    if all(special):
        raise ValueError(
            "The text has no tokens the model can read: type words, not only spaces or control characters."
        )
    offsets = [tuple(o) for o in encoding["offset_mapping"]]
    truncated_at = (
        max(end for (_, end), s in zip(offsets, special, strict=True) if not s) if len(ids) < n_in_text else None
    )
    offset = encoder.structure.embeddings.position_offset
    return Tokens(
        ids=ids,
        pieces=[str(p) for p in tokenizer.convert_ids_to_tokens(ids)],
        special=special,
        offsets=offsets,
        position_ids=[offset + p for p in range(len(ids))],
        n_tokens_in_text=n_in_text,
        truncated_at_char=truncated_at,
    )


def _read(storage: dict[str, torch.Tensor], name: str, tap: Tap):
    def pre_hook(module, args):
        storage[name] = args[0][0].detach().clone()

    def post_hook(module, args, output):
        value = output if tap.item is None else output[tap.item]
        if value is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no tensor at item {tap.item}: eager attention is needed."
            )
        storage[name] = value[0].detach().clone()

    if tap.read == "input":
        return tap.module.register_forward_pre_hook(pre_hook)
    return tap.module.register_forward_hook(post_hook)


def forward_pass(encoder: EncoderModel, text: str, taps: dict[str, Tap] | None = None) -> ForwardPass:
    """Tokenise and run the model once, reading `taps` with hooks that exist only during this call."""
    check_text(text)
    storage: dict[str, torch.Tensor] = {}
    with encoder.lock:
        tokens = tokenize(encoder, text)
        input_ids = torch.tensor([tokens.ids])
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.tensor([tokens.position_ids]),
        }
        if encoder.structure.embeddings.token_type is not None:
            inputs["token_type_ids"] = torch.zeros_like(input_ids)
        handles = [_read(storage, name, tap) for name, tap in (taps or {}).items()]
        try:
            with torch.inference_mode():
                output = encoder.hf_model(**inputs, output_hidden_states=True, return_dict=True)
        finally:
            for handle in handles:
                handle.remove()
    hidden_states = torch.stack([h[0] for h in output.hidden_states])
    return ForwardPass(tokens=tokens, hidden_states=hidden_states, taps=storage)


def stage_vectors(encoder: EncoderModel, text: str, stage: Stage) -> tuple[Tokens, torch.Tensor]:
    """The vectors at `stage` for every block: `[layers, tokens, hidden]`."""
    check_choice("stage", stage, STAGES)
    layers = encoder.structure.layers
    taps = {}
    if stage in ("attn_residual", "attn_output"):
        read = "input" if stage == "attn_residual" else "output"
        taps = {str(i): Tap(parts.attention_norm, read) for i, parts in enumerate(layers)}
    run = forward_pass(encoder, text, taps)
    if stage == "layer_input":
        vectors = run.hidden_states[:-1]
    elif stage == "layer_output":
        vectors = run.hidden_states[1:]
    else:
        vectors = torch.stack([run.taps[str(i)] for i in range(len(layers))])
    return run.tokens, vectors


def token_table(tokens: Tokens, text: str) -> pd.DataFrame:
    """One row per token: position, piece, id, position-table row, covered text, special flag, character span."""
    return pd.DataFrame(
        {
            "position": np.arange(len(tokens)),
            "token": tokens.pieces,
            "token_id": tokens.ids,
            "position_id": tokens.position_ids,
            "text": [
                p if s else text[a:b]
                for p, s, (a, b) in zip(tokens.pieces, tokens.special, tokens.offsets, strict=True)
            ],
            "special": tokens.special,
            "char_start": [a for a, _ in tokens.offsets],
            "char_end": [b for _, b in tokens.offsets],
        }
    )

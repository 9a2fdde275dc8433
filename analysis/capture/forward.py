"""Run one forward pass over tokenised texts, reading tensors where the model itself computes them, with hooks
that exist only during that pass (`analysis.capture.trace` names what is read)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from analysis.capture.tokens import Tokens
from analysis.model.loaded import LoadedModel

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Tap:
    """Where to read a tensor: a module's first input (positional, or `hidden_states`), or an item of its output
    (the output itself when it is a tensor), at its `call`-th run in the forward pass (0: the first; a module
    shared by several depths, as in ALBERT, runs once per depth)."""

    module: nn.Module
    read: Literal["input", "output"]
    item: int | None = None
    call: int = 0


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return kwargs["hidden_states"]


def _output_item(output: Any, item: int | None) -> torch.Tensor:
    value = output if isinstance(output, torch.Tensor) else output[item or 0]
    if value is None:
        raise RuntimeError(f"The module returned no tensor at item {item}: eager attention is needed.")
    return value


def _record(calls: list[torch.Tensor], tap: Tap):
    """A hook appending what `tap` reads (batch dimension kept) to `calls` on every call of its module."""
    if tap.read == "input":
        return tap.module.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append(_first_input(args, kwargs).detach().clone()),
            with_kwargs=True,
        )
    return tap.module.register_forward_hook(
        lambda module, args, output: calls.append(_output_item(output, tap.item).detach().clone())
    )


def model_inputs(lm: LoadedModel, batch: list[Tokens]) -> dict[str, torch.Tensor]:
    """The forward pass's inputs for texts already tokenised, on the model's device: ids padded on the right,
    an attention mask that hides the padding, and the position ids and all-zero token types where the model
    takes them. Decoders apply their causal mask themselves; right padding never reaches a real token."""
    device = lm.device
    length = max(len(tokens) for tokens in batch)
    pad_id = lm.tokenizer.pad_token_id or 0
    offset = lm.structure.embeddings.ids_offset
    ids = [tokens.ids + [pad_id] * (length - len(tokens)) for tokens in batch]
    mask = [[1] * len(tokens) + [0] * (length - len(tokens)) for tokens in batch]
    input_ids = torch.tensor(ids, device=device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.tensor(mask, device=device)}
    accepted = lm.forward_parameters
    if "position_ids" in accepted:
        positions = [offset + p for p in range(length)]  # the padding's rows are masked out
        inputs["position_ids"] = torch.tensor([positions] * len(batch), device=device)
    if lm.structure.embeddings.token_type is not None and "token_type_ids" in accepted:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    if "use_cache" in accepted:  # a decoder keeps no key/value cache for a single pass
        inputs["use_cache"] = False
    return inputs


def run_model(lm: LoadedModel, batch: list[Tokens], taps: Mapping[Key, Tap]) -> dict[Key, torch.Tensor]:
    """One forward pass over `batch` (hold `lm.lock`), reading `taps` with hooks that exist only during
    it: each reading with its batch dimension first."""
    calls: dict[tuple[int, str, int | None], list[torch.Tensor]] = {}
    handles = []
    for tap in taps.values():
        key = (id(tap.module), tap.read, tap.item)
        if key not in calls:
            calls[key] = []
            handles.append(_record(calls[key], tap))
    inputs = model_inputs(lm, batch)
    if any(tap.read == "output" and tap.item == 1 for tap in taps.values()):
        inputs["output_attentions"] = True  # item 1 of an attention module's output: its weights
    try:
        with torch.inference_mode():
            lm.hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    batch_size, length = inputs["input_ids"].shape
    return {
        name: _per_text(calls[(id(tap.module), tap.read, tap.item)][tap.call], batch_size, length)
        for name, tap in taps.items()
    }


def _per_text(reading: torch.Tensor, batch_size: int, length: int) -> torch.Tensor:
    """`reading` with its batch dimension first: `[texts, tokens, ...]`. OPT flattens a batch's tokens around its
    MLP (`[texts * tokens, hidden]` at the norm before it); that is the same memory, viewed per text again."""
    if reading.dim() == 2 and reading.shape[0] == batch_size * length:
        return reading.view(batch_size, length, -1)
    return reading


def depth_call(lm: LoadedModel, layer: int) -> int:
    """How many earlier layers run the same block module as `layer` (0 unless layers share weights)."""
    block = lm.structure.layers[layer].block
    return sum(parts.block is block for parts in lm.structure.layers[:layer])

"""Tokenise a text and run one forward pass, reading vectors where the model itself computes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from analysis.capture.tokens import Tokens, tokenize
from analysis.checks import check_text
from analysis.definitions import Stage
from analysis.model.architectures import LayerParts
from analysis.model.capabilities import check_stage
from analysis.model.encoder import EncoderModel


@dataclass(frozen=True)
class Tap:
    """Where to read a tensor: a module's first input (positional, or `hidden_states`), or an item of its output
    (the output itself when it is a tensor), at its `call`-th run in the forward pass (0: the first; a module
    shared by several depths, as in ALBERT, runs once per depth)."""

    module: nn.Module
    read: Literal["input", "output"]
    item: int | None = None
    call: int = 0


@dataclass(frozen=True)
class ForwardPass:
    tokens: Tokens
    taps: dict[str, torch.Tensor]  # each without the batch dimension


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return kwargs["hidden_states"]


def _output_item(output: object, item: int | None) -> torch.Tensor:
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


def model_inputs(encoder: EncoderModel, batch: list[Tokens]) -> dict[str, torch.Tensor]:
    """The forward pass's inputs for texts already tokenised, on the model's device: ids padded on the right,
    an attention mask that hides the padding, and the position ids and all-zero token types where the model
    takes them. Decoders apply their causal mask themselves; right padding never reaches a real token."""
    device = encoder.device
    length = max(len(tokens) for tokens in batch)
    pad_id = encoder.tokenizer.pad_token_id or 0
    offset = encoder.structure.embeddings.position_offset
    ids = [tokens.ids + [pad_id] * (length - len(tokens)) for tokens in batch]
    mask = [[1] * len(tokens) + [0] * (length - len(tokens)) for tokens in batch]
    input_ids = torch.tensor(ids, device=device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.tensor(mask, device=device)}
    accepted = encoder.forward_parameters
    if "position_ids" in accepted:
        positions = [offset + p for p in range(length)]  # the padding's rows are masked out
        inputs["position_ids"] = torch.tensor([positions] * len(batch), device=device)
    if encoder.structure.embeddings.token_type is not None and "token_type_ids" in accepted:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    if "use_cache" in accepted:  # a decoder keeps no key/value cache for a single pass
        inputs["use_cache"] = False
    return inputs


def run_model(encoder: EncoderModel, batch: list[Tokens], taps: dict[str, Tap]) -> dict[str, torch.Tensor]:
    """One forward pass over `batch` (hold `encoder.lock`), reading `taps` with hooks that exist only during
    it: each reading with its batch dimension first."""
    calls: dict[tuple[int, str, int | None], list[torch.Tensor]] = {}
    handles = []
    for tap in taps.values():
        key = (id(tap.module), tap.read, tap.item)
        if key not in calls:
            calls[key] = []
            handles.append(_record(calls[key], tap))
    inputs = model_inputs(encoder, batch)
    if any(tap.read == "output" and tap.item == 1 for tap in taps.values()):
        inputs["output_attentions"] = True  # item 1 of an attention module's output: its weights
    try:
        with torch.inference_mode():
            encoder.hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: calls[(id(tap.module), tap.read, tap.item)][tap.call] for name, tap in taps.items()}


def forward_pass(encoder: EncoderModel, text: str, taps: dict[str, Tap]) -> ForwardPass:
    """Tokenise and run the model once on `text` alone, reading `taps`."""
    check_text(text)
    with encoder.lock:
        tokens = tokenize(encoder, text)
        readings = run_model(encoder, [tokens], taps)
    return ForwardPass(tokens=tokens, taps={name: reading[0] for name, reading in readings.items()})


def depth_call(encoder: EncoderModel, layer: int) -> int:
    """How many earlier layers run the same block module as `layer` (0 unless layers share weights)."""
    block = encoder.structure.layers[layer].block
    return sum(parts.block is block for parts in encoder.structure.layers[:layer])


def layer_tap(encoder: EncoderModel, layer: int, read: Callable[[LayerParts], Tap]) -> Tap:
    """`read`'s tap on layer `layer`'s parts, at the call of that depth."""
    return replace(read(encoder.structure.layers[layer]), call=depth_call(encoder, layer))


def layer_taps(
    encoder: EncoderModel, read: Callable[[LayerParts], Tap], layers: range | list[int], prefix: str = ""
) -> dict[str, Tap]:
    """One tap per block of `layers`, named `prefix + index`."""
    return {f"{prefix}{i}": layer_tap(encoder, i, read) for i in layers}


def stacked(readings: dict[str, torch.Tensor], layers: range | list[int], prefix: str = "") -> torch.Tensor:
    """The per-block readings `prefix + index` of `layers`, stacked: `[layers, ...]`."""
    return torch.stack([readings[f"{prefix}{i}"] for i in layers])


def stage_taps(encoder: EncoderModel, stage: Stage, layers: list[int] | None = None) -> dict[str, Tap]:
    """The hooks that read `stage` in `layers` (default: every block; see `analysis.architectures` for each
    block kind)."""
    check_stage(encoder, stage)
    layers = range(encoder.num_layers) if layers is None else layers
    if stage == "layer_input":
        return layer_taps(encoder, lambda parts: Tap(parts.block, "input"), layers)
    if stage == "layer_output":
        return layer_taps(encoder, lambda parts: Tap(parts.block, "output"), layers)
    if stage == "attn_output":
        return layer_taps(encoder, lambda parts: Tap(parts.mid_norm, "output"), layers)
    if encoder.structure.kind != "parallel":
        return layer_taps(encoder, lambda parts: Tap(parts.mid_norm, "input"), layers)
    return {
        **layer_taps(encoder, lambda parts: Tap(parts.block, "input"), layers, "in"),
        **layer_taps(encoder, lambda parts: Tap(parts.attention, "output", 0), layers, "attn"),
    }


def read_stage(
    encoder: EncoderModel, readings: dict[str, torch.Tensor], stage: Stage, layers: list[int] | None = None
) -> torch.Tensor:
    """`stage` in `layers` (default: every block) from readings taken with `stage_taps`: `[layers, tokens,
    hidden]` (`[layers, batch, tokens, hidden]` from a batch). In a parallel block the model never forms
    attn_residual; it is the block input plus the attention output, summed here."""
    layers = range(encoder.num_layers) if layers is None else layers
    if stage == "attn_residual" and encoder.structure.kind == "parallel":
        return stacked(readings, layers, "in") + stacked(readings, layers, "attn")
    return stacked(readings, layers)


def stage_vectors(encoder: EncoderModel, text: str, stage: Stage) -> tuple[Tokens, torch.Tensor]:
    """The vectors at `stage` for every block: `[layers, tokens, hidden]`."""
    run = forward_pass(encoder, text, stage_taps(encoder, stage))
    return run.tokens, read_stage(encoder, run.taps, stage)


def batch_stage_vectors(encoder: EncoderModel, batch: list[Tokens], stage: Stage) -> list[torch.Tensor]:
    """Each text's stage vectors from one padded forward pass: `[layers, tokens, hidden]` per text."""
    with encoder.lock:
        readings = run_model(encoder, batch, stage_taps(encoder, stage))
    vectors = read_stage(encoder, readings, stage)  # [layers, batch, padded tokens, hidden]
    return [vectors[:, row, : len(tokens)] for row, tokens in enumerate(batch)]

"""The original demo's vectors, read from a forward pass: every block's input and attention weights, combined as the
seed demo combined them (see `analysis.report.original_demo`)."""

from __future__ import annotations

import torch

from analysis.capture.forward import Tap, layer_taps
from analysis.model.capabilities import demo_unavailable
from analysis.model.encoder import EncoderModel


def demo_taps(encoder: EncoderModel) -> dict[str, Tap]:
    """The readings the demo's vectors need: every block's input and attention weights."""
    why = demo_unavailable(encoder)
    if why is not None:
        raise ValueError(why[0].upper() + why[1:] + ".")
    layers = range(encoder.num_layers)
    return {
        **layer_taps(encoder, lambda p: Tap(p.block, "input"), layers, "x"),
        **layer_taps(encoder, lambda p: Tap(p.attention, "output", item=1), layers, "a"),
    }


def read_demo_vectors(encoder: EncoderModel, readings: dict[str, torch.Tensor]) -> torch.Tensor:
    """The demo's u_l for every layer from readings taken with `demo_taps`, one text `[layers, tokens, hidden]` or
    a padded batch `[layers, batch, tokens, hidden]` (masked keys carry no attention, so padding adds nothing)."""
    heads = encoder.num_heads
    vectors = []
    with torch.inference_mode():
        for index, parts in enumerate(encoder.structure.layers):
            x = readings[f"x{index}"]  # [..., tokens, hidden]
            attention = readings[f"a{index}"]  # [..., heads, tokens, tokens]
            values = x @ parts.value.weight  # the stored matrix, not its transpose; no bias
            per_head = values.unflatten(-1, (heads, -1)).transpose(-3, -2)  # [..., heads, tokens, head_dim]
            mixed = (attention @ per_head).transpose(-3, -2).flatten(-2)  # concat_h Z_h
            vectors.append(x + mixed @ parts.attention_out.weight)  # stored matrix again, no bias
    return torch.stack(vectors)

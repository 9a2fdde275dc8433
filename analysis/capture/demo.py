"""The original demo's vectors, from a trace of every block's input and attention weights, combined as the seed
demo combined them (see `analysis.report.original_demo`)."""

from __future__ import annotations

import torch

from analysis.capture.trace import Point, Trace
from analysis.model.capabilities import demo_unavailable
from analysis.model.loaded import LoadedModel

DEMO_POINTS: tuple[Point, ...] = ("layer_input", "attention")
"""What a trace must hold for the demo's vectors: every block's input and attention weights."""


def check_demo(lm: LoadedModel) -> None:
    """Refuse a model the demo's computation is not defined for, saying why."""
    why = demo_unavailable(lm)
    if why is not None:
        raise ValueError(why[0].upper() + why[1:] + ".")


def demo_vectors(lm: LoadedModel, trace: Trace) -> torch.Tensor:
    """The demo's u_l for every layer and text of `trace`: `[layers, texts, padded tokens, hidden]` (masked keys
    carry no attention, so padding adds nothing to a real token)."""
    check_demo(lm)
    heads = lm.num_heads
    inputs, attention = trace.batch("layer_input"), trace.batch("attention")
    vectors = []
    with torch.inference_mode():
        for index, parts in enumerate(lm.structure.layers):
            if parts.value is None:
                raise ValueError(f"{lm.name} has no value projection in layer {index} for the original demo.")
            x = inputs[index]  # [texts, tokens, hidden]
            values = x @ parts.value.weight  # the stored matrix, not its transpose; no bias
            per_head = values.unflatten(-1, (heads, -1)).transpose(-3, -2)  # [texts, heads, tokens, head_dim]
            mixed = (attention[index] @ per_head).transpose(-3, -2).flatten(-2)  # concat_h Z_h
            vectors.append(x + mixed @ parts.out_projection.weight)  # stored matrix again, no bias
    return torch.stack(vectors)

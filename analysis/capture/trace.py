"""`Trace`: one forward pass over a text (or a padded, masked batch of texts) that records every stage at every
layer under uniform `(point, layer)` names, plus each layer's attention probabilities and head contexts where a
reader asks for them. Every reader takes a trace: the vocabulary scores (`analyze`), the head decomposition, the
original demo, the LayerNorm effect and the counting engine's rows, so one view of one text runs the model once.

Points (TransformerLens names in brackets): the four stages `layer_input` [resid_pre], `attn_residual`
[resid_mid], `attn_output`, `layer_output` [resid_post], each `[tokens, hidden]` per text; `attention`, the
attention probabilities `[heads, tokens (query), tokens (key)]` [pattern]; `head_context`, the attention output
projection's input, every head's context side by side `[tokens, heads * head_dim]` [z].
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from analysis.capture.forward import Tap, depth_call, run_model
from analysis.capture.tokens import Tokens, tokenize
from analysis.checks import check_text
from analysis.definitions import STAGES, Stage
from analysis.model.architectures import LayerParts
from analysis.model.capabilities import check_stage, unavailable_stages
from analysis.model.loaded import LoadedModel

Extra = Literal["attention", "head_context"]
Point = Stage | Extra
EXTRAS: tuple[Extra, ...] = get_args(Extra)

Read = Point | Literal["attention_delta"]
"""What a pass can read: a point, or a parallel block's attention output (summed into its attn_residual)."""
_READS: dict[Read, tuple[str, Literal["input", "output"], int | None]] = {  # -> (layer part, what of it, item)
    "layer_input": ("block", "input", None),
    "layer_output": ("block", "output", None),
    "attn_output": ("mid_norm", "output", None),
    "attn_residual": ("mid_norm", "input", None),
    "attention": ("attention", "output", 1),
    "head_context": ("out_projection", "input", None),
    "attention_delta": ("attention", "output", 0),  # a parallel block's attention output, summed into attn_residual
}
assert {part for part, _, _ in _READS.values()} <= set(LayerParts.__dataclass_fields__)


@dataclass(frozen=True)
class Trace:
    """What one forward pass recorded: `readings[(point, layer)]` with the batch dimension first
    (`[texts, padded tokens, ...]`), for the texts `texts` tokenised as `tokens`."""

    model: str
    texts: list[str]
    tokens: list[Tokens]
    readings: dict[tuple[Point, int], torch.Tensor]
    num_layers: int

    @property
    def points(self) -> set[Point]:
        return {point for point, _ in self.readings}

    def _check(self, *points: Point) -> None:
        missing = [point for point in points if point not in self.points]
        if missing:
            recorded = ", ".join(sorted(self.points))
            raise ValueError(f"This trace of {self.model} did not record {', '.join(missing)} (it holds {recorded}).")

    def batch(self, point: Point) -> torch.Tensor:
        """`point` at every layer for the whole batch: `[layers, texts, padded tokens, ...]`."""
        self._check(point)
        return torch.stack([self.readings[(point, layer)] for layer in range(self.num_layers)])

    def stage(self, stage: Stage, text: int = 0) -> torch.Tensor:
        """The vectors of text `text` at `stage` in every layer: `[layers, tokens, hidden]`."""
        self._check(stage)
        length = len(self.tokens[text])
        return torch.stack([self.readings[(stage, layer)][text, :length] for layer in range(self.num_layers)])

    def at(self, point: Point, layer: int, text: int = 0) -> torch.Tensor:
        """One reading of text `text`, without padding: `[tokens, hidden]`, or `[heads, tokens, tokens]` for
        `attention`."""
        self._check(point)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be from 0 to {self.num_layers - 1}, not {layer!r}.")
        length = len(self.tokens[text])
        reading = self.readings[(point, layer)][text]
        return reading[:, :length, :length] if point == "attention" else reading[:length]


def _tap(lm: LoadedModel, point: Read, layer: int) -> Tap:
    """The hook that reads `point` in layer `layer`, at that depth's call of its module (ALBERT shares modules).
    A norm_after block (OLMo 2) forms attn_residual as its MLP's input: no norm reads it."""
    part, read, item = _READS[point]
    if point == "attn_residual" and lm.structure.kind == "norm_after":
        part = "mlp"
    return Tap(getattr(lm.structure.layers[layer], part), read, item, call=depth_call(lm, layer))


def available_points(lm: LoadedModel, extras: Collection[Extra] = ()) -> tuple[Point, ...]:
    """The stages `lm` has, then the `extras` asked for."""
    missing = unavailable_stages(lm)
    return (*(stage for stage in STAGES if stage not in missing), *extras)


def trace_tokens(lm: LoadedModel, texts: list[str], tokens: list[Tokens], points: Collection[Point]) -> Trace:
    """One padded, masked forward pass over texts already tokenised, recording `points` at every layer."""
    for point in points:
        if point in STAGES:
            check_stage(lm, point)
        elif point not in EXTRAS:
            raise ValueError(f"Unknown point {point!r}: one of {', '.join([*STAGES, *EXTRAS])}.")
    parallel_residual = "attn_residual" in points and lm.structure.kind == "parallel"
    reads: set[Read] = {point for point in points if not (parallel_residual and point == "attn_residual")}
    if parallel_residual:  # the model never forms it: the block input plus the attention output
        reads |= {"layer_input", "attention_delta"}
    taps = {(point, layer): _tap(lm, point, layer) for point in reads for layer in range(lm.num_layers)}
    with lm.lock:
        readings = run_model(lm, tokens, taps)
    if parallel_residual:
        for layer in range(lm.num_layers):
            readings[("attn_residual", layer)] = readings[("layer_input", layer)] + readings[("attention_delta", layer)]
    kept = {(point, layer): readings[(point, layer)] for point in points for layer in range(lm.num_layers)}
    return Trace(lm.name, list(texts), list(tokens), kept, lm.num_layers)


def trace(lm: LoadedModel, text: str, points: Collection[Point] | None = None, max_tokens: int | None = None) -> Trace:
    """Tokenise `text` (at most `max_tokens`, default the model's `max_tokens`) and run the model once, recording
    `points` (default: every stage the model has) at every layer. Ask for `attention` and `head_context` too
    where a reader needs them (the head decomposition, the original demo)."""
    check_text(text)
    with lm.lock:
        tokens = tokenize(lm, text, max_tokens)
    return trace_tokens(lm, [text], [tokens], available_points(lm) if points is None else points)


def traced(lm: LoadedModel, text_or_trace: str | Trace, needs: Collection[Point]) -> Trace:
    """`text_or_trace` as a trace holding `needs`: a given trace is checked (one text, this model, those points);
    a text is traced for exactly them."""
    if not isinstance(text_or_trace, Trace):
        return trace(lm, text_or_trace, needs)
    if text_or_trace.model != lm.name or len(text_or_trace.texts) != 1:
        raise ValueError(f"This reader needs a trace of one text by {lm.name}, not of {text_or_trace.model}.")
    text_or_trace._check(*needs)
    return text_or_trace

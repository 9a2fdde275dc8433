"""Masked copies of a text: each token the tokenizer did not add replaced by the mask token in turn, run as one
padded batch (in passes of bounded memory for long texts), so a reader sees, at every layer, the vector at a
position whose token the model cannot see."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import torch

from analysis.capture.tokens import Tokens, tokenize
from analysis.capture.trace import Point, trace_tokens
from analysis.checks import check_text
from analysis.definitions import OnProgress
from analysis.model.loaded import LoadedModel

MASKED_PASS_BYTES = 512 * 2**20
"""Upper bound on what one pass of masked copies records (`[copies, tokens, hidden]` per point and layer, and a
layer's attention weights); a long text runs in several passes."""


def copies_per_pass(lm: LoadedModel, n_tokens: int, n_points: int) -> int:
    """How many masked copies of an `n_tokens` text one pass runs within MASKED_PASS_BYTES."""
    per_copy = 4 * n_tokens * (lm.hidden_size * lm.num_layers * n_points + lm.num_heads * n_tokens)
    return max(1, MASKED_PASS_BYTES // per_copy)


def masked_positions(tokens: Tokens) -> list[int]:
    """The positions masked in turn: every token the tokenizer did not add."""
    return [position for position, special in enumerate(tokens.special) if not special]


def masked_trace(
    lm: LoadedModel,
    text: str,
    points: Collection[Point],
    on_progress: OnProgress | None = None,
) -> tuple[Tokens, list[int], dict[Point, torch.Tensor]]:
    """Tokenise `text`, then run one copy per masked position (`masked_positions`) with that token replaced by
    the mask token. Returns the tokens, the masked positions and, per point, `[layers, positions, hidden]`: at
    each masked position, its copy's vector there. `on_progress(copies done, copies)` follows the passes."""
    check_text(text)
    mask_id = lm.tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(f"{lm.name} has no mask token, so no token can be hidden from it.")
    with lm.lock:
        tokens = tokenize(lm, text)
    positions = masked_positions(tokens)
    per_pass = copies_per_pass(lm, len(tokens), len(points))
    readings: dict[Point, list[torch.Tensor]] = {point: [] for point in points}
    for start in range(0, len(positions), per_pass):
        chunk = positions[start : start + per_pass]
        copies = [
            replace(tokens, ids=[mask_id if p == hidden else i for p, i in enumerate(tokens.ids)]) for hidden in chunk
        ]
        run = trace_tokens(lm, [text] * len(copies), copies, points)
        rows, columns = torch.arange(len(chunk)), torch.tensor(chunk)
        for point in points:
            layers = [run.readings[(point, layer)][rows, columns] for layer in range(lm.num_layers)]
            readings[point].append(torch.stack(layers))
        if on_progress:
            on_progress(start + len(chunk), len(positions))
    return tokens, positions, {point: torch.cat(parts, dim=1) for point, parts in readings.items()}

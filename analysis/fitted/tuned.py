"""The tuned lens (Belrose et al. 2023): each layer's affine map trained to minimise KL(final || lens), the
model's own head frozen, starting from the linear fit. Adam over a stated budget of token reads, in batches
of TUNED_BATCH tokens (so one layer's `[batch, vocabulary]` logits are the largest thing held); every
CHECK_EVERY steps the mean KL on the validation tokens is measured and the maps with the least are kept (the
start among them), so training never leaves a lens worse than it began on the texts it is judged by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

TUNED_BATCH = 256
TUNED_LEARNING_RATE = 1e-3
CHECK_EVERY = 8
CHECK_BLOCK = 512
"""Validation tokens per block of logits when measuring the validation KL (no gradient held)."""


@dataclass(frozen=True)
class TokenVectors:
    """Tokens' vectors at a stage in every layer, `vectors [layers, tokens, hidden]`, and the model's output for
    them, `outputs [tokens, hidden]`."""

    vectors: torch.Tensor
    outputs: torch.Tensor

    def __len__(self) -> int:
        return len(self.outputs)


@dataclass(frozen=True)
class Tuned:
    """The trained maps (float32, like the start's), and how the training went: steps, token reads, the validation
    KL per layer at the start and at the kept step, and which step was kept (0: the start)."""

    weights: torch.Tensor
    biases: torch.Tensor
    steps: int
    token_reads: int
    kept_step: int
    start_kl: list[float]
    kept_kl: list[float]


def _kl(unembed: nn.Module, read: torch.Tensor, final_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(final || lens) per token, `[tokens]`, for vectors `read [tokens, hidden]` through the head."""
    head_dtype = next(unembed.parameters()).dtype  # a bfloat16 model's head reads bfloat16
    log_probs = torch.log_softmax(unembed(read.to(head_dtype)).float(), -1)
    return (final_log_probs.exp() * (final_log_probs - log_probs)).sum(-1)


def _validation_kl(
    unembed: nn.Module, weights: torch.Tensor, biases: torch.Tensor, check: TokenVectors, layers: list[int]
) -> torch.Tensor:
    """Mean KL(final || lens) on `check` per trained layer, `[len(layers)]`."""
    totals = torch.zeros(len(layers), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(check), CHECK_BLOCK):
            block = slice(start, start + CHECK_BLOCK)
            final = torch.log_softmax(unembed(check.outputs[block]).float(), -1)
            for row, layer in enumerate(layers):
                read = torch.addmm(biases[layer], check.vectors[layer, block], weights[layer])
                totals[row] += float(_kl(unembed, read, final).double().sum())
    return totals / len(check)


def tune(
    unembed: nn.Module,
    start: tuple[torch.Tensor, torch.Tensor],
    train: TokenVectors,
    check: TokenVectors,
    token_reads: int,
    layers: list[int],
    on_step: Callable[[int, int], None] | None = None,
    seed: int = 0,
) -> Tuned:
    """Train the maps `start` = (`weights [layers, hidden, hidden]`, `biases [layers, hidden]`) of `layers` to
    minimise the mean KL(final || lens) over batches drawn from `train` until `token_reads` tokens were read;
    keep the maps with the least validation KL on `check`. `on_step(step, steps)` after each step."""
    weights = start[0].clone().to(train.vectors.device).requires_grad_(True)
    biases = start[1].clone().to(train.vectors.device).requires_grad_(True)
    optimiser = torch.optim.Adam([weights, biases], lr=TUNED_LEARNING_RATE)
    batch = min(TUNED_BATCH, len(train))
    steps = max(1, token_reads // batch)
    generator = torch.Generator().manual_seed(seed)
    start_kl = _validation_kl(unembed, weights.detach(), biases.detach(), check, layers)
    kept = (start[0].clone(), start[1].clone(), 0, start_kl)
    for step in range(1, steps + 1):
        chosen = torch.randint(len(train), (batch,), generator=generator).to(train.vectors.device)
        with torch.no_grad():
            final = torch.log_softmax(unembed(train.outputs[chosen]).float(), -1)
        optimiser.zero_grad(set_to_none=True)
        for layer in layers:  # one layer's logits at a time: its loss's graph is freed by its backward
            read = torch.addmm(biases[layer], train.vectors[layer, chosen], weights[layer])
            (_kl(unembed, read, final).mean() / len(layers)).backward(inputs=[weights, biases])
        optimiser.step()
        if step % CHECK_EVERY == 0 or step == steps:
            found = _validation_kl(unembed, weights.detach(), biases.detach(), check, layers)
            if float(found.sum()) < float(kept[3].sum()):
                kept = (weights.detach().clone(), biases.detach().clone(), step, found)
        if on_step:
            on_step(step, steps)
    return Tuned(
        weights=kept[0].cpu(),
        biases=kept[1].cpu(),
        steps=steps,
        token_reads=steps * batch,
        kept_step=kept[2],
        start_kl=start_kl.tolist(),
        kept_kl=kept[3].tolist(),
    )

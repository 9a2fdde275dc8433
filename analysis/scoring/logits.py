"""The lens's numbers: the model's own head applied to every layer's vectors, scored over the whole vocabulary
one block of positions at a time, so no `[layers, positions, vocabulary]` tensor is ever held.

For a position with logits z (one layer) and z_f (the model's output), log-softmax log p = z - lse(z):
- target logit z_t, probability exp(z_t - lse(z)), rank 1 + #{u : z_u > z_t};
- entropy H = lse(z) - sum_u p_u z_u (nats);
- KL(final || layer) = sum_u p_f,u (log p_f,u - log p_u). With d = z_f - z, lse(z_f) - lse(z) = log E_p[exp(d)],
  KL = E_pf[d] - log E_p[exp(d)] = E_pf[d] - lse(z_f) + lse(z). That subtracts numbers the size of the logits,
  leaving ~1e-6 nats of float32 rounding: fine for distributions apart, not where they agree (a true 1e-7 would
  read 0 or 1e-6). There, with e = d - c (c about E_pf[d]) and s = max(0, max_u e_u - 60),
  KL = E_pf[e] - s - log1p(E_p[expm1(e - s)]), E_pf[e] summed in float64: nothing large cancels and nothing
  overflows (within 1e-7 nats of a float64 computation on the same logits below 0.1 nat; from 0.1 to 1 nat within
  1e-6 of the KL, the float32 probabilities' own rounding);
- the final top-1 token argmax z_f and its rank under z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from analysis.scoring.ranks import rank_in

LENS_BLOCK_BYTES = 128 * 2**20
"""Upper bound on one `[positions, vocabulary]` float32 block of logits; positions are chunked to fit. A block
lives five times at once (the layer's logits, the output's logits and probabilities, two work buffers): 0.6 GB
for 512 tokens of a 50k vocabulary, which stay in one block, so the product with the head runs on all of them
at once."""

FLOAT64_ROWS_BYTES = 16 * 2**20
"""Upper bound on the float64 products the near KL holds at once."""
NEAR_KL = 1.0
"""Below this KL (nats) the lens forms KL(final || layer) from the logits' differences, not from their sums."""
EXPM1_ROOM = 60.0
"""The near KL shifts e by s only past this (exp(60) is far from float32's limit), so its sum holds no term
larger than e needs."""

NO_TARGET = -1
"""A position's target id where it has none (the last position, predicting the next token)."""
NEVER_COMMITS = -1
"""A position's commitment layer where the lens's top-1 at the last layer is not the model's own."""


@dataclass(frozen=True)
class LensScores:
    """The lens at every layer and position: `[layers, positions]` unless noted."""

    target_logit: torch.Tensor
    target_prob: torch.Tensor
    target_rank: torch.Tensor  # 0 where the position has no target
    entropy: torch.Tensor
    kl_final: torch.Tensor
    final_top: torch.Tensor  # [positions] the model's own top-1 prediction
    final_top_rank: torch.Tensor
    top_ids: torch.Tensor  # [layers, positions, k]
    top_logits: torch.Tensor  # [layers, positions, k]
    top_probs: torch.Tensor  # [layers, positions, k]


def commit_layers(top_ids: torch.Tensor, final_top: torch.Tensor) -> torch.Tensor:
    """Where each position commits, `[positions]`: the first layer from which the lens's top-1 (`top_ids
    [layers, positions, k]`, first column) is the model's own top-1 (`final_top [positions]`) at that layer and every
    later one; NEVER_COMMITS where the last layer's differs."""
    agrees = top_ids[..., 0] == final_top  # [layers, positions]
    from_here_on = agrees.flip(0).int().cumprod(0).flip(0)  # 1 where this layer and all later ones agree
    committed_layers = from_here_on.sum(0)
    return torch.where(committed_layers > 0, len(agrees) - committed_layers, NEVER_COMMITS)


def lens_scores(
    unembed: nn.Module,
    vectors: torch.Tensor,
    targets: torch.Tensor,
    top_k: int,
    vocabulary: int,
    final: torch.Tensor | None = None,
) -> LensScores:
    """Score `vectors [layers, positions, hidden]` through `unembed` (hidden -> `vocabulary` logits) against
    `targets [positions]` (NO_TARGET: none) and the model's output distribution, `unembed(final)` for
    `final [positions, hidden]` (None: the last layer of `vectors` is the model's output, as at layer_output);
    keep the `top_k` predictions per layer and position."""
    n_positions = vectors.shape[1]
    k = min(top_k, vocabulary)
    per_block = max(1, LENS_BLOCK_BYTES // (4 * vocabulary))
    with torch.inference_mode():
        blocks = []
        for start in range(0, n_positions, per_block):
            block = slice(start, start + per_block)
            final_block = None if final is None else final[block]
            blocks.append(_score_block(unembed, vectors[:, block], final_block, targets[block], k))
    return LensScores(
        **{
            name: torch.cat([block[name] for block in blocks], dim=1 if name.startswith("top") else -1)
            for name in LensScores.__dataclass_fields__
        }
    )


def _score_block(
    unembed: nn.Module, vectors: torch.Tensor, final: torch.Tensor | None, targets: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """The lens of one block of positions at every layer (see the module's formulas). Each layer's logits
    `[positions, vocabulary]` take one product and a few passes: top-k (whose first value is the row's maximum
    m), exp(z - m), its sum and a row-wise dot product (the entropy), three for the KL, and the two rank counts.
    Where `final` is None the last layer's logits are the output's, computed once."""
    final_logits = unembed(vectors[-1] if final is None else final)  # [positions, vocabulary]
    final_max, final_top = final_logits.max(-1, keepdim=True)
    final_top = final_top.squeeze(-1)
    final_probs = torch.empty_like(final_logits)
    final_lse, final_sum = _softmax_weights(final_logits, final_max, final_probs)
    final_probs.div_(final_sum.unsqueeze(-1))
    work = torch.empty_like(final_logits)  # reused by every layer: no page faults for a new block each time
    difference = torch.empty_like(final_logits)  # the KL's work space
    last = len(vectors) - 1
    has_target = targets != NO_TARGET
    target_ids = torch.where(has_target, targets, 0)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in LensScores.__dataclass_fields__ if name != "final_top"}
    for layer, layer_vectors in enumerate(vectors):
        logits = final_logits if final is None and layer == last else unembed(layer_vectors)
        top_logits, top_ids = logits.topk(k, -1)
        lse, weight_sum = _softmax_weights(logits, top_logits[:, :1], work)
        rows["entropy"].append(lse - _row_dot(work, logits) / weight_sum)
        kl = _kl_final(final_logits, final_probs, final_lse, logits, work, lse, weight_sum, difference)
        rows["kl_final"].append(kl)
        target_logit = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        rows["target_logit"].append(torch.where(has_target, target_logit, torch.nan))
        rows["target_prob"].append(torch.where(has_target, (target_logit - lse).exp(), torch.nan))
        rows["top_ids"].append(top_ids)
        rows["top_logits"].append(top_logits)
        rows["top_probs"].append((top_logits - lse.unsqueeze(-1)).exp())
        rows["final_top_rank"].append(rank_in(logits, final_top, work))  # uses `work` up
        rows["target_rank"].append(torch.where(has_target, rank_in(logits, target_ids, work), 0))
    return {"final_top": final_top, **{name: torch.stack(values) for name, values in rows.items()}}


def _kl_final(
    final_logits: torch.Tensor,
    final_probs: torch.Tensor,
    final_lse: torch.Tensor,
    logits: torch.Tensor,
    weights: torch.Tensor,
    lse: torch.Tensor,
    weight_sum: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """KL(final || layer) `[positions]` (see the module's formulas), from the layer's unnormalised softmax
    `weights`, their sum and log-sum-exp. E_pf[d] - lse(z_f) + lse(z) where the two distributions are far apart
    (its ~1e-6 nats of rounding are small beside such a KL); where they are near (below NEAR_KL),
    E_pf[e] - s - log1p(E_p[expm1(e - s)]) with e = d - c for that rough c = E_pf[d], E_pf[e] summed in float64.
    `out`: `[positions, vocabulary]` work space, overwritten."""
    difference = torch.sub(final_logits, logits, out=out)  # d
    centre = _row_dot(final_probs, difference)  # c = E_pf[d], to float32's rough accumulation
    kl = centre - final_lse + lse
    near = kl < NEAR_KL
    if not bool(near.any()):
        return kl.clamp_(min=0)
    shifted = difference.sub_(centre.unsqueeze(-1))  # e
    mean = _row_dot_float64(final_probs, shifted)  # E_pf[e]
    shift = shifted.amax(-1).sub_(EXPM1_ROOM).clamp_(min=0)  # s
    terms = shifted.sub_(shift.unsqueeze(-1)).expm1_().mul_(weights)
    expected = terms.sum(-1).double() / weight_sum.double()  # E_p[expm1(e - s)]
    close = mean - shift.double() - torch.log1p(expected)
    return torch.where(near, close.to(kl.dtype), kl).clamp_(min=0)  # rounding may dip below 0 where they agree


def _row_dot_float64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of `[positions, vocabulary]` tensors summed in float64 → `[positions]`, a few rows at a
    time, so the products and their float64 copy stay small beside the block."""
    rows = max(1, FLOAT64_ROWS_BYTES // (8 * a.shape[-1]))
    return torch.cat([(a[i : i + rows] * b[i : i + rows]).sum(-1, dtype=torch.float64) for i in range(0, len(a), rows)])


def _softmax_weights(
    logits: torch.Tensor, row_max: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the unnormalised softmax weights exp(z - max) of logits `[positions, vocabulary]` (row maximum
    `[positions, 1]`) into `out`; return the log-sum-exp and the weights' sum, each `[positions]`."""
    torch.sub(logits, row_max, out=out).exp_()
    weight_sum = out.sum(-1)
    return row_max.squeeze(-1) + weight_sum.log(), weight_sum


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of `[positions, vocabulary]` tensors → `[positions]` (one batched product: several
    times faster than a product then a sum, and no temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)

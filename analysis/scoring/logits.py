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

from analysis.scoring.ranks import rank_in, top_k

LENS_BLOCK_BYTES = 128 * 2**20
"""Upper bound on one `[positions, vocabulary]` float32 block of logits; positions are chunked to fit. A block
lives three times at once (the layer's logits, the output's logits and probabilities; the statistics' work space
is a chunk's, `STATS_ROWS_BYTES`): 0.3 GB for 512 tokens of a 50k vocabulary, which stay in one block, so the
product with the head runs on all of them at once."""

STATS_ROWS_BYTES = 2 * 2**20
"""Upper bound on one `[positions, vocabulary]` float32 chunk of a block's logits the statistics pass over at once:
their dozen passes then read the cache, not memory (a whole block each time was ~2x slower at 512 tokens)."""
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
    `[positions, vocabulary]` take one product over the whole block (the head's weights are read once per layer),
    then `_score_rows` on chunks of STATS_ROWS_BYTES. Where `final` is None the last layer's logits are the
    output's, computed once."""
    final_logits = unembed(vectors[-1] if final is None else final)  # [positions, vocabulary]
    final_top = final_logits.argmax(-1)
    final_probs, final_lse, final_total = _softmax(final_logits, final_top)
    final_probs.div_(final_total.unsqueeze(-1))
    output = _Output(final_logits, final_probs, final_lse, torch.linalg.vecdot(final_probs, final_logits), final_top)
    chunk_rows = max(1, STATS_ROWS_BYTES // (4 * final_logits.shape[-1]))
    chunks = [slice(start, start + chunk_rows) for start in range(0, len(final_logits), chunk_rows)]
    work = torch.empty_like(final_logits[:chunk_rows])  # reused by every chunk, small enough to stay in cache
    last = len(vectors) - 1
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in LensScores.__dataclass_fields__ if name != "final_top"}
    for layer, layer_vectors in enumerate(vectors):
        logits = final_logits if final is None and layer == last else unembed(layer_vectors)
        scored = [_score_rows(logits[chunk], output.rows(chunk), targets[chunk], k, work) for chunk in chunks]
        for name, values in rows.items():
            values.append(torch.cat([chunk_scores[name] for chunk_scores in scored]))
    return {"final_top": output.top, **{name: torch.stack(values) for name, values in rows.items()}}


@dataclass(frozen=True)
class _Output:
    """The model's output distribution over a block of positions: `logits` and `probs [positions, vocabulary]`;
    `lse`, `mean_logit` (E_pf[z_f]) and `top` (its top-1 id) `[positions]`."""

    logits: torch.Tensor
    probs: torch.Tensor
    lse: torch.Tensor
    mean_logit: torch.Tensor
    top: torch.Tensor

    def rows(self, chunk: slice) -> _Output:
        return _Output(*(getattr(self, name)[chunk] for name in self.__dataclass_fields__))


def _score_rows(
    logits: torch.Tensor, output: _Output, targets: torch.Tensor, k: int, work: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One layer's scores of a few positions, each `[positions]` (top-k ones `[positions, k]`), from their logits
    `[positions, vocabulary]`: top-k, the softmax, a row-wise dot product (the entropy), the KL's passes and the two
    rank counts, each over rows that stay in cache. `work`: work space of at least as many rows, overwritten."""
    work = work[: len(logits)]
    has_target = targets != NO_TARGET
    target_ids = torch.where(has_target, targets, 0)
    top_logits, top_ids = top_k(logits, k)
    probs, lse, total = _softmax(logits, top_ids[:, 0])
    target_logit = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return {
        "entropy": lse - torch.linalg.vecdot(probs, logits) / total,
        "kl_final": _kl_final(output, logits, probs, lse, total, work),
        "target_logit": torch.where(has_target, target_logit, torch.nan),
        "target_prob": torch.where(has_target, (target_logit - lse).exp(), torch.nan),
        "top_ids": top_ids,
        "top_logits": top_logits,
        "top_probs": (top_logits - lse.unsqueeze(-1)).exp(),
        "final_top_rank": rank_in(logits, output.top, work),
        "target_rank": torch.where(has_target, rank_in(logits, target_ids, work), 0),
    }


def _kl_final(
    output: _Output,
    logits: torch.Tensor,
    probs: torch.Tensor,
    lse: torch.Tensor,
    total: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """KL(final || layer) `[positions]` (see the module's formulas), from the layer's softmax `probs`, their
    `total` and the log-sum-exp. E_pf[d] - lse(z_f) + lse(z) where the two distributions are far apart (its ~1e-6
    nats of rounding are small beside such a KL); where they are near (below NEAR_KL),
    E_pf[e] - s - log1p(E_p[expm1(e - s)]) with e = d - c for that rough c = E_pf[d], E_pf[e] summed in float64.
    `out`: `[positions, vocabulary]` work space, overwritten."""
    centre = output.mean_logit - torch.linalg.vecdot(output.probs, logits)  # c = E_pf[d], to float32's rounding
    kl = centre - output.lse + lse
    near = kl < NEAR_KL
    if not bool(near.any()):
        return kl.clamp_(min=0)
    shifted = torch.sub(output.logits, logits, out=out).sub_(centre.unsqueeze(-1))  # e
    mean = (output.probs * shifted).sum(-1, dtype=torch.float64)  # E_pf[e]
    shift = shifted.amax(-1).sub_(EXPM1_ROOM).clamp_(min=0)  # s, almost always 0
    if bool(shift.any()):
        shifted.sub_(shift.unsqueeze(-1))
    expected = torch.linalg.vecdot(shifted.expm1_(), probs).double() / total.double()  # E_p[expm1(e - s)]
    close = mean - shift.double() - torch.log1p(expected)
    return torch.where(near, close.to(kl.dtype), kl).clamp_(min=0)  # rounding may dip below 0 where they agree


def _softmax(logits: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The softmax of `logits [positions, vocabulary]` (one fused pass), its log-sum-exp and the probabilities'
    total `[positions]`. torch.softmax's probabilities sum to 1 only within ~1e-6 (its own normalisation), which
    the near KL would read as a KL; their float32 sum is exact to ~1e-7, so every expectation divides by it. The
    log-sum-exp comes from the probability of each row's top item `top [positions]` (>= 1 / vocabulary):
    lse = z_top - log(p_top / total)."""
    probs = torch.softmax(logits, -1)
    total = probs.sum(-1)
    top = top.unsqueeze(-1)
    lse = (logits.gather(-1, top) - probs.gather(-1, top).log()).squeeze(-1) + total.log()
    return probs, lse, total

"""The lens's numbers: the model's own head applied to every layer's vectors, scored over the whole vocabulary
one block of positions at a time, so no `[layers, positions, vocabulary]` tensor is ever held.

For a position with logits z (one layer) and z_f (the model's output), log-softmax log p = z - lse(z):
- target logit z_t, probability exp(z_t - lse(z)), rank 1 + #{u : z_u > z_t};
- entropy H = lse(z) - sum_u p_u z_u (nats);
- KL(final || layer) = sum_u p_f,u (log p_f,u - log p_u) = -H_f - sum_u p_f,u z_u + lse(z);
- the final top-1 token argmax z_f and its rank under z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from analysis.scoring.ranks import SCORE_BLOCK_BYTES, own_rank

NO_TARGET = -1
"""A position's target id where it has none (the last position, predicting the next token)."""


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


def lens_scores(
    unembed: nn.Module, vectors: torch.Tensor, final: torch.Tensor, targets: torch.Tensor, top_k: int
) -> LensScores:
    """Score `vectors [layers, positions, hidden]` through `unembed` (hidden -> vocabulary logits) against
    `targets [positions]` (NO_TARGET: none) and the model's output distribution, `unembed(final)` for
    `final [positions, hidden]`; keep the `top_k` predictions per layer and position."""
    n_positions = vectors.shape[1]
    with torch.inference_mode():
        vocabulary = unembed(final[:1]).shape[-1]
        k = min(top_k, vocabulary)
        per_block = max(1, SCORE_BLOCK_BYTES // (4 * vocabulary))
        blocks = []
        for start in range(0, n_positions, per_block):
            block = slice(start, start + per_block)
            blocks.append(_score_block(unembed, vectors[:, block], final[block], targets[block], k))
    return LensScores(
        **{
            name: torch.cat([block[name] for block in blocks], dim=1 if name.startswith("top") else -1)
            for name in LensScores.__dataclass_fields__
        }
    )


def _score_block(
    unembed: nn.Module, vectors: torch.Tensor, final: torch.Tensor, targets: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    final_logits = unembed(final)  # [positions, vocabulary]
    final_lse = torch.logsumexp(final_logits, -1)
    final_probs = (final_logits - final_lse.unsqueeze(-1)).exp_()
    final_neg_entropy = torch.linalg.vecdot(final_probs, final_logits) - final_lse
    final_top = final_logits.argmax(-1)
    del final_logits
    has_target = targets != NO_TARGET
    target_ids = torch.where(has_target, targets, 0)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in LensScores.__dataclass_fields__ if name != "final_top"}
    for layer_vectors in vectors:
        logits = unembed(layer_vectors)
        lse = torch.logsumexp(logits, -1)
        top_logits, top_ids = logits.topk(k, -1)
        probs = (logits - lse.unsqueeze(-1)).exp_()
        rows["entropy"].append(lse - torch.linalg.vecdot(probs, logits))
        del probs
        kl = final_neg_entropy - torch.linalg.vecdot(final_probs, logits) + lse
        rows["kl_final"].append(kl.clamp_(min=0))  # float rounding may dip below 0 where the two agree
        target_logit = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        rows["target_logit"].append(torch.where(has_target, target_logit, torch.nan))
        rows["target_prob"].append(torch.where(has_target, (target_logit - lse).exp(), torch.nan))
        rows["top_ids"].append(top_ids)
        rows["top_logits"].append(top_logits)
        rows["top_probs"].append((top_logits - lse.unsqueeze(-1)).exp())
        rows["final_top_rank"].append(own_rank(logits.unsqueeze(0).clone(), final_top)[1].squeeze(0))
        target_rank = own_rank(logits.unsqueeze(0), target_ids)[1].squeeze(0)  # uses `logits` up
        rows["target_rank"].append(torch.where(has_target, target_rank, 0))
    return {"final_top": final_top, **{name: torch.stack(values) for name, values in rows.items()}}

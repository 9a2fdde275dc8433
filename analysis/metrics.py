"""Rank, cosine, nearest neighbours and neighbour overlap from vocabulary cosine blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

SCORE_BLOCK_BYTES = 64 * 2**20
"""Upper bound on one `[groups, positions, vocab]` float32 score block; positions are chunked to fit."""


class Scorer(Protocol):
    """Cosines of vectors against every vocabulary item's reference at given positions."""

    @property
    def vocab_size(self) -> int: ...

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """`[groups, positions, hidden]`, `[positions]` → `[groups, positions, vocab]`."""
        ...


@dataclass(frozen=True)
class TokenScores:
    """Per (group, position) results: groups are the layers, then one row for the reference itself.

    cosine, rank: `[groups, positions]`; top_ids, top_cosines: `[groups, positions, k]`, best first.
    """

    cosine: torch.Tensor
    rank: torch.Tensor
    top_ids: torch.Tensor
    top_cosines: torch.Tensor


def own_rank(cosines: torch.Tensor, own_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Own cosine and 1-based rank: 1 + how many other items score strictly higher than the own item.

    cosines `[groups, positions, vocab]`, own_ids `[positions]` → two `[groups, positions]` tensors.
    """
    index = own_ids.view(1, -1, 1).expand(cosines.shape[0], -1, 1)
    own = cosines.gather(-1, index)
    # One group at a time: counting a whole block's comparisons at once materialises them as int64, eight bytes
    # per score (0.3 GB on a 128 MB block), and is several times slower than these cache-sized pieces.
    rank = torch.stack([(group > group_own).sum(-1) for group, group_own in zip(cosines, own, strict=True)]) + 1
    return own.squeeze(-1), rank


def overlap_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|set(a) & set(b)| along the last axis for id tensors `[..., n]` of distinct ids → `[...]`."""
    return (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).sum(-1)


def _position_blocks(n_groups: int, n_positions: int, vocab: int) -> Iterator[slice]:
    per_block = max(1, SCORE_BLOCK_BYTES // (4 * n_groups * vocab))
    for start in range(0, n_positions, per_block):
        yield slice(start, min(start + per_block, n_positions))


def score_tokens(
    scorer: Scorer,
    vectors: torch.Tensor,
    token_ids: torch.Tensor,
    position_ids: torch.Tensor,
    k: int,
) -> TokenScores:
    """Score `vectors [groups, positions, hidden]` against the whole vocabulary, one position block at a time."""
    vocab = scorer.vocab_size
    k = min(k, vocab)
    parts: list[TokenScores] = []
    for block in _position_blocks(vectors.shape[0], vectors.shape[1], vocab):
        cosines = scorer.cosine(vectors[:, block], position_ids[block])
        own, rank = own_rank(cosines, token_ids[block])
        top = cosines.topk(k, dim=-1)
        parts.append(TokenScores(own, rank, top.indices, top.values))
        del cosines
    return TokenScores(*(torch.cat([getattr(p, f) for p in parts], dim=1) for f in TokenScores.__dataclass_fields__))

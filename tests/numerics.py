"""Tolerances that follow from the dtype, and rank checks that hold on any BLAS build or thread count.

The package scores the vocabulary in float32. One float32 cosine is a sum of `hidden` products (384 to 1024
here), whose rounding grows like sqrt(hidden) * eps32 (eps32 = 1.2e-7): about 2e-6 to 4e-6. `COSINE32` is
a few times that. A rank counts items whose float32 cosine is strictly higher than the own item's, so an
item whose exact cosine lies within `COSINE32` of the own one may fall on either side on another machine:
`rank_bounds` allows exactly those, and no more.
"""

from __future__ import annotations

import numpy as np
import torch

COSINE32 = 1e-5
"""Absolute tolerance of a float32 cosine against an exact (float64) one."""


def exact_references(scorer, position_id: int) -> torch.Tensor:
    """Every vocabulary item's reference vector at one position, materialised in float64: `[vocab, hidden]`."""
    vocab = scorer.word.shape[0]
    ids = torch.arange(vocab)
    return scorer.references(ids, torch.full_like(ids, position_id), torch.float64)


def exact_cosines(vector: np.ndarray, references: torch.Tensor) -> np.ndarray:
    """float64 cosine of one vector `[hidden]` with each reference `[vocab, hidden]` → `[vocab]`."""
    v = torch.tensor(vector, dtype=torch.float64)
    return (torch.nn.functional.cosine_similarity(v[None], references, dim=-1)).numpy()


def rank_bounds(cosines: np.ndarray, own_id: int, tol: float = COSINE32) -> tuple[int, int]:
    """The ranks a float32 computation may give: 1 + items surely higher, to 1 + items possibly higher."""
    own = cosines[own_id]
    others = np.delete(cosines, own_id)
    return 1 + int((others > own + tol).sum()), 1 + int((others > own - tol).sum())


def assert_top_ids_consistent(top_ids: list[int], cosines: np.ndarray, tol: float = COSINE32) -> None:
    """`top_ids` (best first) are a top-k of `cosines` up to float32 rounding: distinct, in order, and none
    scoring below the k-th best by more than `tol`."""
    k = len(top_ids)
    assert len(set(top_ids)) == k
    kth_best = np.sort(cosines)[::-1][k - 1]
    assert (cosines[top_ids] >= kth_best - tol).all()
    assert (np.diff(cosines[top_ids]) <= tol).all()

"""Rank, cosine, nearest neighbours and neighbour overlap: every vocabulary row scored, one block of tokens at a
time, under one or several geometries that share their products with the vocabulary table.

A geometry maps a stage vector v of layer l to f(v) = A_l (v - mu_l) and a reference r to g(r) = B_l (r - m)
(A, B diagonal; see `analysis.scoring.geometry.GeometryMap`). Its cosine's numerator is a . (r - m) with
a = B_l f(v) = P_l v - b_l (P_l = A_l B_l, b_l = P_l mu_l), and a . r needs T_u . a = T_u . (P_l v) - T_u . b_l.
T_u . b_l is one row per layer, computed once; T_u . (P_l v) is the product with the table:

- P_l = 1 (cosine, centered): T_u . v, shared by every such geometry;
- P_l = 1 except on a few dimensions (no_rogue): that plus the few columns where some P_l differs;
- anything else (standardized): T_u . (P_l v), rows of its own;
and the rows every geometry needs ride along in one product with the table per block of tokens.

The denominators |g(r_u(p))| are weighted norms of the references (`references.Weighting`), and |f(v)| is
taken directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from analysis.model import derived
from analysis.model.loaded import LoadedModel
from analysis.scoring.geometry import GeometryMap
from analysis.scoring.references import Columns, PositionBlock, VocabularyScorer, Weighting, Workspace, per_token

SCORE_BLOCK_BYTES = 256 * 2**20
"""Upper bound on one `[groups, tokens, vocab]` float32 score block; tokens are chunked to fit. Blocks are
written into a `Workspace` reused from block to block, so their size costs no page faults, and large blocks
keep the products with the table efficient: each product re-reads the whole table, so with a 256,000-item
vocabulary (Gemma) at 64 MB (65 tokens a block) `analyze` and `lens` on 512 tokens took 1.5x their floor, at
256 MB 1.06x (`benchmarks/bench_large_vocab.py`). 512 tokens of a 50k vocabulary fit in 103 MB."""

TOP_K_SEGMENT = 64
"""`top_k` sorts only the segments of this many items whose maxima are among the k largest."""

SPARSE_SHARE = 8
"""A scale that differs from 1 on at most hidden / SPARSE_SHARE dimensions is applied as a correction of the
shared product (a few columns of the table) rather than as a product of its own."""

_EPS = 1e-12


def _tensor(array: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _sparse_support(deviation: torch.Tensor) -> list[torch.Tensor] | None:
    """Per layer, the dimensions where `deviation` `[layers, hidden]` is not 0, if each layer has few."""
    supports = [torch.nonzero(row).squeeze(-1) for row in deviation]
    limit = deviation.shape[-1] // SPARSE_SHARE
    return supports if all(len(support) <= limit for support in supports) else None


class MapScorer:
    """One geometry's cosines against every vocabulary reference, derived from its `GeometryMap`: built once per
    model, reference and map (the per-layer rows and the weighted norms' per-item terms are passes over the
    table)."""

    def __init__(self, scorer: VocabularyScorer, geometry: GeometryMap):
        self.scorer = scorer
        self.geometry = geometry
        device = scorer.table.device
        self.vector_scale = _tensor(geometry.vector_scale, device)  # A [layers, hidden]
        self.vector_shift = _tensor(geometry.vector_shift, device)  # mu [layers, hidden]
        reference_scale = _tensor(geometry.reference_scale, device)  # B [layers, hidden]
        self.shift = _tensor(geometry.reference_shift, device)  # m [hidden]
        scales = [s for s in (self.vector_scale, reference_scale) if s is not None]
        self.scale = scales[0] * scales[1] if len(scales) == 2 else scales[0] if scales else None  # P
        self.bias = None  # b = P mu
        if self.vector_shift is not None:
            self.bias = self.vector_shift if self.scale is None else self.scale * self.vector_shift
        self.product: Literal["shared", "own"] = "shared"
        self.correction: Columns | None = None  # the table where P differs from 1 (on the shared product)
        if self.scale is not None:
            if _sparse_support(self.scale - 1) is None:
                self.product = "own"
            else:
                changed = torch.nonzero((self.scale != 1).any(0)).squeeze(-1)  # every layer's dimensions at once
                self.correction = scorer.columns(changed) if len(changed) else None
        with torch.inference_mode():
            self.layer_rows = None if self.bias is None else scorer.table_products(self.bias)  # T . b [layers, vocab]
            self.norms = self._norms(reference_scale)

    def _norms(self, reference_scale: torch.Tensor | None) -> list[list[Weighting]]:
        """The weighted norm |g(r)|^2 as a sum of weightings: one list for every layer, or one list per layer."""
        scorer = self.scorer
        ones = torch.ones(scorer.hidden_size, dtype=scorer.table.dtype, device=scorer.table.device)
        plain = scorer.plain if self.shift is None else scorer.weighting(ones, self.shift)
        if reference_scale is None:
            return [[plain]]
        weights = reference_scale**2
        if bool((weights == weights[0]).all()):
            return [[scorer.weighting(weights[0], self.shift)]]
        deviation = weights - 1
        if _sparse_support(deviation) is None:
            return [[scorer.weighting(row, self.shift)] for row in weights]
        return [[plain, scorer.weighting(row, self.shift)] if row.any() else [plain] for row in deviation]

    @property
    def weightings(self) -> list[Weighting]:
        """Every weighting the norms use (their cross terms ride along with a block's position terms)."""
        return list({id(w): w for layer in self.norms for w in layer}.values())

    def table_rows(self, vectors: torch.Tensor) -> torch.Tensor:
        """What this map multiplies with the table: the vectors themselves (a product shared with every map that
        does the same), or P v (a product of its own)."""
        if self.product == "shared":
            return vectors
        assert self.scale is not None  # a product of its own is P v
        return self.scale.unsqueeze(1) * vectors

    @property
    def copies_shared(self) -> bool:
        """Whether this map would have to copy the shared product before changing it (it adds nothing to it)."""
        return self.product == "shared" and self.correction is None and self.bias is None

    def transformed(self, vectors: torch.Tensor) -> torch.Tensor:
        """f(v) for vectors `[layers, tokens, hidden]`."""
        if self.vector_shift is not None:
            vectors = vectors - self.vector_shift.unsqueeze(1)
        return vectors if self.vector_scale is None else vectors * self.vector_scale.unsqueeze(1)

    def cosine(
        self,
        vectors: torch.Tensor,
        products: torch.Tensor,
        block: PositionBlock,
        rows: torch.Tensor | None,
        *,
        owned: bool = True,
        unit: bool = True,
        workspace: Workspace | None = None,
    ) -> torch.Tensor:
        """cos(f(v), g(r_u(p))) for every vocabulary item: vectors `[groups, tokens, hidden]` → `[groups, tokens,
        vocab]`, given the block's `products` with the table (`table_rows`'s rows times T_u), overwritten unless
        `owned` is False; tokens sit at the block's positions `rows` (None: one position each, in order). With
        `unit` False the scores are left multiplied by |f(v)|, which orders each token's vocabulary the same way
        (enough for ranks). A copy, where one is needed, goes into `workspace` where one is given."""
        scorer = self.scorer
        mine = None if owned or workspace is None else workspace.take("map", products.shape)
        if self.correction is not None:
            assert self.scale is not None  # the correction covers the dimensions where P differs from 1
            if not owned:
                products, owned = _copy(products, mine), True
            deviation = ((self.scale - 1).unsqueeze(1) * vectors).flatten(0, 1)
            scorer.table_products_on(deviation, self.correction, out=products.view(len(deviation), -1))
        a = vectors if self.scale is None else vectors * self.scale.unsqueeze(1)
        if self.bias is not None:
            assert self.layer_rows is not None  # T . b, computed with the bias
            a = a - self.bias.unsqueeze(1)
            layer_rows = self.layer_rows.unsqueeze(1)
            products = products.sub_(layer_rows) if owned else torch.sub(products, layer_rows, out=mine)
            owned = True
        if not owned:
            products = _copy(products, mine)
        scorer.finish(products, a, block, rows, self.shift)
        computed: dict[int, torch.Tensor] = {}  # a weighting shared by several layers is computed once

        def norm(weightings: list[Weighting]) -> torch.Tensor:
            for weighting in weightings:
                if id(weighting) not in computed:
                    computed[id(weighting)] = per_token(scorer.norm_sq(block, weighting), rows)
            return sum(computed[id(weighting)] for weighting in weightings).clamp_min(_EPS).sqrt_()

        if len(self.norms) == 1:
            products.div_(norm(self.norms[0]))
        else:
            for layer, weightings in enumerate(self.norms):
                products[layer].div_(norm(weightings))
        if not unit:
            return products
        norms = torch.linalg.vector_norm(self.transformed(vectors), dim=-1, keepdim=True)
        return products.div_(norms.clamp_min_(_EPS))


def _copy(source: torch.Tensor, into: torch.Tensor | None) -> torch.Tensor:
    """A copy of `source`, in `into` where given."""
    return source.clone() if into is None else into.copy_(source)


def map_scorer(lm: LoadedModel, scorer: VocabularyScorer, geometry: GeometryMap) -> MapScorer:
    """The `MapScorer` of `geometry` on `scorer`'s references, built once per model, table and map source."""
    return lm.cached(derived.MapScorer(scorer.key, geometry.source), lambda: MapScorer(scorer, geometry))


Request = tuple[torch.Tensor, MapScorer]
"""Vectors `[groups, tokens, hidden]` to score under one geometry: several requests over the same tokens share a
block's position terms and its one product with the vocabulary table."""


def score_blocks(
    scorer: VocabularyScorer, position_ids: torch.Tensor, requests: Sequence[Request], *, unit: bool = True
) -> Iterator[tuple[slice, int, torch.Tensor]]:
    """The cosines of each request's vectors at `position_ids [tokens]` against every vocabulary reference under
    its geometry, one block of tokens at a time: yields `(tokens, request index, cosines [groups, block,
    vocab])`, every request of a block before the next block. One product with the table per block serves every
    request: the rows each needs ride along in it (vectors shared by several requests once), with the block's
    position terms, so the table is read once per block; tokens that share positions (sorted by position) share
    their position terms. `unit` False: see `MapScorer.cosine` (enough for ranks)."""
    n_tokens = requests[0][0].shape[1]
    keys = [id(vectors) if mapping.product == "shared" else ("own", i) for i, (vectors, mapping) in enumerate(requests)]
    riders = {key: index for index, key in reversed(list(enumerate(keys)))}  # each product once: its first request
    groups = sum(requests[index][0].shape[0] for index in riders.values())
    per_block = max(1, SCORE_BLOCK_BYTES // (4 * groups * scorer.vocab_size))
    weightings = tuple(w for _, mapping in requests for w in mapping.weightings)
    # A product shared by several requests goes, unchanged, to all of them but one, which may overwrite it: best
    # one that would otherwise copy it. Requests are scored in an order that leaves those last.
    owners = set()
    for key in riders:
        using = [index for index, other in enumerate(keys) if other == key]
        owners.add(next((index for index in using if requests[index][1].copies_shared), using[-1]))
    order = [index for index in range(len(requests)) if index not in owners] + sorted(owners)
    workspace = Workspace(scorer.table)
    for start in range(0, n_tokens, per_block):
        part = slice(start, min(start + per_block, n_tokens))
        positions, rows = torch.unique(position_ids[part], return_inverse=True)
        if torch.equal(positions, position_ids[part]):
            rows = None
        ridden = [requests[index][1].table_rows(requests[index][0][:, part]) for index in riders.values()]
        block, products = scorer.position_block(positions, weightings, torch.cat(ridden), workspace)
        assert products is not None  # the ridden rows' products with the table
        by_key = dict(zip(riders, products.split([rider.shape[0] for rider in ridden]), strict=True))
        for index in order:
            vectors, mapping = requests[index]
            cosines = mapping.cosine(
                vectors[:, part], by_key[keys[index]], block, rows, owned=index in owners, unit=unit,
                workspace=workspace,
            )  # fmt: skip
            yield part, index, cosines


@dataclass(frozen=True)
class TokenScores:
    """Per (group, token): groups are the layers, then any further groups (a token's own reference).

    cosine, rank: `[groups, tokens]`; top_ids, top_cosines: `[groups, tokens, k]`, best first.
    """

    cosine: torch.Tensor
    rank: torch.Tensor
    top_ids: torch.Tensor
    top_cosines: torch.Tensor


def own_rank(cosines: torch.Tensor, own_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Own cosine and 1-based rank: 1 + how many other items score strictly higher than the own item.

    cosines `[groups, tokens, vocab]`, own_ids `[tokens]` → two `[groups, tokens]` tensors. `cosines` is used up
    (overwritten by `rank_in`'s comparison): take anything else from it first.
    """
    ids = own_ids.expand(cosines.shape[0], -1)
    own = cosines.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return own, rank_in(cosines, ids, out=cosines)


def rank_in(scores: torch.Tensor, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """1 + how many items score strictly higher than item `ids` in each row of `scores [..., vocab]` → `[...]`.
    The comparison is written into `out` (a workspace of the same shape, or `scores` itself where they may be used
    up) as 1.0 and 0.0 and summed as floats: exact (whole numbers below 2^24), one pass, and several times faster
    than summing a boolean comparison."""
    own = scores.gather(-1, ids.unsqueeze(-1))
    return torch.gt(scores, own, out=out).sum(-1).long() + 1


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` largest scores of each row of `scores [..., vocab]` and their ids, largest first, each `[..., k]`,
    as `torch.topk` (a few times faster over a large vocabulary). The rows are cut into segments of TOP_K_SEGMENT
    items and only the k segments with the largest maxima, and the items past the last whole segment, are sorted:
    each of the k largest lies in one of them (a segment left out has k chosen ones whose maxima are at least its
    own, so k items at least as large as any of its)."""
    vocab = scores.shape[-1]
    segments = vocab // TOP_K_SEGMENT
    if segments < 4 * k:
        return torch.topk(scores, k, dim=-1)
    lead = scores.shape[:-1]
    whole = segments * TOP_K_SEGMENT
    body = scores[..., :whole].unflatten(-1, (segments, TOP_K_SEGMENT))  # a view, whatever the leading strides
    chosen = body.amax(-1).topk(k, dim=-1).indices  # [..., k]
    candidates = body.gather(-2, chosen.unsqueeze(-1).expand(*lead, k, TOP_K_SEGMENT)).flatten(-2)
    offsets = torch.arange(TOP_K_SEGMENT, device=scores.device)
    candidate_ids = (chosen.unsqueeze(-1) * TOP_K_SEGMENT + offsets).flatten(-2)
    tail_ids = torch.arange(whole, vocab, device=scores.device).expand(*lead, -1)
    values, where = torch.cat([candidates, scores[..., whole:]], -1).topk(k, dim=-1)
    return values, torch.cat([candidate_ids, tail_ids], -1).gather(-1, where)


def overlap_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|set(a) & set(b)| along the last axis for id tensors `[..., n]` of distinct ids → `[...]`."""
    return (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).sum(-1)


def score_tokens(
    scorer: VocabularyScorer,
    requests: Sequence[Request],
    token_ids: torch.Tensor,
    position_ids: torch.Tensor,
    k: int,
) -> list[TokenScores]:
    """Score each request's vectors against the whole vocabulary under its geometry: own cosine, rank and the
    top `k`, one `TokenScores` per request."""
    k = min(k, scorer.vocab_size)
    parts: list[list[TokenScores]] = [[] for _ in requests]
    for part, index, cosines in score_blocks(scorer, position_ids, requests):
        top_cosines, top_ids = top_k(cosines, k)
        own, rank = own_rank(cosines, token_ids[part])
        parts[index].append(TokenScores(own, rank, top_ids, top_cosines))
        del cosines
    fields = TokenScores.__dataclass_fields__
    return [TokenScores(*(torch.cat([getattr(p, f) for p in found], dim=1) for f in fields)) for found in parts]


def rank_tokens(
    scorer: VocabularyScorer,
    maps: Sequence[MapScorer],
    vectors: torch.Tensor,
    token_ids: torch.Tensor,
    position_ids: torch.Tensor,
    on_scored: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """The rank of each token's own item under each of `maps`: `[groups, tokens]` per map. Tokens are scored in
    position order, so those at the same position (many texts side by side) share their position terms.
    `on_scored(tokens)` is called as each block of tokens is scored under each map."""
    order = torch.argsort(position_ids, stable=True)
    ranks = [torch.empty(vectors.shape[:2], dtype=torch.long, device=vectors.device) for _ in maps]
    sorted_ids = token_ids[order]
    in_order = vectors[:, order]
    requests = [(in_order, mapping) for mapping in maps]
    for part, index, cosines in score_blocks(scorer, position_ids[order], requests, unit=False):
        ranks[index][:, order[part]] = own_rank(cosines, sorted_ids[part])[1]
        del cosines
        if on_scored:
            on_scored(part.stop - part.start)
    return ranks

"""Cosine of stage vectors against every vocabulary item's reference vector, without materialising references.

Every reference of every supported model has one form: for vocabulary item u at position p,

    r_u(p) = (T_u + Q_p) / s_u(p) + c

- `raw`: T_u = w_u (the word row), no Q, s = 1, c = 0;
- `position`: as raw plus Q_p = q_p, the absolute position row (+ token-type row 0);
- `embedding`: what the embedding layer outputs. With a LayerNorm (BERT, ModernBERT), LN(w_u + q_p) =
  gamma * C(w_u + q_p) / sigma + beta: T_u = gamma * C w_u, Q_p = gamma * C q_p, s = sigma_u(p) (the
  LayerNorm's scale of w_u + q_p), c = beta. Without one (GPT-2, Llama) it is the plain sum, or the word row;
  Gemma's layer multiplies the row by k = sqrt(hidden): T_u = k w_u, held implicitly as a gain of k.
- where the embedding size differs from the hidden size (ALBERT, ELECTRA-small), the model's own projection
  P(x) = W x + b applies to each: T_u = W (…) and Q_p = W (…) are the projected terms, c = W beta + b or b.

So a . r and |r|^2 (and any diagonal-weighted, shifted |r - m|^2, for the geometry controls) follow exactly
from products with the table of T and per-item / per-position constants: memory stays `[rows, vocab]` for
the scores however many positions there are. T is held implicitly (the word table, with gamma and the
centring C applied on the vector side) except under a projection, where it is materialised once per model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.checks import check_choice
from analysis.definitions import REFERENCES, Reference
from analysis.model import derived
from analysis.model.architectures import EmbeddingParts
from analysis.model.capabilities import check_reference
from analysis.model.loaded import LoadedModel

Memo = Callable[[derived.DerivedKey, Callable[[], Any]], Any]

_ROW_CHUNK = 8192
_EPS = 1e-12


def _by_row_chunks(n_rows: int, fn) -> torch.Tensor:
    """Apply `fn` to slices of `_ROW_CHUNK` rows and concatenate, to bound temporaries to `[chunk, hidden]`."""
    return torch.cat([fn(slice(i, i + _ROW_CHUNK)) for i in range(0, n_rows, _ROW_CHUNK)])


@dataclass(frozen=True)
class VocabConstants:
    """Per-vocabulary-item constants of the word table, in the embedding space: each `[vocab]`."""

    norm_sq: torch.Tensor  # |w_u|^2
    mean: torch.Tensor  # mean_i w_ui


class Workspace:
    """Scratch tensors reused from one score block to the next: a view of the shape asked for, into a flat buffer
    kept by name. A large fresh tensor is mapped and faulted in page by page each time it is allocated, which
    made filling and passing over a score block several times slower than over a reused one."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A contiguous `[shape]` tensor of `like`'s dtype and device, its contents undefined."""
        size = 1
        for extent in shape:
            size *= extent
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(size, dtype=self.like.dtype, device=self.like.device)
            self._buffers[name] = buffer
        return buffer[:size].view(shape)


@dataclass(frozen=True)
class PositionBlock:
    """What every score at a set of distinct positions shares: Q_p `[positions, hidden]` (None where the
    reference has no position term), for a LayerNorm'd reference its scale s `[positions or 1, vocab]`, and the
    cross terms T_u . (weights * Q_p) `[positions, vocab]` of the weighted norms asked for with it."""

    q: torch.Tensor | None
    sigma: torch.Tensor | None
    crosses: dict[int, torch.Tensor]  # id(weighting) -> T_u . (weights * Q_p) `[positions, vocab]`


@dataclass(frozen=True)
class Columns:
    """The table's columns on a few dimensions: T_u . y for y that vanishes off them costs a few columns."""

    support: torch.Tensor  # [s] dimension indices
    table: torch.Tensor  # [vocab, s] (the table itself when the support is every dimension)


@dataclass(frozen=True)
class Weighting:
    """The weights and shift of a weighted reference norm, sum_i weights_i (r_i - shift_i)^2, with the per-item
    terms that depend on them alone (one pass over the table: build once, reuse for every text)."""

    weights: torch.Tensor  # [hidden]
    shift: torch.Tensor  # [hidden]
    columns: Columns  # the table on the dimensions with non-zero weight
    quadratic: torch.Tensor  # [vocab] sum_i weights_i T_ui^2
    linear: torch.Tensor | None  # [vocab] T_u . (weights * (c - shift)); None where that is zero

    @property
    def full(self) -> bool:
        """Whether every dimension has a weight (its cross terms then ride along with the position terms)."""
        return len(self.columns.support) == len(self.weights)


class VocabularyScorer:
    """Scores vectors against all vocabulary references at given positions, in three steps any caller can share:
    `table_products` (T_u . x, the one product with the whole table), `position_block` (what the positions
    add) and `finish` (the position, scale and offset terms), then `norm_sq` for the references' norms.

    `cosine(vectors [groups, positions, hidden], position_ids [positions])` → `[groups, positions, vocab]` is
    the plain cosine through those steps.
    """

    def __init__(self, parts: EmbeddingParts, reference: Reference, memo: Memo = lambda key, build: build()):
        """`memo(key, build)` keeps per-model terms (`LoadedModel.cached`; default: build every time). The scorer
        does not keep `memo`: whatever a model caches must not hold the model, or releasing it would free
        nothing until Python's cycle collector ran."""
        self.reference = check_choice("reference", reference, REFERENCES)
        if reference == "position" and parts.position is None:
            raise ValueError("The reference 'position' needs an absolute position table.")
        self.parts = parts
        self._columns: dict[tuple[int, ...], Columns] = {}
        self.word = parts.word.weight.detach()  # [vocab, embedding size]
        self.constants = memo(derived.VocabConstants(), lambda: vocab_constants(parts))
        self.normalised = reference == "embedding" and parts.norm is not None
        self.uses_positions = reference != "raw"
        norm = parts.norm if self.normalised else None
        self.ln_gain = norm.weight.detach() if norm is not None and norm.weight is not None else None
        self.ln_bias = norm.bias.detach() if norm is not None and norm.bias is not None else None
        self.ln_eps = norm.eps if norm is not None else 0.0
        projection = parts.projection
        self.projection = projection.weight.detach() if projection is not None else None  # [hidden, embedding]
        bias = projection.bias if projection is not None else None  # OPT-350m's projection has none
        self.projection_bias = bias.detach() if bias is not None else None
        if projection is None:
            self.table, self.gain, self.mean_subtracted = self.word, self.ln_gain, self.normalised
            if reference == "embedding" and parts.scale != 1.0:  # T_u = k w_u (no norm, positions or projection)
                self.gain = torch.full_like(self.word[0], parts.scale)
        else:
            self.table = memo(derived.ProjectedTable(self.normalised), self._projected_table)
            self.gain, self.mean_subtracted = None, False
        self.offset = self._offset()
        self.plain = memo(derived.PlainWeighting(reference), lambda: self.weighting(torch.ones_like(self.table[0])))

    @property
    def vocab_size(self) -> int:
        return self.word.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.table.shape[1]

    @property
    def key(self) -> derived.ScorerTable:
        """Names this scorer's table among a model's derived data."""
        return derived.ScorerTable(self.reference, self.normalised)

    def _projected_table(self) -> torch.Tensor:
        """T for every item under the projection: W w_u, or W (gamma * C w_u) for a LayerNorm'd reference."""
        return _by_row_chunks(self.vocab_size, lambda rows: self._to_hidden(self.word[rows]))

    def _to_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The linear part of the reference map applied to embedding-space rows x `[n, embedding]` → `[n, hidden]`:
        gamma * C x for a LayerNorm'd reference, then W where there is a projection."""
        if self.normalised:
            x = x - x.mean(-1, keepdim=True)
            if self.ln_gain is not None:
                x = x * self.ln_gain
        return x if self.projection is None else x @ self.projection.T

    def _offset(self) -> torch.Tensor | None:
        """c: beta for a LayerNorm'd reference, mapped by the projection and plus its bias where there is one."""
        c = self.ln_bias
        if self.projection is not None:
            c = None if c is None else c @ self.projection.T
            if self.projection_bias is not None:
                c = self.projection_bias if c is None else c + self.projection_bias
        return c

    def position_vectors(self, position_ids: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor | None:
        """q_p in the embedding space = position row (+ token-type row 0): `[positions, embedding]` in the dtype and
        on the device of `like` (default: the table's); None where the reference has no position term."""
        if not self.uses_positions or (self.parts.position is None and self.parts.token_type is None):
            return None
        like = self.word if like is None else like
        q = torch.zeros(len(position_ids), self.word.shape[1], dtype=like.dtype, device=like.device)
        if self.parts.position is not None:
            q = q + self.parts.position.weight.detach()[position_ids.to(self.word.device)].to(q)
        if self.parts.token_type is not None:
            q = q + self.parts.token_type.weight.detach()[0].to(q)
        return q

    def references(
        self, token_ids: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The explicit reference vector of each (token, position) pair: `[pairs, hidden]`, summed, normalised and
        projected in `dtype` (default: the tables' own float32 on their device; float64, for values shown as
        exact, on the CPU: MPS has no float64)."""
        device = torch.device("cpu") if dtype == torch.float64 else self.word.device
        summed = self.word[token_ids.to(self.word.device)].to(device=device, dtype=dtype)
        if self.reference == "embedding" and self.parts.scale != 1.0:  # the layer scales its rows (Gemma)
            summed = summed * self.parts.scale
        q = self.position_vectors(position_ids, summed)
        if q is not None:
            summed = summed + q
        cast = lambda t: None if t is None else t.to(summed)  # noqa: E731
        if self.normalised:
            summed = torch.nn.functional.layer_norm(
                summed, (summed.shape[-1],), cast(self.ln_gain), cast(self.ln_bias), self.ln_eps
            )
        if self.projection is not None:
            summed = torch.nn.functional.linear(summed, cast(self.projection), cast(self.projection_bias))
        return summed

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Plain cosine of each vector with every vocabulary reference at its position: `[groups, positions, vocab]`."""
        unit = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(_EPS)
        block, products = self.position_block(position_ids, riders=unit)
        scores = self.finish(products, unit, block)  # a . r is linear in a: the unit vector
        return scores.div_(self.norm_sq(block).clamp_min_(_EPS).sqrt_())

    def _pullback(self, a: torch.Tensor) -> torch.Tensor:
        """g with T_u . a = table_u . g: a itself, or C(gamma * a) where T_u = gamma * C w_u is implicit."""
        if self.gain is not None:
            a = a * self.gain
        return a - a.mean(-1, keepdim=True) if self.mean_subtracted else a

    def table_products(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """T_u . x for every vocabulary item: `[..., hidden]` → `[..., vocab]`, one product with the whole table
        (written into `out`, `[rows, vocab]`, when given)."""
        flat = self._pullback(x.reshape(-1, x.shape[-1]))
        return torch.matmul(flat, self.table.T, out=out).view(*x.shape[:-1], -1)

    def columns(self, support: torch.Tensor) -> Columns:
        """The table's `Columns` on the dimensions `support` `[s]` (kept by the scorer: slicing copies them)."""
        if len(support) == self.table.shape[1]:
            return Columns(support, self.table)
        dims = tuple(support.tolist())
        if dims not in self._columns:
            self._columns[dims] = Columns(support, self.table[:, support])
        return self._columns[dims]

    def table_products_on(self, y: torch.Tensor, columns: Columns, out: torch.Tensor | None = None) -> torch.Tensor:
        """T_u . y for rows y `[n, hidden]` that vanish off `columns.support` → `[n, vocab]`, from those columns
        alone (a few dimensions cost a few columns); added into `out` `[n, vocab]` when given."""
        g = y[:, columns.support] if self.gain is None else (y * self.gain)[:, columns.support]
        if self.mean_subtracted:  # T_u . y = table_u . g - mean_u (sum g): one more column
            g = torch.cat([g, -g.sum(-1, keepdim=True)], dim=-1)
            table = torch.cat([columns.table, self.constants.mean.unsqueeze(-1)], dim=-1)
        else:
            table = columns.table
        return g @ table.T if out is None else out.addmm_(g, table.T)

    def position_block(
        self,
        position_ids: torch.Tensor,
        weightings: tuple[Weighting, ...] = (),
        riders: torch.Tensor | None = None,
        workspace: Workspace | None = None,
    ) -> tuple[PositionBlock, torch.Tensor | None]:
        """The terms shared by every score at the distinct `position_ids` `[positions]`: Q_p, the LayerNorm scale
        and the cross terms of the plain norm and of the full `weightings`; and the table products T_u . x of
        `riders` `[groups, tokens, hidden]` (`[groups, tokens, vocab]`, None without riders). One product with the
        table gives them all, so the table is read once; it is written into `workspace` where one is given."""
        rows = [] if riders is None else [self._pullback(riders.reshape(-1, riders.shape[-1]))]
        q_embedding = self.position_vectors(position_ids)
        q = riding = None
        if q_embedding is not None:
            q = self._to_hidden(q_embedding)
            riding = list({id(w): w for w in (self.plain, *weightings) if w.full}.values())
            rows += [self._pullback(ride.weights * q) for ride in riding]
        word_rows = self.normalised and q_embedding is not None and self.projection is None  # table = word table
        if word_rows:
            rows.append(q_embedding)
        products = self.table.new_empty((0, self.vocab_size))  # no rows to multiply: nothing below reads it
        if rows:
            stacked = torch.cat(rows)
            out = None if workspace is None else workspace.take("position_block", (len(stacked), self.vocab_size))
            products = torch.matmul(stacked, self.table.T, out=out)
        ridden = 0 if riders is None else riders.shape[0] * riders.shape[1]
        table_products = None if riders is None else products[:ridden].view(*riders.shape[:2], -1)
        n = len(position_ids)
        crosses = {}
        if riding is not None:
            crosses = {id(ride): products[ridden + i * n : ridden + (i + 1) * n] for i, ride in enumerate(riding)}
        sigma = None
        if self.normalised:
            word_q = None
            if q_embedding is not None:
                word_q = products[-n:] if word_rows else q_embedding @ self.word.T
            sigma = self._sigma(q_embedding, word_q)
        return PositionBlock(q=q, sigma=sigma, crosses=crosses), table_products

    def finish(
        self,
        products: torch.Tensor,
        a: torch.Tensor,
        block: PositionBlock,
        rows: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """a . (r_u(p) - shift) = (T_u . a + Q_p . a) / s + a . (c - shift), in place on `products` = T_u . a
        `[groups, tokens, vocab]`, for vectors a `[groups, tokens, hidden]`; token t sits at the block's position
        `rows[t]` (None: position t)."""
        if block.q is not None:
            q = block.q if rows is None else block.q[rows]
            products.add_((a * q).sum(-1, keepdim=True))
        if block.sigma is not None:
            products.div_(per_token(block.sigma, rows))
        offset = self.offset if shift is None else -shift if self.offset is None else self.offset - shift
        if offset is not None:
            products.add_((a @ offset).unsqueeze(-1))
        return products

    def weighting(self, weights: torch.Tensor, shift: torch.Tensor | None = None) -> Weighting:
        """The `Weighting` for `weights` `[hidden]` and `shift` `[hidden]` (default zero)."""
        weights = weights.to(self.table.dtype)
        shift = torch.zeros_like(weights) if shift is None else shift.to(self.table.dtype)
        columns = self.columns(torch.nonzero(weights).squeeze(-1))
        w = weights[columns.support]
        mean = self.constants.mean.unsqueeze(-1)

        def quadratic(rows: slice) -> torch.Tensor:
            t = columns.table[rows] - mean[rows] if self.mean_subtracted else columns.table[rows]
            if self.gain is not None:
                t = t * self.gain[columns.support]
            return t**2 @ w

        offset = -shift if self.offset is None else self.offset - shift
        d = weights * offset
        linear = self.table_products_on(d.unsqueeze(0), columns)[0] if d.any() else None
        return Weighting(weights, shift, columns, _by_row_chunks(self.vocab_size, quadratic), linear)

    def norm_sq(self, block: PositionBlock, weighting: Weighting | None = None) -> torch.Tensor:
        """sum_i weights_i (r_u(p)_i - shift_i)^2 for every vocabulary item: `[positions or 1, vocab]`; without a
        weighting, |r_u(p)|^2. With e = T_u + Q_p and d = weights * (c - shift):
        (sum w e^2) / s^2 + 2 (e . d) / s + sum w (c - shift)^2."""
        weighting = weighting or self.plain
        w, q = weighting.weights, block.q
        offset = -weighting.shift if self.offset is None else self.offset - weighting.shift
        d = w * offset
        quadratic = weighting.quadratic.unsqueeze(0)
        linear = weighting.linear.unsqueeze(0) if weighting.linear is not None else None
        if q is not None:
            cross = block.crosses.get(id(weighting))
            if cross is None:
                cross = self.table_products_on(w * q, weighting.columns)
            quadratic = quadratic + 2 * cross + (w * q * q).sum(-1, keepdim=True)
            if weighting.linear is not None:
                linear = linear + (q @ d).unsqueeze(-1)
        if block.sigma is not None:
            quadratic = quadratic / block.sigma**2
            if linear is not None:
                linear = linear / block.sigma
        total = quadratic if linear is None else quadratic + 2 * linear
        return total + (w * offset * offset).sum()

    def _sigma(self, q: torch.Tensor | None, word_q: torch.Tensor | None) -> torch.Tensor:
        """The LayerNorm scale of e = w_u + q_p: sqrt(|C e|^2 / d + eps), `[positions or 1, vocab]`, given
        word_q = w_u . q_p `[positions, vocab]`."""
        d = self.word.shape[1]
        norm_sq, mean = self.constants.norm_sq.unsqueeze(0), self.constants.mean.unsqueeze(0)
        if q is not None and word_q is not None:
            norm_sq = norm_sq + 2 * word_q + (q * q).sum(-1, keepdim=True)
            mean = mean + q.mean(-1, keepdim=True)
        return ((norm_sq - d * mean**2) / d + self.ln_eps).sqrt_()


def per_token(per_position: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """`[positions or 1, vocab]` terms of a position block for each token: `[tokens or 1, vocab]`."""
    return per_position if rows is None or len(per_position) == 1 else per_position[rows]


def vocab_constants(parts: EmbeddingParts) -> VocabConstants:
    """|w_u|^2 and the mean of w_u for every item."""
    word = parts.word.weight.detach()
    return VocabConstants(norm_sq=_by_row_chunks(len(word), lambda rows: (word[rows] ** 2).sum(-1)), mean=word.mean(-1))


def own_references(lm: LoadedModel, tokens: pd.DataFrame, reference: Reference) -> np.ndarray:
    """Each token's own reference vector, from a token table (token_id, position_id): `[tokens, hidden]`."""
    scorer = vocabulary_scorer(lm, reference)
    with torch.inference_mode():
        vectors = scorer.references(
            torch.tensor(tokens["token_id"].to_numpy()), torch.tensor(tokens["position_id"].to_numpy())
        )
    return vectors.cpu().numpy()


def vocabulary_scorer(lm: LoadedModel, reference: Reference) -> VocabularyScorer:
    """The scorer for `reference` (one the model has; see `check_reference`); its per-vocabulary terms are
    computed once per model."""
    check_reference(lm, reference)
    with torch.inference_mode():
        return VocabularyScorer(lm.structure.embeddings, reference, lm.cached)

"""Cosine of stage vectors against every vocabulary item's reference vector, without materialising references.

For reference `position` the vocabulary item u at position p is `w_u + q_p` (q_p: position row plus
token-type row 0); for `embedding` it is `LayerNorm(w_u + q_p)`. Both cosines follow exactly from
products with the word table `W` and per-item / per-position constants, so memory stays
`[rows, vocab]` for the scores however many positions there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch

from analysis.checks import check_choice
from analysis.encoder import EmbeddingParts, EncoderModel

Reference = Literal["raw", "position", "embedding"]
"""What a token's "original embedding" is (see REFERENCES)."""

REFERENCES: dict[Reference, str] = {
    "raw": "the token's row of the word-embedding table",
    "position": "word + position (+ token-type 0) embedding for the token's position, before LayerNorm",
    "embedding": "the embedding layer's output for the token at its position (the sum above, LayerNorm'd)",
}
assert tuple(REFERENCES) == get_args(Reference)

_ROW_CHUNK = 8192
_EPS = 1e-12


def _by_row_chunks(n_rows: int, fn) -> torch.Tensor:
    """Apply `fn` to slices of `_ROW_CHUNK` rows and concatenate, to bound temporaries to `[chunk, hidden]`."""
    return torch.cat([fn(slice(i, i + _ROW_CHUNK)) for i in range(0, n_rows, _ROW_CHUNK)])


@dataclass(frozen=True)
class VocabConstants:
    """Per-vocabulary-item constants: each `[vocab]`."""

    norm_sq: torch.Tensor  # |w_u|^2
    mean: torch.Tensor  # mean_i w_ui
    gamma_quad: torch.Tensor  # sum_i gamma_i^2 (w_ui - mean_u)^2
    gamma_beta_dot: torch.Tensor  # h . w_u with h = centred(gamma * beta)


@dataclass(frozen=True)
class PositionBlock:
    """What every score at a block of positions shares: q_p `[positions, hidden]` and, for `embedding`, the
    LayerNorm scale sigma of w_u + q_p `[positions, vocab]`."""

    q: torch.Tensor
    sigma: torch.Tensor | None


@dataclass(frozen=True)
class Weighting:
    """The weights and shift of a weighted reference norm, sum_i weights_i (r_i - shift_i)^2, with the per-item
    terms that depend on them alone (one pass over the word table: build once, reuse for every text)."""

    weights: torch.Tensor  # [hidden]
    shift: torch.Tensor  # [hidden]
    support: torch.Tensor  # [s] the dimensions with non-zero weight
    columns: torch.Tensor  # [vocab, s] the word table on the support (the table itself when that is everything)
    quadratic: torch.Tensor  # [vocab] sum_i w_i w_ui^2, or for `embedding` sum_i nu_i (w_ui - mean_u)^2
    linear: torch.Tensor | None  # [vocab] for `embedding`: z . (w_u - mean_u) with z = weights*gamma*(beta-shift)


class VocabularyScorer:
    """Scores vectors against all vocabulary references at given positions.

    `cosine(vectors [groups, positions, hidden], position_ids [positions])` → `[groups, positions, vocab]`.
    """

    def __init__(self, parts: EmbeddingParts, reference: Reference, constants: VocabConstants):
        self.reference = check_choice("reference", reference, REFERENCES)
        self.word = parts.word.weight.detach()
        self.parts = parts
        self.constants = constants
        norm = parts.norm
        self.gamma = norm.weight.detach()
        self.beta = norm.bias.detach()
        self.ln_eps = norm.eps

    def position_vectors(self, position_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """q_p = position row + token-type row 0: `[positions, hidden]`, in `dtype` (default: the table's)."""
        q = self.parts.position.weight.detach()[position_ids].to(dtype)
        if self.parts.token_type is not None:
            q = q + self.parts.token_type.weight.detach()[0].to(dtype)
        return q

    def references(
        self, token_ids: torch.Tensor, position_ids: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The explicit reference vector of each (token, position) pair: `[pairs, hidden]`, summed and normalised
        in `dtype` (default: the tables' own float32; float64 for values shown as exact)."""
        words = self.word[token_ids].to(dtype)
        if self.reference == "raw":
            return words
        summed = words + self.position_vectors(position_ids, dtype)
        if self.reference == "position":
            return summed
        return torch.nn.functional.layer_norm(
            summed, (summed.shape[-1],), self.gamma.to(summed.dtype), self.beta.to(summed.dtype), self.ln_eps
        )

    @property
    def vocab_size(self) -> int:
        return self.word.shape[0]

    def block(self, position_ids: torch.Tensor) -> PositionBlock:
        """The shared terms of a block of positions (compute once, score many vector groups against it)."""
        q = self.position_vectors(position_ids)
        return PositionBlock(q=q, sigma=self._sigma(q) if self.reference == "embedding" else None)

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Cosine of each vector with every vocabulary reference at its position: `[groups, positions, vocab]`."""
        block = self.block(position_ids)
        vector_norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(_EPS)
        scores = self.dots(vectors, block)
        return scores.div_(vector_norm).div_(self.norm_sq(block).clamp_min_(_EPS).sqrt_())

    def dots(self, vectors: torch.Tensor, block: PositionBlock) -> torch.Tensor:
        """a . r_u(p) for every vocabulary item u: vectors `[groups, positions, hidden]` → `[groups, positions, vocab]`.

        For `embedding`, r = LN(e) = gamma * C e / sigma + beta with e = w_u + q_p and C the centring projection,
        so a . r = g . e / sigma + a . beta with g = C(a * gamma).
        """
        if self.reference == "raw":
            return vectors @ self.word.T
        q = block.q
        if self.reference == "position":
            return (vectors @ self.word.T).add_((vectors * q).sum(-1, keepdim=True))
        g = vectors * self.gamma
        g = g - g.mean(-1, keepdim=True)
        scores = (g @ self.word.T).add_((g * q).sum(-1, keepdim=True))
        return scores.div_(block.sigma).add_((vectors * self.beta).sum(-1, keepdim=True))

    def weighting(self, weights: torch.Tensor, shift: torch.Tensor | None = None) -> Weighting:
        """The `Weighting` for `weights` `[hidden]` and `shift` `[hidden]` (default zero)."""
        weights = weights.to(self.word.dtype)
        shift = torch.zeros_like(weights) if shift is None else shift.to(self.word.dtype)
        support = torch.nonzero(weights).squeeze(-1)
        words = self.word if len(support) == self.word.shape[1] else self.word[:, support]
        if self.reference != "embedding":
            w = weights[support]
            quadratic = _by_row_chunks(len(words), lambda rows: words[rows] ** 2 @ w)
            return Weighting(weights, shift, support, words, quadratic, None)
        nu = (weights * self.gamma * self.gamma)[support]
        z = (weights * self.gamma * (self.beta - shift))[support]
        mean = self.constants.mean.unsqueeze(-1)  # the mean over all dimensions, not the support
        quadratic = _by_row_chunks(len(words), lambda rows: (words[rows] - mean[rows]) ** 2 @ nu)
        return Weighting(weights, shift, support, words, quadratic, words @ z - self.constants.mean * z.sum())

    def norm_sq(self, block: PositionBlock, weighting: Weighting | None = None) -> torch.Tensor:
        """sum_i weights_i (r_u(p)_i - shift_i)^2 for every vocabulary item: `[positions, vocab]`; without a
        weighting, |r_u(p)|^2. Products with the word table run over the weighting's support only, so a few
        dimensions cost a few columns.
        """
        q = block.q
        if weighting is None:
            if self.reference == "position":  # the common case
                return self._sum_norm_sq(q)
            if self.reference == "raw":
                return self.constants.norm_sq.repeat(len(q), 1)
            weighting = self._plain
        if self.reference == "embedding":
            return self._embedding_norm_sq(block, weighting)
        support, w = weighting.support, weighting.weights[weighting.support]
        m = weighting.shift[support]
        base = q[:, support] - m if self.reference == "position" else -m.expand(len(q), -1)
        cross = (weighting.columns @ (w * base).T).T
        return weighting.quadratic + 2 * cross + (w * base * base).sum(-1, keepdim=True)

    @property
    def _plain(self) -> Weighting:
        """Unit weights, no shift: |r|^2, from the constants every scorer has."""
        hidden = self.word.shape[1]
        ones, zeros = torch.ones(hidden, dtype=self.word.dtype), torch.zeros(hidden, dtype=self.word.dtype)
        every = torch.arange(hidden)
        if self.reference != "embedding":
            return Weighting(ones, zeros, every, self.word, self.constants.norm_sq, None)
        return Weighting(ones, zeros, every, self.word, self.constants.gamma_quad, self.constants.gamma_beta_dot)

    def _sum_norm_sq(self, q: torch.Tensor) -> torch.Tensor:
        """|w_u + q_p|^2 for every vocabulary item: `[positions, vocab]`."""
        return self.constants.norm_sq + 2 * (self.word @ q.T).T + (q * q).sum(-1, keepdim=True)

    def _sigma(self, q: torch.Tensor) -> torch.Tensor:
        """The LayerNorm scale of e = w_u + q_p: sqrt(|C e|^2 / hidden + eps), `[positions, vocab]`."""
        hidden = q.shape[-1]
        centred_sq = self._sum_norm_sq(q) - hidden * (self.constants.mean + q.mean(-1, keepdim=True)) ** 2
        return (centred_sq / hidden + self.ln_eps).sqrt_()

    def _embedding_norm_sq(self, block: PositionBlock, weighting: Weighting) -> torch.Tensor:
        """sum_i weights_i (LN(e)_i - shift_i)^2 with LN(e) = gamma * C e / sigma + beta, e = w_u + q_p:

        = sum_i nu_i (C e)_i^2 / sigma^2 + 2 sum_i z_i (C e)_i / sigma + sum_i weights_i (beta_i - shift_i)^2,
        nu = weights * gamma^2, z = weights * gamma * (beta - shift); (C e)_i = (w_ui - mean_u) + (C q_p)_i.
        """
        q, sigma = block.q, block.sigma
        weights, shift, support = weighting.weights, weighting.shift, weighting.support
        nu = (weights * self.gamma * self.gamma)[support]
        z = (weights * self.gamma * (self.beta - shift))[support]
        q_centred = (q - q.mean(-1, keepdim=True))[:, support]
        nu_q = nu * q_centred  # [positions, support]
        cross = (weighting.columns @ nu_q.T).T - self.constants.mean * nu_q.sum(-1, keepdim=True)
        quadratic = weighting.quadratic + 2 * cross + (nu_q * q_centred).sum(-1, keepdim=True)
        linear = weighting.linear + (q_centred @ z).unsqueeze(-1)
        constant = (weights * (self.beta - shift) ** 2).sum()
        return quadratic / sigma**2 + 2 * linear / sigma + constant


def vocab_constants(parts: EmbeddingParts) -> VocabConstants:
    word = parts.word.weight.detach()
    gamma = parts.norm.weight.detach()
    beta = parts.norm.bias.detach()
    h = gamma * beta
    h = h - h.mean()
    mean = word.mean(-1)
    return VocabConstants(
        norm_sq=_by_row_chunks(len(word), lambda rows: (word[rows] ** 2).sum(-1)),
        mean=mean,
        gamma_quad=_by_row_chunks(
            len(word), lambda rows: ((word[rows] - word[rows].mean(-1, keepdim=True)) ** 2) @ (gamma * gamma)
        ),
        gamma_beta_dot=word @ h,
    )


def own_references(encoder: EncoderModel, tokens: pd.DataFrame, reference: Reference) -> np.ndarray:
    """Each token's own reference vector, from a token table (token_id, position_id): `[tokens, hidden]`."""
    scorer = vocabulary_scorer(encoder, reference)
    with torch.inference_mode():
        vectors = scorer.references(
            torch.tensor(tokens["token_id"].to_numpy()), torch.tensor(tokens["position_id"].to_numpy())
        )
    return vectors.numpy()


def vocabulary_scorer(encoder: EncoderModel, reference: Reference) -> VocabularyScorer:
    """The scorer for `reference`, with its per-vocabulary constants computed once per model."""
    parts = encoder.structure.embeddings
    with torch.inference_mode():
        constants = encoder.cached("vocab_constants", lambda: vocab_constants(parts))
    return VocabularyScorer(parts, reference, constants)

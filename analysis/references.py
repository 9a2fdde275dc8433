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


def _rowwise(table: torch.Tensor, fn) -> torch.Tensor:
    """Apply `fn` to row chunks of `table` and concatenate, to bound temporaries to `[chunk, hidden]`."""
    return torch.cat([fn(table[i : i + _ROW_CHUNK]) for i in range(0, table.shape[0], _ROW_CHUNK)])


@dataclass(frozen=True)
class VocabConstants:
    """Per-vocabulary-item constants: each `[vocab]`."""

    norm_sq: torch.Tensor  # |w_u|^2
    mean: torch.Tensor  # mean_i w_ui
    gamma_quad: torch.Tensor  # sum_i gamma_i^2 (w_ui - mean_u)^2
    gamma_beta_dot: torch.Tensor  # h . w_u with h = centred(gamma * beta)


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

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Cosine of each vector with every vocabulary reference at its position: `[groups, positions, vocab]`."""
        vector_norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(_EPS)
        if self.reference == "raw":
            scores = vectors @ self.word.T
            return scores.div_(vector_norm).div_(self.constants.norm_sq.sqrt().clamp_min(_EPS))
        q = self.position_vectors(position_ids)
        if self.reference == "position":
            return self._position_cosine(vectors, vector_norm, q)
        return self._embedding_cosine(vectors, vector_norm, q)

    def _sum_norm_sq(self, q: torch.Tensor, word_dot_q: torch.Tensor) -> torch.Tensor:
        """|w_u + q_p|^2: `[positions, vocab]`."""
        return self.constants.norm_sq + 2 * word_dot_q + (q * q).sum(-1, keepdim=True)

    def _position_cosine(self, vectors: torch.Tensor, vector_norm: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        word_dot_q = (self.word @ q.T).T
        reference_norm = self._sum_norm_sq(q, word_dot_q).clamp_min(_EPS).sqrt_()
        scores = vectors @ self.word.T
        scores.add_((vectors * q).sum(-1, keepdim=True))
        return scores.div_(vector_norm).div_(reference_norm)

    def _embedding_cosine(self, vectors: torch.Tensor, vector_norm: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """cos(v, LN(e)) with e = w_u + q_p, LN(e) = gamma * (e - mean(e)) / sigma + beta.

        v . LN(e) = g . e / sigma + v . beta with g = centred(v * gamma);
        sigma^2 = |centred(e)|^2 / d + eps; |LN(e)|^2 = e'Me / sigma^2 + 2 h . e / sigma + |beta|^2
        with M = C diag(gamma^2) C and h = C(gamma * beta), C the centring projection.
        """
        hidden = q.shape[-1]
        c = self.constants
        gamma_sq = self.gamma * self.gamma
        q_mean = q.mean(-1, keepdim=True)
        m_q = gamma_sq * (q - q_mean)
        m_q = m_q - m_q.mean(-1, keepdim=True)
        both = (self.word @ torch.cat([q, m_q]).T).T
        word_dot_q, word_dot_mq = both[: len(q)], both[len(q) :]
        centred_sq = self._sum_norm_sq(q, word_dot_q) - hidden * (c.mean + q_mean) ** 2
        sigma = (centred_sq / hidden + self.ln_eps).sqrt_()
        h = self.gamma * self.beta
        h = h - h.mean()
        quad = c.gamma_quad + 2 * word_dot_mq + (gamma_sq * (q - q_mean) ** 2).sum(-1, keepdim=True)
        linear = c.gamma_beta_dot + (q @ h).unsqueeze(-1)
        reference_norm = (quad / sigma**2 + 2 * linear / sigma + (self.beta * self.beta).sum()).clamp_min(_EPS).sqrt_()

        g = vectors * self.gamma
        g = g - g.mean(-1, keepdim=True)
        scores = g @ self.word.T
        scores.add_((g * q).sum(-1, keepdim=True))
        scores.div_(sigma)
        scores.add_((vectors * self.beta).sum(-1, keepdim=True))
        return scores.div_(vector_norm).div_(reference_norm)


def vocab_constants(parts: EmbeddingParts) -> VocabConstants:
    word = parts.word.weight.detach()
    gamma = parts.norm.weight.detach()
    beta = parts.norm.bias.detach()
    h = gamma * beta
    h = h - h.mean()
    mean = word.mean(-1)
    return VocabConstants(
        norm_sq=_rowwise(word, lambda rows: (rows * rows).sum(-1)),
        mean=mean,
        gamma_quad=_rowwise(word, lambda rows: ((rows - rows.mean(-1, keepdim=True)) ** 2) @ (gamma * gamma)),
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

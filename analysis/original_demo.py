"""The original attention-encodings demo's computation, errors included, for comparison only.

For block l with X_l = hidden_states[l] (X_0 the embedding output), A_l,h the model's own attention weights,
and W_V = value.weight, W_O = the attention output dense.weight exactly as stored ([out, in]), no biases:

    V = X_l W_V;  Z_h = A_l,h V[:, h d_h : (h+1) d_h];  Z = concat_h Z_h;  u_l = X_l + Z W_O

Its references are the raw word rows w_u, or with `positional=True` w_u + P[offset + 0] for every token,
whatever its position (no token-type row, no LayerNorm). Ranks are 1-based here (the demo plotted 0-based).
Nothing else in Token Trails uses this: it is the demo's numbers, to stand beside the exact ones.
"""

from __future__ import annotations

import torch

from analysis.capture import Tap, forward_pass, layer_taps
from analysis.encoder import EncoderModel
from analysis.metrics import score_tokens
from analysis.references import vocabulary_scorer
from analysis.trace import AnalysisResult, assemble_result

DEMO_DEFINITION = (
    "the original demo's 'attention + residual' vector: X W_V and Z W_O with the stored [out, in] matrices "
    "untransposed, no biases; references are raw word rows (positional: plus the position-0 row for every token)"
)


class DemoScorer:
    """Cosines against w_u + shift for every vocabulary item u, one shift for every position (the demo's)."""

    def __init__(self, word: torch.Tensor, word_norm_sq: torch.Tensor, shift: torch.Tensor):
        """`word_norm_sq` `[vocab]`: |w_u|^2, the model's cached vocabulary constant."""
        self.word = word
        self.shift = shift
        self.reference_norm = (word_norm_sq + 2 * (word @ shift) + shift @ shift).clamp_min(1e-24).sqrt()

    @property
    def vocab_size(self) -> int:
        return self.word.shape[0]

    def references(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.word[token_ids] + self.shift

    def cosine(self, vectors: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """`[groups, positions, hidden]` → `[groups, positions, vocab]`; `position_ids` are ignored, as the demo did."""
        scores = (vectors @ self.word.T).add_((vectors @ self.shift).unsqueeze(-1))
        vector_norm = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True).clamp_min(1e-12)
        return scores.div_(vector_norm).div_(self.reference_norm)


def demo_unavailable(encoder: EncoderModel) -> str | None:
    """Why the demo's computation is not defined for this model, or None: it needs a post-LayerNorm encoder with
    hidden-size embeddings and square value and attention-output matrices, as roberta-base has."""
    structure = encoder.structure
    hidden = encoder.hidden_size
    square = all(
        parts.value is not None
        and tuple(parts.value.weight.shape) == (hidden, hidden)
        and isinstance(parts.attention_out, torch.nn.Linear)
        and tuple(parts.attention_out.weight.shape) == (hidden, hidden)
        for parts in structure.layers
    )
    if structure.kind != "post_ln" or structure.embeddings.projection is not None or not square:
        return (
            f"the original demo's computation is defined for post-LayerNorm encoders with hidden-size embeddings "
            f"and square value and output matrices (the RoBERTa family); {encoder.name} is a {structure.label}"
        )
    return None


def demo_vectors(encoder: EncoderModel, text: str):
    """The demo's u_l for every layer: `(Tokens, [layers, tokens, hidden])`, from the model's own X_l and A_l,h."""
    why = demo_unavailable(encoder)
    if why is not None:
        raise ValueError(why[0].upper() + why[1:] + ".")
    layers = range(encoder.num_layers)
    taps = {
        **layer_taps(encoder, lambda p: Tap(p.block, "input"), layers, "x"),
        **layer_taps(encoder, lambda p: Tap(p.attention, "output", item=1), layers, "a"),
    }
    run = forward_pass(encoder, text, taps)
    heads = encoder.num_heads
    vectors = []
    with torch.inference_mode():
        for index, parts in enumerate(encoder.structure.layers):
            x = run.taps[f"x{index}"]  # [tokens, hidden]
            attention = run.taps[f"a{index}"]  # [heads, tokens, tokens]
            values = x @ parts.value.weight  # the stored matrix, not its transpose; no bias
            per_head = values.view(len(x), heads, -1).transpose(0, 1)  # [heads, tokens, head_dim]
            mixed = (attention @ per_head).transpose(0, 1).reshape(len(x), -1)  # concat_h Z_h
            vectors.append(x + mixed @ parts.attention_out.weight)  # stored matrix again, no bias
    return run.tokens, torch.stack(vectors)


def original_demo(encoder: EncoderModel, text: str, *, positional: bool = False) -> AnalysisResult:
    """Every token's vector, cosine and rank at every layer as the seed's demo computed them (see module doc), in
    the tidy columns of `analyze` with stage "original_demo". For comparison only."""
    embeddings = encoder.structure.embeddings
    if positional and embeddings.position is None:
        raise ValueError(f"{encoder.name} has no absolute position table for the demo's positional references.")
    tokens, vectors = demo_vectors(encoder, text)
    word = embeddings.word.weight.detach()
    shift = embeddings.position.weight.detach()[embeddings.position_offset] if positional else torch.zeros_like(word[0])
    scorer = DemoScorer(word, vocabulary_scorer(encoder, "raw").constants.norm_sq, shift)
    token_ids = torch.tensor(tokens.ids, device=vectors.device)
    position_ids = torch.tensor(tokens.position_ids, device=vectors.device)
    top_k, overlap_n = 15, 100  # analyze's defaults
    with torch.inference_mode():
        own_reference = scorer.references(token_ids)
        groups = torch.cat([vectors, own_reference.unsqueeze(0)])
        scores = score_tokens(scorer, groups, token_ids, position_ids, max(top_k, overlap_n))
        exact_reference = word[token_ids].cpu().double() + shift.cpu().double()  # float64 on the CPU
        cosine = torch.nn.functional.cosine_similarity(vectors.cpu().double(), exact_reference, dim=-1)
    return assemble_result(
        encoder,
        text,
        tokens,
        vectors,
        scores,
        cosine,
        own_reference,
        stage="original_demo",
        reference="position" if positional else "raw",
        geometry="cosine",
        rogue_k=0,
        top_k=top_k,
        overlap_n=overlap_n,
        provenance={
            "what": "the original demo's computation, for comparison only: " + DEMO_DEFINITION,
            "positional": positional,
            "reference": "word row + position row offset+0 for every token" if positional else "raw word row",
        },
    )

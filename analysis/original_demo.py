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
from analysis.geometry import PLAIN, GeometryMap, own_cosine
from analysis.metrics import map_scorer, score_tokens
from analysis.references import vocabulary_scorer
from analysis.trace import AnalysisResult, assemble_result

DEMO_DEFINITION = (
    "the original demo's 'attention + residual' vector: X W_V and Z W_O with the stored [out, in] matrices "
    "untransposed, no biases; references are raw word rows (positional: plus the position-0 row for every token)"
)


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


def demo_taps(encoder: EncoderModel) -> dict[str, Tap]:
    """The readings the demo's vectors need: every block's input and attention weights."""
    why = demo_unavailable(encoder)
    if why is not None:
        raise ValueError(why[0].upper() + why[1:] + ".")
    layers = range(encoder.num_layers)
    return {
        **layer_taps(encoder, lambda p: Tap(p.block, "input"), layers, "x"),
        **layer_taps(encoder, lambda p: Tap(p.attention, "output", item=1), layers, "a"),
    }


def read_demo_vectors(encoder: EncoderModel, readings: dict[str, torch.Tensor]) -> torch.Tensor:
    """The demo's u_l for every layer from readings taken with `demo_taps`, one text `[layers, tokens, hidden]` or
    a padded batch `[layers, batch, tokens, hidden]` (masked keys carry no attention, so padding adds nothing)."""
    heads = encoder.num_heads
    vectors = []
    with torch.inference_mode():
        for index, parts in enumerate(encoder.structure.layers):
            x = readings[f"x{index}"]  # [..., tokens, hidden]
            attention = readings[f"a{index}"]  # [..., heads, tokens, tokens]
            values = x @ parts.value.weight  # the stored matrix, not its transpose; no bias
            per_head = values.unflatten(-1, (heads, -1)).transpose(-3, -2)  # [..., heads, tokens, head_dim]
            mixed = (attention @ per_head).transpose(-3, -2).flatten(-2)  # concat_h Z_h
            vectors.append(x + mixed @ parts.attention_out.weight)  # stored matrix again, no bias
    return torch.stack(vectors)


def demo_map(encoder: EncoderModel, positional: bool) -> GeometryMap:
    """The demo's references as a map of the raw word rows: w_u, or w_u + P[offset + 0] for every token, which
    is g(w_u) = w_u - m with m = -P[offset + 0]."""
    if not positional:
        return PLAIN
    embeddings = encoder.structure.embeddings
    if embeddings.position is None:
        raise ValueError(f"{encoder.name} has no absolute position table for the demo's positional references.")
    position_zero = embeddings.position.weight.detach()[embeddings.position_offset].cpu().double().numpy()
    return GeometryMap("original_demo", "original_demo/positional", reference_shift=-position_zero)


def original_demo(encoder: EncoderModel, text: str, *, positional: bool = False) -> AnalysisResult:
    """Every token's vector, cosine and rank at every layer as the seed's demo computed them (see module doc), in
    the tidy columns of `analyze` with stage "original_demo". For comparison only."""
    run = forward_pass(encoder, text, demo_taps(encoder))
    tokens, vectors = run.tokens, read_demo_vectors(encoder, run.taps)
    scorer = vocabulary_scorer(encoder, "raw")
    references = demo_map(encoder, positional)
    token_ids = torch.tensor(tokens.ids, device=vectors.device)
    position_ids = torch.tensor(tokens.position_ids, device=vectors.device)
    top_k, overlap_n = 15, 100  # analyze's defaults
    with torch.inference_mode():
        own_reference = scorer.references(token_ids, position_ids)  # the raw word rows
        if references.reference_shift is not None:
            own_reference = own_reference - torch.from_numpy(references.reference_shift).to(own_reference)
        groups = torch.cat([vectors, own_reference.unsqueeze(0)])
        scorer_of_map = map_scorer(encoder, scorer, references)
        scores = score_tokens(scorer, scorer_of_map, groups, token_ids, position_ids, max(top_k, overlap_n))
        cosine = own_cosine(references, vectors, scorer.references(token_ids, position_ids, torch.float64))
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

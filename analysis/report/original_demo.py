"""The original attention-encodings demo's computation, errors included, for comparison only.

For block l with X_l = hidden_states[l] (X_0 the embedding output), A_l,h the model's own attention weights,
and W_V = value.weight, W_O = the attention output dense.weight exactly as stored ([out, in]), no biases:

    V = X_l W_V;  Z_h = A_l,h V[:, h d_h : (h+1) d_h];  Z = concat_h Z_h;  u_l = X_l + Z W_O

Its references are the raw word rows w_u, or with `positional=True` w_u + P[offset + 0] for every token,
whatever its position (no token-type row, no LayerNorm). Ranks are 1-based here (the demo plotted 0-based).
Nothing else in Token Trails uses this: it is the demo's numbers, to stand beside the exact ones.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from analysis.capture.demo import DEMO_POINTS, check_demo, demo_vectors
from analysis.capture.trace import Trace, traced
from analysis.model.derived import MapSource
from analysis.model.loaded import LoadedModel
from analysis.report.result import AnalysisResult, assemble_result
from analysis.scoring.geometry import PLAIN, GeometryMap, own_cosine
from analysis.scoring.ranks import map_scorer, score_tokens
from analysis.scoring.references import vocabulary_scorer
from analysis.settings import DEFAULTS

DEMO_DEFINITION = (
    "the original demo's 'attention + residual' vector: X W_V and Z W_O with the stored [out, in] matrices "
    "untransposed, no biases; references are raw word rows (positional: plus the position-0 row for every token)"
)


def demo_map(lm: LoadedModel, positional: bool) -> GeometryMap:
    """The demo's references as a map of the raw word rows: w_u, or w_u + P[offset + 0] for every token, which
    is g(w_u) = w_u - m with m = -P[offset + 0]."""
    if not positional:
        return PLAIN
    embeddings = lm.structure.embeddings
    if embeddings.position is None:
        raise ValueError(f"{lm.name} has no absolute position table for the demo's positional references.")
    position_zero = embeddings.position.weight.detach()[embeddings.position_offset].cpu().double().numpy()
    source = MapSource("original_demo", reference="position")
    return GeometryMap(source, reference_shift=-position_zero)


def original_demo(lm: LoadedModel, text: str | Trace, *, positional: bool = False) -> AnalysisResult:
    """Every token's vector, cosine and rank at every layer as the seed's demo computed them (see module doc), in
    the tidy columns of `analyze` with method "original_demo" (its settings: the defaults, at the stage the demo
    means to read, with its references). `text`: a text, or a trace of it holding `DEMO_POINTS`. For comparison
    only."""
    check_demo(lm)
    run = traced(lm, text, DEMO_POINTS)
    text, tokens = run.texts[0], run.tokens[0]
    vectors = demo_vectors(lm, run)[:, 0, : len(tokens)]
    scorer = vocabulary_scorer(lm, "raw")
    references = demo_map(lm, positional)
    token_ids = torch.tensor(tokens.ids, device=vectors.device)
    position_ids = torch.tensor(tokens.position_ids, device=vectors.device)
    settings = DEFAULTS.resolve(lm)
    top_k, overlap_n = settings.top_k, settings.overlap_n
    with torch.inference_mode():
        own_reference = scorer.references(token_ids, position_ids)  # the raw word rows
        if references.reference_shift is not None:
            own_reference = own_reference - torch.from_numpy(references.reference_shift).to(own_reference)
        groups = torch.cat([vectors, own_reference.unsqueeze(0)])
        requests = [(groups, map_scorer(lm, scorer, references))]
        (scores,) = score_tokens(scorer, requests, token_ids, position_ids, max(top_k, overlap_n))
        cosine = own_cosine(references, vectors, scorer.references(token_ids, position_ids, torch.float64))
    settings = replace(settings, reference="position" if positional else "raw")
    record = {
        "what": "the original demo's computation, for comparison only: " + DEMO_DEFINITION,
        "positional": positional,
        "reference": "word row + position row offset+0 for every token" if positional else "raw word row",
    }
    return assemble_result(
        lm, text, tokens, vectors, scores, cosine, own_reference, settings, "original_demo", provenance=record
    )

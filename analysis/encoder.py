"""Find the parts of a post-LayerNorm encoder by its structure, and wrap model + tokenizer for analysis."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

T = TypeVar("T")


class UnsupportedModelError(ValueError):
    """The model's architecture is not a post-LayerNorm BERT-family encoder that this tool can read."""


@dataclass(frozen=True)
class EmbeddingParts:
    """The embedding layer: word, position and (optional) token-type tables and the embedding LayerNorm."""

    word: nn.Embedding
    position: nn.Embedding
    token_type: nn.Embedding | None
    norm: nn.LayerNorm
    position_offset: int


@dataclass(frozen=True)
class LayerParts:
    """One encoder block: the self-attention, its output projection and LayerNorm, and the block's last LayerNorm."""

    self_attention: nn.Module
    value: nn.Linear
    attention_dense: nn.Linear
    attention_norm: nn.LayerNorm
    output_norm: nn.LayerNorm


@dataclass(frozen=True)
class EncoderStructure:
    embeddings: EmbeddingParts
    layers: tuple[LayerParts, ...]
    num_heads: int


def _architecture(hf_model: nn.Module) -> str:
    architectures = getattr(getattr(hf_model, "config", None), "architectures", None)
    return architectures[0] if architectures else type(hf_model).__name__


def _unsupported(hf_model: nn.Module, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"The architecture {_architecture(hf_model)} is not supported: {why}. "
        "Token Trails reads post-LayerNorm BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA-style "
        "encoders with hidden-size embeddings); pick one of those."
    )


def _child(module: nn.Module, name: str, kind: type[nn.Module]) -> nn.Module | None:
    found = getattr(module, name, None)
    return found if isinstance(found, kind) else None


def _is_self_attention(module: nn.Module) -> bool:
    return all(_child(module, name, nn.Linear) is not None for name in ("query", "key", "value"))


def _is_projection_block(module: nn.Module) -> bool:
    """A `dense` projection followed by a LayerNorm over `dense(x) + residual` (BertSelfOutput, BertOutput)."""
    return _child(module, "dense", nn.Linear) is not None and _child(module, "LayerNorm", nn.LayerNorm) is not None


def _find_embeddings(hf_model: nn.Module, hidden_size: int) -> EmbeddingParts:
    word = hf_model.get_input_embeddings()
    owner = next((m for m in hf_model.modules() if any(c is word for c in m.children())), None)
    if owner is None or not isinstance(word, nn.Embedding):
        raise _unsupported(hf_model, "no word-embedding table was found")
    position = _child(owner, "position_embeddings", nn.Embedding)
    norm = _child(owner, "LayerNorm", nn.LayerNorm)
    if position is None or norm is None:
        raise _unsupported(hf_model, "its embeddings have no absolute position table and LayerNorm")
    if word.embedding_dim != hidden_size:
        raise _unsupported(hf_model, "its word embeddings are not the size of its hidden states")
    padding_idx = getattr(owner, "padding_idx", None)
    offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
    return EmbeddingParts(
        word=word,
        position=position,
        token_type=_child(owner, "token_type_embeddings", nn.Embedding),
        norm=norm,
        position_offset=offset,
    )


def _find_layer(hf_model: nn.Module, block: nn.Module) -> LayerParts:
    attention = next((m for m in block.modules() if _is_self_attention(m)), None)
    projections = [m for m in block.modules() if _is_projection_block(m)]
    if attention is None or len(projections) != 2:
        raise _unsupported(hf_model, "its blocks are not self-attention + LayerNorm, feed-forward + LayerNorm")
    attention_output, block_output = projections
    return LayerParts(
        self_attention=attention,
        value=attention.value,
        attention_dense=attention_output.dense,
        attention_norm=attention_output.LayerNorm,
        output_norm=block_output.LayerNorm,
    )


def find_structure(hf_model: PreTrainedModel) -> EncoderStructure:
    """Locate embeddings and encoder blocks by shape and role, not by class name."""
    config = hf_model.config
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        raise _unsupported(hf_model, "it is a decoder, not an encoder")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise _unsupported(hf_model, "it uses relative position embeddings")
    num_layers = config.num_hidden_layers
    blocks = next(
        (
            m
            for m in hf_model.modules()
            if isinstance(m, nn.ModuleList) and len(m) == num_layers and any(_is_self_attention(x) for x in m.modules())
        ),
        None,
    )
    if blocks is None:
        raise _unsupported(hf_model, f"no list of {num_layers} self-attention blocks was found")
    return EncoderStructure(
        embeddings=_find_embeddings(hf_model, config.hidden_size),
        layers=tuple(_find_layer(hf_model, block) for block in blocks),
        num_heads=config.num_attention_heads,
    )


@dataclass(frozen=True)
class ModelInfo:
    """The sizes a person needs to read the plots; labels for display are applied where it is drawn."""

    name: str
    architecture: str
    layers: int
    hidden_size: int
    heads: int
    vocab_size: int
    max_tokens: int


@dataclass
class EncoderModel:
    """A loaded encoder ready for analysis: the Hugging Face model, its tokenizer and its located parts.
    One instance may be shared by many threads.

    `lock` serialises tokenisation + forward pass: the fast tokenizer is not re-entrant and hooks are
    registered per call on the shared modules.
    """

    name: str
    hf_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    structure: EncoderStructure
    revision: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _key_locks: dict = field(default_factory=dict, repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.structure.layers)

    @property
    def hidden_size(self) -> int:
        return self.structure.embeddings.word.embedding_dim

    @property
    def num_heads(self) -> int:
        return self.structure.num_heads

    @property
    def vocab_size(self) -> int:
        return self.structure.embeddings.word.num_embeddings

    @property
    def max_tokens(self) -> int:
        """Longest input, special tokens included, that the position table and tokenizer allow."""
        emb = self.structure.embeddings
        by_positions = emb.position.num_embeddings - emb.position_offset
        by_tokenizer = self.tokenizer.model_max_length
        return min(by_positions, by_tokenizer) if isinstance(by_tokenizer, int) else by_positions

    @property
    def architecture(self) -> str:
        return _architecture(self.hf_model)

    @property
    def parameter_bytes(self) -> int:
        """Memory held by the model's parameters."""
        return sum(p.numel() * p.element_size() for p in self.hf_model.parameters())

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            architecture=self.architecture,
            layers=self.num_layers,
            hidden_size=self.hidden_size,
            heads=self.num_heads,
            vocab_size=self.vocab_size,
            max_tokens=self.max_tokens,
        )

    def cached(self, key: str, build: Callable[[], T]) -> T:
        """Per-model memo for derived constants (vocabulary norms, corpus statistics, …); each built once.

        Thread-safe with one lock per key, so a slow build neither blocks other keys nor deadlocks when it
        asks for another cached value itself."""
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._cache_lock:
                if key in self._cache:
                    return self._cache[key]
            value = build()
            with self._cache_lock:
                self._cache[key] = value
            return value


def wrap_model(
    hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, revision: str | None = None
) -> EncoderModel:
    """Wrap an already constructed model (eval mode, eager attention, float32) for analysis."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{name}: a fast (Rust) tokenizer is needed for character offsets.")
    structure = find_structure(hf_model)
    hf_model.set_attn_implementation("eager")
    hf_model.eval()
    hf_model.to(torch.float32)
    return EncoderModel(name=name, hf_model=hf_model, tokenizer=tokenizer, structure=structure, revision=revision)

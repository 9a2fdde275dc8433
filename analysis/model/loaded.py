"""A loaded model and tokenizer wrapped for analysis, with its located parts (`analysis.architectures`)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analysis.model.architectures import (
    BlockKind,
    ModelStructure,
    UnsupportedModelError,
    architecture,
    find_structure,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """The sizes a person needs to read the plots; labels for display are applied where it is drawn."""

    name: str
    architecture: str
    family: str  # a readable family name: "GPT-2 (pre-LayerNorm decoder, learned positions)"
    block: BlockKind
    causal: bool  # a decoder: each token sees only itself and the tokens before it
    layers: int
    hidden_size: int
    heads: int
    vocab_size: int
    max_tokens: int
    parameters: int


@dataclass
class LoadedModel:
    """A loaded model (encoder or decoder) ready for analysis: the Hugging Face model, its tokenizer and its
    located parts. One instance may be shared by many threads.

    `lock` serialises tokenisation + forward pass: the fast tokenizer is not re-entrant and hooks are
    registered per call on the shared modules.
    """

    name: str
    hf_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    structure: ModelStructure
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
        return self.hf_model.config.hidden_size

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
        if emb.position is not None:
            by_positions = emb.position.num_embeddings - emb.position_offset
        else:  # rotary or relative positions: the length the model was built for
            by_positions = self.hf_model.config.max_position_embeddings
        by_tokenizer = self.tokenizer.model_max_length
        return min(by_positions, by_tokenizer) if isinstance(by_tokenizer, int) else by_positions

    @property
    def architecture(self) -> str:
        return architecture(self.hf_model)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (CPU, CUDA or MPS): inputs are put there."""
        return self.structure.embeddings.word.weight.device

    @property
    def forward_parameters(self) -> frozenset[str]:
        """The keyword inputs the model's forward pass names (DistilBERT takes no token types, …)."""
        return frozenset(inspect.signature(self.hf_model.forward).parameters)

    @property
    def parameter_bytes(self) -> int:
        """Memory held by the model's parameters."""
        return sum(p.numel() * p.element_size() for p in self.hf_model.parameters())

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            architecture=self.architecture,
            family=self.structure.label,
            block=self.structure.kind,
            causal=self.structure.causal,
            layers=self.num_layers,
            hidden_size=self.hidden_size,
            heads=self.num_heads,
            vocab_size=self.vocab_size,
            max_tokens=self.max_tokens,
            parameters=sum(p.numel() for p in self.hf_model.parameters()),
        )

    def move_to(self, device: torch.device) -> None:
        """Run the model on `device` from now on; derived constants are rebuilt there when next asked for."""
        if self.device == device:
            return
        with self.lock, self._cache_lock:
            self.hf_model.to(device)
            self._cache.clear()

    def has_cached(self, key: str) -> bool:
        """Whether `cached(key, …)` would return at once."""
        with self._cache_lock:
            return key in self._cache

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
) -> LoadedModel:
    """Wrap an already constructed model (eval mode, eager attention, float32) for analysis."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{name}: a fast (Rust) tokenizer is needed for character offsets.")
    structure = find_structure(hf_model)
    hf_model.set_attn_implementation("eager")
    hf_model.eval()
    hf_model.to(torch.float32)
    return LoadedModel(name=name, hf_model=hf_model, tokenizer=tokenizer, structure=structure, revision=revision)

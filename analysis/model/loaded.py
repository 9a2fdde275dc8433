"""A loaded model and tokenizer wrapped for analysis, with its located parts (`analysis.model.architectures`)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analysis.model import derived
from analysis.model.architectures import (
    BlockKind,
    ModelStructure,
    UnsupportedModelError,
    architecture,
    find_structure,
)
from analysis.model.budget import PassShape, pass_shape, text_budget
from analysis.model.unembed import find_unembed, is_head_model, no_lens_reason

T = TypeVar("T")
NO_POSITION_LIMIT = 2**20
"""The position limit of a model that names none (ALiBi): the memory limit cuts long texts far sooner."""


@dataclass(frozen=True)
class SelfCheck:
    """How far the capture was from the model's own forward pass on the load's probe (`analysis.capture.selfcheck`):
    the largest relative difference over its tokens."""

    hidden: float  # every block input and the last hidden state
    logits: float | None  # the lens at the last layer against the model's own logits; None: no lens

    def summary(self) -> str:
        """One line for a reader: how closely the capture (and the lens) agreed with the model's own pass."""
        lens = f", its logits to {self.logits:.1g}" if self.logits is not None else ""
        return f"self-check passed: agrees with the model's own forward pass to {self.hidden:.1g}{lens} (relative)"


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
    position_limit: int  # the longest input its positions and tokenizer allow; max_tokens is lower where memory is
    parameters: int

    @property
    def memory_limited(self) -> bool:
        """Whether texts are cut before the positions run out, to bound one pass's memory."""
        return self.max_tokens < self.position_limit

    @property
    def max_tokens_reason(self) -> str:
        """Why a text is cut at `max_tokens`, as a reader reads it."""
        if self.memory_limited:
            return f"what one text's pass holds within its memory budget; its positions allow {self.position_limit:,}"
        return "the length its positions allow"


@dataclass
class LoadedModel:
    """A loaded model (encoder or decoder) ready for analysis: the Hugging Face model, its tokenizer and its
    located parts. One instance may be shared by many threads.

    `unembed` maps a vector to the model's logits, `[..., hidden] -> [..., vocabulary]`
    (`analysis.model.unembed`); the lens reads every layer through it.

    `lock` serialises tokenisation + forward pass: the fast tokenizer is not re-entrant and hooks are
    registered per call on the shared modules.
    """

    name: str
    hf_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    structure: ModelStructure
    revision: str | None = None
    unembed: nn.Module | None = None  # the model's own final norm + prediction head; None: no lens
    no_lens: str | None = None  # why there is no lens, where `unembed` is None
    self_check: SelfCheck | None = None  # the load's check against the model's own forward pass
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
    def position_limit(self) -> int:
        """Longest input, special tokens included, that the position table and tokenizer allow."""
        emb = self.structure.embeddings
        if emb.position is not None:
            by_positions = emb.position.num_embeddings - emb.position_offset
        else:  # rotary or relative positions: the length the model was built for; ALiBi (BLOOM) names none
            by_positions = getattr(self.hf_model.config, "max_position_embeddings", None) or NO_POSITION_LIMIT
        by_tokenizer = self.tokenizer.model_max_length
        return min(by_positions, by_tokenizer) if isinstance(by_tokenizer, int) else by_positions

    @property
    def memory_limit(self) -> int:
        """Longest input whose pass stays within this model's text budget (`analysis.model.budget`)."""
        return self.cached(
            derived.MemoryLimit(), lambda: self.pass_shape.tokens_within(text_budget(self.parameter_bytes))
        )

    @property
    def max_tokens(self) -> int:
        """Longest input read whole, special tokens included: the position limit or the memory limit, the lower;
        a longer text is cut there (and says so)."""
        return min(self.position_limit, self.memory_limit)

    @property
    def pass_shape(self) -> PassShape:
        return pass_shape(self.hf_model.config, self.num_layers, self.num_heads)

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
        """Memory held by the model's parameters, its prediction head's included (a tied one counted once)."""
        return sum(p.numel() * p.element_size() for p in self._parameters())

    def _parameters(self) -> list[nn.Parameter]:
        modules = [self.hf_model] + ([self.unembed] if self.unembed is not None else [])
        return list({id(p): p for module in modules for p in module.parameters()}.values())

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
            position_limit=self.position_limit,
            parameters=sum(p.numel() for p in self._parameters()),
        )

    def move_to(self, device: torch.device) -> None:
        """Run the model on `device` from now on; derived constants are rebuilt there when next asked for."""
        if self.device == device:
            return
        with self.lock, self._cache_lock:
            self.hf_model.to(device)
            if self.unembed is not None:
                self.unembed.to(device)
            self._cache.clear()

    def has_cached(self, key: derived.DerivedKey) -> bool:
        """Whether `cached(key, …)` would return at once."""
        with self._cache_lock:
            return key in self._cache

    def cached(self, key: derived.DerivedKey, build: Callable[[], T]) -> T:
        """Per-model memo for derived data (vocabulary constants, corpus statistics, …; the keys are
        `analysis.model.derived`'s), each built once.

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
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    revision: str | None = None,
    *,
    no_lens: str | None = None,
) -> LoadedModel:
    """Wrap an already constructed model (eval mode, eager attention, float32) for analysis. A model with its
    prediction head (GPT2LMHeadModel, BertForMaskedLM, …) has a lens; a base model has none (`no_lens` says why,
    where the caller knows)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(f"{name}: a fast (Rust) tokenizer is needed for character offsets.")
    hf_model.set_attn_implementation("eager")
    hf_model.eval()
    hf_model.to(torch.float32)
    base = hf_model.base_model
    structure = find_structure(base)  # before the head: a structure it cannot read is the reason to give
    unembed = find_unembed(hf_model, structure.final_norm) if is_head_model(hf_model) else None
    if unembed is None and no_lens is None:
        no_lens = no_lens_reason(base.config, architecture(base))
    return LoadedModel(
        name=name,
        hf_model=base,
        tokenizer=tokenizer,
        structure=structure,
        revision=revision,
        unembed=unembed,
        no_lens=no_lens,
    )

"""Streamlit caches: a bounded model cache shared by all sessions, and per-text analysis results."""

from __future__ import annotations

import threading

import pandas as pd
import streamlit as st
from huggingface_hub import constants as hub_constants

import analysis
from analysis.corpus import corpus_sentences, corpus_spikes
from analysis.heads import HeadAttribution, HeadDecomposition, attribute_heads, decompose_heads
from analysis.loading import (
    check_model_size,
    download,
    hub_reachable,
    load_uncached,
    max_cached_models,
    model_bytes,
    needs_download,
)
from analysis.references import own_references
from dashboard.settings import settings
from dashboard.show import literal
from dashboard.state import check_model_allowed


@st.cache_resource(max_entries=max_cached_models(), show_spinner=False)
def cached_model(name: str) -> analysis.EncoderModel:
    """One loaded model per name for every session; at most TOKEN_TRAILS_MAX_MODELS (default 1) in memory."""
    return load_uncached(name)


_resident: list[str] = []  # models believed loaded in cached_model, least recently used first
_resident_lock = threading.Lock()


def loaded_model(name: str, interactive: bool = True) -> analysis.EncoderModel:
    """`cached_model(name)` for a model this deployment allows and can afford. Before a first load: refuse a
    model off the allowlist or over the size limit, download it with a progress bar (when `interactive`: not
    inside a cached function, whose elements would be replayed), and release loaded models that would push the
    total past the memory budget, so two models are never held at once when together they do not fit."""
    current = settings()
    check_model_allowed(name)
    checked_size(name, current.max_model_bytes)
    if interactive and name not in _resident:
        ensure_downloaded(name)
    with _resident_lock:
        if name in _resident:  # loaded: no need to hold other sessions while the cache answers
            _resident.remove(name)
            _resident.append(name)
        else:  # a new model loads under the lock: one load at a time keeps memory within the budget
            budget = current.memory_budget_bytes
            needed = model_bytes(name) or budget + 1
            while _resident and sum(model_bytes(n) or budget + 1 for n in _resident) + needed > budget:
                cached_model.clear(_resident.pop(0))
            encoder = cached_model(name)
            _resident.append(name)
            del _resident[: -max_cached_models()]
            return encoder
    return cached_model(name)


@st.cache_data(ttl=600, show_spinner=False)
def checked_size(name: str, max_bytes: int) -> None:
    """`check_model_size`, remembered when it passes (it reads the model's config)."""
    check_model_size(name, max_bytes)


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def cached_analysis(
    model: str, text: str, stage: str, reference: str, top_k: int, overlap_n: int
) -> analysis.AnalysisResult:
    """The analysis of one text; keyed on everything that changes it (highlighting and page do not).

    Bounded: a 512-token roberta-large result holds ~70 MB (stage vectors and neighbour table)."""
    return analysis.analyze(
        loaded_model(model, interactive=False), text, stage=stage, reference=reference, top_k=top_k, overlap_n=overlap_n
    )


def ensure_downloaded(name: str) -> None:
    """Before a first-time hub load, download the model's files with a progress bar (polled from this thread,
    since the download runs on worker threads that cannot draw)."""
    if not needs_download(name) or hub_constants.is_offline_mode() or not hub_reachable():
        return
    status: dict = {"done": 0.0, "total": 0.0}
    bar = st.progress(0.0, text=literal(f"Downloading {name} from the Hugging Face hub (first time only)…"))

    def fetch() -> None:
        try:
            download(name, lambda desc, done, total: status.update(done=done, total=total))
        except ValueError as error:
            status["error"] = error

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.25)
        if status["total"]:
            fraction = min(status["done"] / status["total"], 1.0)
            megabytes = f"{status['done'] / 1e6:,.0f} of {status['total'] / 1e6:,.0f} MB"
            bar.progress(fraction, text=literal(f"Downloading {name} (first time only): {megabytes}"))
    bar.empty()
    if "error" in status:
        raise status["error"]


@st.cache_data(ttl=600, show_spinner=False)
def hub_model_available(name: str) -> bool:
    """Whether `name` can load now: in the local Hugging Face cache, or the hub is reachable."""
    return not needs_download(name) or (not hub_constants.is_offline_mode() and hub_reachable())


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def cached_heads(model: str, text: str, layer: int, reference: str) -> tuple[HeadDecomposition, HeadAttribution]:
    """The per-head decomposition of `attn_residual` at `layer`, and each head's share of the change in cosine."""
    encoder = loaded_model(model, interactive=False)
    parts = decompose_heads(encoder, text, layer)
    return parts, attribute_heads(parts, own_references(encoder, parts.tokens, reference))


@st.cache_data(max_entries=8, show_spinner=False)
def cached_corpus(model: str, stage: str, reference: str, _on_progress=None) -> pd.DataFrame:
    """The corpus check for one model, stage and reference (minutes on large models: computed once)."""
    return corpus_spikes(
        loaded_model(model, interactive=False),
        corpus_sentences(),
        stage=stage,
        reference=reference,
        on_progress=_on_progress,
    )

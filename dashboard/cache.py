"""Streamlit caches: a bounded model cache shared by all sessions, and per-text analysis results."""

from __future__ import annotations

import streamlit as st
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

import analysis
from analysis.loading import hub_reachable, load_uncached, max_cached_models


@st.cache_resource(max_entries=max_cached_models(), show_spinner=False)
def cached_model(name: str) -> analysis.EncoderModel:
    """One loaded model per name for every session; at most TOKEN_TRAILS_MAX_MODELS (default 1) in memory."""
    return load_uncached(name)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_analysis(
    model: str, text: str, stage: str, reference: str, top_k: int, overlap_n: int
) -> analysis.AnalysisResult:
    """The analysis of one text; keyed on everything that changes it (highlighting and page do not)."""
    return analysis.analyze(
        cached_model(model), text, stage=stage, reference=reference, top_k=top_k, overlap_n=overlap_n
    )


@st.cache_data(ttl=600, show_spinner=False)
def hub_model_available(name: str) -> bool:
    """Whether `name` can load now: in the local Hugging Face cache, or the hub is reachable."""
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return True
    return not hub_constants.is_offline_mode() and hub_reachable()

"""Streamlit caches: a bounded model cache shared by all sessions, and per-text analysis results."""

from __future__ import annotations

import threading

import streamlit as st
from huggingface_hub import constants as hub_constants

import analysis
from analysis.loading import download, hub_reachable, load_uncached, max_cached_models, needs_download
from dashboard.show import literal


@st.cache_resource(max_entries=max_cached_models(), show_spinner=False)
def cached_model(name: str) -> analysis.EncoderModel:
    """One loaded model per name for every session; at most TOKEN_TRAILS_MAX_MODELS (default 1) in memory."""
    return load_uncached(name)


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def cached_analysis(
    model: str, text: str, stage: str, reference: str, top_k: int, overlap_n: int
) -> analysis.AnalysisResult:
    """The analysis of one text; keyed on everything that changes it (highlighting and page do not).

    Bounded: a 512-token roberta-large result holds ~70 MB (stage vectors and neighbour table)."""
    return analysis.analyze(
        cached_model(model), text, stage=stage, reference=reference, top_k=top_k, overlap_n=overlap_n
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

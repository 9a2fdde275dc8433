"""Streamlit caches of per-text results, and the app's access to the package's one model cache.

Analysis results are frozen records of read-only arrays and copy-on-write frames, so every session shares one
copy (`st.cache_resource`): a rerun that only changes the highlight copies nothing. Small answers (a size check,
whether a model is reachable) use `st.cache_data`."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import streamlit as st
from huggingface_hub import constants as hub_constants

import analysis
from analysis.capture.heads import HeadAttribution, HeadDecomposition, attribute_heads, decompose_heads
from analysis.capture.trace import EXTRAS, Extra, Trace, available_points, trace
from analysis.definitions import FITTED_KINDS
from analysis.devices import resolve_device
from analysis.fitted.lens import FittedLens, lens_paths, load_fitted
from analysis.model.derived import FittedFile
from analysis.model.loading import check_model_size, download, hub_reachable, needs_download
from analysis.scoring.references import own_references
from analysis.settings import AnalysisSettings
from dashboard.settings import settings
from dashboard.show import literal
from dashboard.view import View, check_model_allowed


def page_model(model: str) -> analysis.LoadedModel:
    """The model named `model`, checked and loaded in one step: refused (one ValueError saying why) when this
    deployment does not allow it or it is over the size limit; downloaded with a progress bar before a first hub
    load; loaded through the package's model cache (bounded by the settings max_models and memory_budget_gb, which
    releases models that would push the total past the budget); run on the device of the setting `device`
    (TOKEN_TRAILS_DEVICE; auto by default). Pages pass the model it returns to the cached functions below, which
    neither check nor load again."""
    current = settings()
    check_model_allowed(model)
    checked_size(model, current.max_model_bytes)
    analysis.configure_model_cache(max_models=current.max_models, memory_budget_bytes=current.memory_budget_bytes)
    if model not in analysis.resident_models():
        ensure_downloaded(model)
    lm = analysis.load_model(model, max_bytes=current.max_model_bytes)
    lm.move_to(resolve_device(current.device))
    return lm


def model_identity(lm: analysis.LoadedModel) -> tuple[str, str | None, str]:
    """What a cached result of `lm` is keyed on: its name, revision and device (not the object: a model released
    and loaded again finds its results)."""
    return lm.name, lm.revision, str(lm.device)


BY_MODEL: dict[str | type[Any], Callable[[Any], Any]] = {analysis.LoadedModel: model_identity}
"""`hash_funcs` of every cached function taking a model."""


@st.cache_data(ttl=600, show_spinner=False)
def checked_size(model: str, max_bytes: int) -> None:
    """`check_model_size`, remembered when it passes (it reads the model's config)."""
    check_model_size(model, max_bytes)


@st.cache_resource(max_entries=4, ttl=3600, show_spinner=False, hash_funcs=BY_MODEL)
def cached_trace(lm: analysis.LoadedModel, text: str, extras: tuple[Extra, ...] = ()) -> Trace:
    """The one forward pass over `text` that every analysis of it on a page reads: every stage the model has at
    every layer, plus `extras` (the deep dive's attention weights and head contexts, for its head decomposition
    and the original demo). Bounded: 512 tokens of roberta-large hold ~200 MB of stages, ~0.4 GB more with
    attention weights."""
    return trace(lm, text, available_points(lm, extras))


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False, hash_funcs=BY_MODEL)
def cached_analysis(
    lm: analysis.LoadedModel, text: str, settings: AnalysisSettings, extras: tuple[Extra, ...] = ()
) -> analysis.AnalysisResult:
    """The analysis of one text, read from its trace (`extras` says which: the deep dive's, or the plain one);
    keyed on everything that changes it (highlighting and page do not).

    Bounded: a 512-token roberta-large result holds ~70 MB (stage vectors and neighbour table)."""
    return analysis.analyze(lm, cached_trace(lm, text, extras), **asdict(settings))


def view_analysis(
    lm: analysis.LoadedModel, view: View, extras: tuple[Extra, ...] = (), **changes
) -> analysis.AnalysisResult:
    """`cached_analysis` of the view's text and settings under `lm` (the view's model, or the one a page compares),
    with settings `changes` (stage, …) where a page needs others, read from the trace with `extras` (a page asks for
    the ones its other sections read, so it runs the model once)."""
    return cached_analysis(lm, view.text, replace(view.settings, **changes), extras)


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False, hash_funcs=BY_MODEL)
def cached_lens(
    lm: analysis.LoadedModel,
    text: str,
    stage: analysis.Stage,
    target: analysis.LensTarget | None,
    top_k: int,
    extras: tuple[Extra, ...] = (),
    fitted_file: FittedFile | None = None,
) -> analysis.LensResult:
    """What each layer would predict, read from the page's trace of `text`: no other forward pass (masked mode,
    which runs its own, is a job: `jobs.masked_lens_job`), through the fitted lens `fitted_file` where given.
    Bounded: a 512-token result holds `top_k` predictions per layer and token (~15 MB for roberta-large at
    k = 15)."""
    fitted = None if fitted_file is None else cached_fitted(fitted_file)
    return analysis.lens(lm, cached_trace(lm, text, extras), stage=stage, target=target, top_k=top_k, fitted=fitted)


def view_lens(
    lm: analysis.LoadedModel,
    view: View,
    extras: tuple[Extra, ...] = (),
    *,
    stage: analysis.Stage | None = None,
    fitted_file: FittedFile | None = None,
) -> analysis.LensResult:
    """`cached_lens` of the view's text under `lm`, at the lens stage (or `stage`), with the lens target (its
    model's default where the view names none) and k, through the fitted lens `fitted_file` where given (the
    view's reading, `FittedLenses.files`), from the trace with `extras` (the page's); the text as typed, whatever
    the view's masked mode."""
    target = view.lens_target or None
    return cached_lens(lm, view.text, stage or view.lens_stage, target, view.settings.top_k, extras, fitted_file)


def fitted_path(lm: analysis.LoadedModel, stage: analysis.Stage, kind: str) -> Path:
    """Where the app keeps the `kind` lens of `lm` at `stage` (the setting fitted_folder; the stem of its
    .safetensors and .json): named by the model, a hash of its name and revision, the stage and the kind."""
    digest = hashlib.sha256(f"{lm.name}@{lm.revision}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", lm.name.strip("/"))[-60:]
    return settings().fitted_folder / f"{slug}-{digest}-{stage}-{kind}"


@dataclass(frozen=True)
class FittedLenses:
    """The lenses this app keeps (every session's) for one model at one stage: `files` by kind, as their records
    name their weights, and why each other kind is `unusable` (not fitted yet; a damaged, changed or foreign
    file). Read once per page run (`fitted_lenses`)."""

    files: dict[str, FittedFile]
    unusable: dict[str, str]


def fitted_lenses(lm: analysis.LoadedModel, stage: analysis.Stage) -> FittedLenses:
    """The lenses fitted for `lm` at `stage` that this app keeps, and why each other kind is unusable."""
    found: dict[str, FittedFile] = {}
    problems: dict[str, str] = {}
    for kind in FITTED_KINDS:
        weights, record = lens_paths(fitted_path(lm, stage, kind))
        if not (weights.is_file() and record.is_file()):
            problems[kind] = f"not fitted for {lm.name} at {stage} yet: fit it below"
            continue
        try:  # keyed by the weights its record names (a small read); their hash is checked once, on loading
            file = FittedFile(str(record), str(json.loads(record.read_text(encoding="utf-8"))["weights_sha256"]))
            cached_fitted(file).check_for(lm, stage)
        except (ValueError, OSError, KeyError, TypeError) as error:
            problems[kind] = f"its file could not be used ({error})"
            continue
        found[kind] = file
    return FittedLenses(found, problems)


@st.cache_resource(max_entries=16, show_spinner=False)
def cached_fitted(file: FittedFile) -> FittedLens:
    """The fitted lens in `file`, read once per version of its weights (every session shares it)."""
    return load_fitted(file.path, file.sha256)


@st.cache_resource(max_entries=32, show_spinner=False, hash_funcs=BY_MODEL)
def cached_capabilities(lm: analysis.LoadedModel) -> analysis.Capabilities:
    """What a model offers (the pages check every view against it)."""
    return analysis.capabilities(lm)


def ensure_downloaded(model: str) -> None:
    """Before a first-time hub load, download the model's files with a progress bar (polled from this thread,
    since the download runs on worker threads that cannot draw)."""
    if not needs_download(model) or hub_constants.is_offline_mode() or not hub_reachable():
        return
    status: dict = {"done": 0.0, "total": 0.0}
    bar = st.progress(0.0, text=literal(f"Downloading {model} from the Hugging Face hub (first time only)…"))

    def fetch() -> None:
        try:
            download(model, lambda desc, done, total: status.update(done=done, total=total))
        except ValueError as error:
            status["error"] = error

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.25)
        if status["total"]:
            fraction = min(status["done"] / status["total"], 1.0)
            megabytes = f"{status['done'] / 1e6:,.0f} of {status['total'] / 1e6:,.0f} MB"
            bar.progress(fraction, text=literal(f"Downloading {model} (first time only): {megabytes}"))
    bar.empty()
    if "error" in status:
        raise status["error"]


@st.cache_data(ttl=600, show_spinner=False)
def hub_model_available(model: str) -> bool:
    """Whether `model` can load now: in the local Hugging Face cache, or the hub is reachable."""
    return not needs_download(model) or (not hub_constants.is_offline_mode() and hub_reachable())


def view_background(lm: analysis.LoadedModel, view: View) -> analysis.Background:
    """The corpus statistics of `lm` at the view's stage and reference (ready: see `jobs.background_job`)."""
    return analysis.background(lm, view.settings.stage, view.settings.chosen_reference)


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False, hash_funcs=BY_MODEL)
def cached_heads(
    lm: analysis.LoadedModel, text: str, layer: int, reference: analysis.Reference
) -> tuple[HeadDecomposition, HeadAttribution]:
    """The per-head decomposition of `attn_residual` at `layer`, and each head's share of the change in cosine."""
    parts = decompose_heads(lm, cached_trace(lm, text, EXTRAS), layer)
    return parts, attribute_heads(parts, own_references(lm, parts.tokens, reference))


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False, hash_funcs=BY_MODEL)
def cached_original_demo(lm: analysis.LoadedModel, text: str) -> analysis.AnalysisResult:
    """The original demo's computation of one text (for comparison with the exact one)."""
    return analysis.original_demo(lm, cached_trace(lm, text, EXTRAS))

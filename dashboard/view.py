"""The view: everything that defines what the pages show, its round trip through the URL query string, and
its place in the session (`current_view`, `update_view`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import streamlit as st

import analysis
from analysis.checks import check_choice, check_text
from analysis.definitions import LENS_READINGS, LENS_STAGE, PLAIN_READING, SEED_SENTENCE, WORD_CLASSES
from analysis.model.loading import resolve_model
from analysis.settings import SEED_SETTINGS, AnalysisSettings
from dashboard.settings import settings

TOP_K_RANGE = (1, 50)
ROGUE_K_RANGE = (0, 64)
OVERLAP_N_RANGE = (1, 1000)


@dataclass(frozen=True)
class Preset:
    """A model offered in the pickers: a real hub id (or the bundled model), its family and published size."""

    name: str
    family: str
    parameters: float  # millions, as published on the model card

    def label(self, max_model_bytes: int) -> str:
        """ "gpt2 · GPT-2 decoder · 124M (hub)", marked when its float32 size passes the deployment's limit."""
        where = "bundled, offline" if self.name == analysis.BUNDLED_MODEL else "hub"
        short = self.name.removeprefix("sentence-transformers/")
        over = 4 * self.parameters * 1e6 > max_model_bytes
        return f"{short} · {self.family} · {self.parameters:,.0f}M ({where})" + (
            " · over this deployment's size limit" if over else ""
        )


MODEL_PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("roberta-base", "RoBERTa encoder", 125),
        Preset("roberta-large", "RoBERTa encoder", 355),
        Preset(analysis.BUNDLED_MODEL, "BERT encoder", 23),
        Preset("bert-base-uncased", "BERT encoder", 110),
        Preset("distilroberta-base", "RoBERTa encoder, 6 layers", 82),
        Preset("microsoft/deberta-v3-base", "DeBERTa-v3 encoder", 184),
        Preset("answerdotai/ModernBERT-base", "ModernBERT encoder", 149),
        Preset("gpt2", "GPT-2 decoder", 124),
        Preset("EleutherAI/pythia-160m", "Pythia (GPT-NeoX) decoder", 162),
        Preset("HuggingFaceTB/SmolLM2-135M", "SmolLM2 (Llama-style) decoder", 135),
    )
}


def model_labeller() -> Callable[[str], str]:
    """What a model picker shows for each model: a preset's label with its family and size (marked when over this
    deployment's size limit, read once here), any other model by its name."""
    max_model_bytes = settings().max_model_bytes

    def label(name: str) -> str:
        preset = MODEL_PRESETS.get(name)
        return preset.label(max_model_bytes) if preset else name

    return label


VIEW = "view"
"""The session-state key of the current View."""


@dataclass(frozen=True)
class View:
    """What the pages show. Token positions refer to the tokens of `text` under `model` (a model name)."""

    text: str = SEED_SENTENCE
    model: str = analysis.BUNDLED_MODEL
    settings: AnalysisSettings = SEED_SETTINGS  # a model without the seed's reference falls back (the page says so)
    highlight: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    layer: int = -1  # deep-dive layer; -1 = the opening layer (top spike layer, else where ranks change most)
    head: int = 0  # deep-dive attention head
    model_a: str = ""  # base-vs-large models; "" = the default pair for this machine
    model_b: str = ""
    lens: bool = False  # show what each layer would predict (the model's own head) instead of the vocabulary view
    lens_target: analysis.LensTarget | Literal[""] = ""  # "" = the model's default (next: decoders, own: encoders)
    masked: bool = False  # the lens with each token hidden behind the mask token in turn (encoders)
    lens_stage: analysis.Stage = LENS_STAGE  # where the lens reads: block outputs, the classic logit lens
    lens_reading: str = PLAIN_READING  # how the lens reads each layer: plain, or through a fitted lens

    def changed(self, **changes: Any) -> View:
        """This view with `changes` to its own fields or to its settings' (`stage=…`, `top_k=…`: a link, a widget
        and the pages name a setting as they name any other field)."""
        own = {name: value for name, value in changes.items() if name not in SETTING_FIELDS}
        settings = {name: value for name, value in changes.items() if name in SETTING_FIELDS}
        return replace(self, **own, settings=replace(self.settings, **settings))

    def value(self, name: str) -> object:
        """The view's field or setting called `name` (what `changed` and the link name it)."""
        return getattr(self.settings if name in SETTING_FIELDS else self, name)


SETTING_FIELDS = frozenset(field.name for field in fields(AnalysisSettings))
LINK_FIELDS = tuple(
    name for field in fields(View) for name in ((*SETTING_FIELDS,) if field.name == "settings" else (field.name,))
)
"""Every name a link carries: the view's fields, its settings' in place of `settings`."""


def check_view_text(text: object) -> str:
    """A non-blank text within this deployment's length limit."""
    text = check_text(text)
    limit = settings().max_text_chars
    if len(text) > limit:
        raise ValueError(f"The text is {len(text):,} characters long; this deployment's limit is {limit:,}.")
    return text


def check_model_allowed(name: str) -> str:
    """A well-formed model name that this deployment may load."""
    resolve_model(name)
    name = name.strip()
    allowed = settings().allowed_models
    if allowed is not None and name not in allowed:
        raise ValueError(f"this deployment serves only {', '.join(allowed)}")
    return name


def _optional_model(name: str) -> str:
    return check_model_allowed(name) if name.strip() else ""


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.strip().isdigit() or not low <= int(value) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return int(value)

    return parse


def _positions(value: str) -> tuple[int, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not all(item.isdigit() and int(item) < 10_000 for item in items):
        raise ValueError("expected token positions such as 2,7")
    return tuple(dict.fromkeys(int(item) for item in items))


def _flag(value: str) -> bool:
    if value.strip().lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return value.strip().lower() == "true"


def _lens_target(value: str) -> str:
    return check_choice("lens target", value, analysis.LENS_TARGETS) if value.strip() else ""


def _classes(value: str) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(check_choice("word class", item, WORD_CLASSES) for item in dict.fromkeys(items))


_PARSERS: dict[str, Callable[[str], object]] = {
    "text": check_view_text,
    "model": check_model_allowed,
    "stage": lambda value: check_choice("stage", value, analysis.STAGES),
    "reference": lambda value: check_choice("reference", value, analysis.REFERENCES),
    "geometry": lambda value: check_choice("geometry", value, analysis.GEOMETRIES),
    "rogue_k": _int_in(*ROGUE_K_RANGE),
    "highlight": _positions,
    "classes": _classes,
    "top_k": _int_in(*TOP_K_RANGE),
    "overlap_n": _int_in(*OVERLAP_N_RANGE),
    "layer": lambda value: -1 if value.strip() == "-1" else _int_in(0, 999)(value),
    "head": _int_in(0, 999),
    "model_a": _optional_model,
    "model_b": _optional_model,
    "lens": _flag,
    "lens_target": _lens_target,
    "masked": _flag,
    "lens_stage": lambda value: check_choice("lens stage", value, analysis.STAGES),
    "lens_reading": lambda value: check_choice("lens reading", value, LENS_READINGS),
}
assert set(_PARSERS) == set(LINK_FIELDS), "every field a link carries has its parser"


def view_from_query(params: Mapping[str, str | list[str]], defaults: View) -> tuple[View, list[str]]:
    """Read a view from query parameters; a bad or unknown value keeps its default and adds a notice."""
    values, notices = {}, []
    for name, raw in params.items():
        if name not in _PARSERS:
            notices.append(f"Ignored the unknown link parameter {name!r}.")
            continue
        value = raw[-1] if isinstance(raw, list) else raw
        try:
            values[name] = _PARSERS[name](value)
        except ValueError as error:
            notices.append(f"The link's {name} was not usable ({error}); using the default instead.")
    return defaults.changed(**values), notices


def view_to_query(view: View) -> dict[str, str]:
    """Every field as a query-string value, so a copied link reproduces the view anywhere."""
    query = {}
    for name in LINK_FIELDS:
        value = view.value(name)
        query[name] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return query


def current_view() -> View:
    """The view of this session."""
    return st.session_state[VIEW]


def update_view(**changes) -> None:
    """Change the view; a new text or model resets the highlighted positions, which no longer apply."""
    if {"text", "model"} & changes.keys():
        changes.setdefault("highlight", ())
    st.session_state[VIEW] = current_view().changed(**changes)

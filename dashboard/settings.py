"""Deployment settings, from Streamlit secrets (`.streamlit/secrets.toml`, or the Community Cloud secrets box)
or else the environment (`TOKEN_TRAILS_<NAME>`):

- deployment: "cloud" or "local"; default cloud when the app runs from /mount/src (Community Cloud's
  checkout), else local.
- allowed_models: comma-separated model ids the app may load, "*" for any; default on cloud roberta-base,
  roberta-large and the bundled model, locally any.
- max_text_chars: the longest text accepted (20000).
- max_model_gb: refuse models whose float32 size, read from their config, is larger (2.0).
- memory_budget_gb: loaded models together; past it one is released before another loads (2.5).
- max_models: how many loaded models stay in memory at once (1).
- device: where models run: auto (CUDA or MPS where torch sees one, else the CPU), cpu, cuda or mps (auto).
- fitted_folder: where the app keeps the lenses it fits, for every session and after a restart
  (~/.cache/token_trails/fitted_lenses).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitSecretNotFoundError

import analysis

CLOUD_MODELS = ("roberta-base", "roberta-large", analysis.BUNDLED_MODEL)
APP_FOLDER = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    deployment: str
    allowed_models: tuple[str, ...] | None  # None: any model
    max_text_chars: int
    max_model_bytes: int
    memory_budget_bytes: int
    max_models: int
    device: str
    fitted_folder: Path

    @property
    def max_upload_mb(self) -> int:
        """The uploader's limit in MB: room for `max_text_chars` characters in any encoding and file format."""
        return max(1, -(-8 * self.max_text_chars // 2**20))

    def allows(self, model: str) -> bool:
        return self.allowed_models is None or model.strip() in self.allowed_models


def _secrets() -> dict:
    """The secrets file's values, read once per `settings()` call; none when there is no secrets file."""
    try:
        return st.secrets.to_dict()
    except (StreamlitSecretNotFoundError, FileNotFoundError):
        return {}


def _raw(secrets: dict, name: str) -> str | None:
    value = secrets.get(name)
    if value is None:
        value = os.environ.get(f"TOKEN_TRAILS_{name.upper()}")
    if isinstance(value, list | tuple):
        value = ",".join(map(str, value))
    return None if value is None else str(value)


def _number(secrets: dict, name: str, default: float) -> float:
    value = _raw(secrets, name)
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if number > 0 else default


def settings() -> Settings:
    """The settings in force now (read on every call: secrets and environment may change between runs)."""
    secrets = _secrets()
    deployment = (_raw(secrets, "deployment") or "").lower()
    if deployment not in ("cloud", "local"):
        deployment = "cloud" if str(APP_FOLDER).startswith("/mount/src") else "local"
    listed = _raw(secrets, "allowed_models")
    allowed: tuple[str, ...] | None
    if listed is None:
        allowed = CLOUD_MODELS if deployment == "cloud" else None
    elif listed.strip() == "*":
        allowed = None
    else:
        allowed = tuple(name.strip() for name in listed.split(",") if name.strip())
    return Settings(
        deployment=deployment,
        allowed_models=allowed,
        max_text_chars=int(_number(secrets, "max_text_chars", 20_000)),
        max_model_bytes=int(_number(secrets, "max_model_gb", 2.0) * 2**30),
        memory_budget_bytes=int(_number(secrets, "memory_budget_gb", 2.5) * 2**30),
        max_models=max(1, int(_number(secrets, "max_models", 1))),
        device=(_raw(secrets, "device") or "auto").strip().lower(),
        fitted_folder=Path(_raw(secrets, "fitted_folder") or "~/.cache/token_trails/fitted_lenses").expanduser(),
    )

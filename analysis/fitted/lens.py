"""`FittedLens`: one affine map per layer, (A_l, b_l), that carries a layer's vectors at a stage into the space the
model's final norm and head read (its last layer's output), saved as safetensors plus a JSON record of how it
was fitted. The linear shortcut and the tuned lens are both this; they differ in how the maps were found
(`analysis.fitted.fit`). The plain lens is no map at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.definitions import FittedKind, Stage
from analysis.hashing import file_sha256
from analysis.model.loaded import LoadedModel

FORMAT = "token-trails fitted lens"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FittedLens:
    """`weights [layers, hidden, hidden]` and `biases [layers, hidden]` (float32): layer l's vector x is read
    as x A_l + b_l. `record` says what was fitted and how (model, stage, kind, texts, tokens, ridge, budget,
    held-out scores, versions)."""

    weights: torch.Tensor
    biases: torch.Tensor
    record: dict

    @property
    def kind(self) -> FittedKind:
        return self.record["kind"]

    @property
    def stage(self) -> Stage:
        return self.record["stage"]

    @property
    def scores(self) -> pd.DataFrame:
        """The held-out scores per lens and layer (`analysis.fitted.scores.SCORE_COLUMNS`)."""
        return pd.DataFrame(self.record["scores"])

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """`vectors [layers, tokens, hidden]` through each layer's map, on their device and in their dtype."""
        weights = self.weights.to(device=vectors.device, dtype=vectors.dtype)
        biases = self.biases.to(device=vectors.device, dtype=vectors.dtype)
        return torch.baddbmm(biases.unsqueeze(1), vectors, weights)

    def read(self, vectors: torch.Tensor, final: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the lens scores through this lens: `vectors [layers, tokens, hidden]` mapped, and the model's output
        to compare with, `final [tokens, hidden]` (None: the last layer of `vectors` is the output, as at
        layer_output), which no map touches. Where that last layer's map is the identity (a fit at layer_output),
        its mapped vectors are the output's to the bit, and None says so: the head reads them once."""
        mapped = self.apply(vectors)
        if final is None and len(vectors) - 1 in self.record["identity_layers"]:
            return mapped, None
        return mapped, vectors[-1] if final is None else final

    def check_for(self, lm: LoadedModel, stage: Stage) -> None:
        """A ValueError saying why this lens cannot read `lm` at `stage`: fitted on another model, revision, stage,
        width or depth."""
        record = self.record
        where = f"This {self.kind} lens was fitted on {record['model']} at {record['stage']}"
        if record["model"] != lm.name:
            raise ValueError(f"{where}, not on {lm.name}: fit one for {lm.name} (python -m analysis fit-lens).")
        if record.get("revision") and lm.revision and record["revision"] != lm.revision:
            raise ValueError(f"{where}, revision {record['revision']}; the loaded model is revision {lm.revision}.")
        if record["stage"] != stage:
            raise ValueError(f"{where}: read it at {record['stage']}, not {stage}, or fit one at {stage}.")
        shape = (record["layers"], record["hidden_size"])
        if shape != (lm.num_layers, lm.hidden_size):
            raise ValueError(
                f"{where} with {shape[0]} layers of width {shape[1]}; this {lm.name} has {lm.num_layers} of width "
                f"{lm.hidden_size}."
            )

    def save(self, path: str | Path) -> list[Path]:
        """Write the maps to `path` (.safetensors) and the record beside it (.json, with the weights file's
        SHA-256); return both paths."""
        weights_path, record_path = lens_paths(path)
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"weights": self.weights.contiguous().cpu(), "biases": self.biases.contiguous().cpu()}, weights_path)
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.record}
        record["weights_sha256"] = file_sha256(weights_path)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        return [weights_path, record_path]


def lens_paths(path: str | Path) -> tuple[Path, Path]:
    """The weights file (.safetensors) and record (.json) of a fitted lens named by either, or by their stem."""
    path = Path(path).expanduser()
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def load_fitted(path: str | Path, sha256: str | None = None) -> FittedLens:
    """The fitted lens saved at `path` (its .safetensors or .json); with `sha256`, it must be those weights (the
    ones a sweep was made with). Raises ValueError where either file is missing or unreadable, the weights are not
    the ones the record was written with (or not `sha256`), or their shapes disagree with the record."""
    weights_path, record_path = lens_paths(path)
    for file in (weights_path, record_path):
        if not file.is_file():
            raise ValueError(f"No fitted lens at {file}: a fitted lens is a .safetensors file with its .json record.")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Could not read the fitted lens's record {record_path}: {error}") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{record_path} is not a fitted lens's record (it names no format {FORMAT!r}).")
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{record_path} is format version {record.get('format_version')}; this version reads 1.")
    found = file_sha256(weights_path)
    if sha256 is not None and found != sha256:
        raise ValueError(
            f"The fitted lens at {weights_path} is not the one this was made with (SHA-256 {found[:12]}…, not "
            f"{sha256[:12]}…): give the original file, or start again in another folder."
        )
    if found != record.get("weights_sha256"):
        raise ValueError(
            f"{weights_path.name} is not the file its record {record_path.name} was written with (their SHA-256 "
            "differ): the maps were changed or replaced after fitting. Fit the lens again."
        )
    try:
        tensors = load_file(weights_path)
    except (OSError, SafetensorError) as error:
        raise ValueError(f"Could not read the fitted lens {weights_path}: {error}") from error
    layers, hidden = record["layers"], record["hidden_size"]
    weights, biases = tensors.get("weights"), tensors.get("biases")
    if (
        weights is None
        or biases is None
        or weights.shape != (layers, hidden, hidden)
        or biases.shape != (layers, hidden)
    ):
        raise ValueError(f"{weights_path.name} does not hold {layers} maps of width {hidden}, as its record says.")
    return FittedLens(
        weights, biases, {key: value for key, value in record.items() if key not in ("format", "format_version")}
    )

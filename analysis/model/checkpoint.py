"""What a model folder holds, checked before any weight is allocated and again after loading: a config with no
code of its own, complete safetensors files that hold every weight the config describes, and a real tokenizer
whose ids fit the embedding table. Every refusal is one line that says what is wrong and what to do."""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from transformers import CONFIG_MAPPING, PreTrainedTokenizerBase

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip
"""A folder holds a tokenizer when it has one of these (fast, WordPiece, byte-level BPE, SentencePiece)."""
UNREAD_MODULES = ("pooler.",)
"""Base-model weights that no stage reads: a checkpoint may lack them (masked-LM checkpoints have no pooler)."""
_MAX_HEADER_BYTES = 100 * 2**20
_SAVE_AGAIN = "save the model again with model.save_pretrained(folder) or download it again"


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class Checkpoint:
    """A model folder's config (as written) and the tensors its safetensors headers list, read without loading
    any weight."""

    folder: Path
    name: str  # the model's name as the user gave it
    config: dict
    tensors: dict[str, tuple[int, ...]]  # tensor name -> shape, every weights file together

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for shape in self.tensors.values())


def read_config(folder: Path, name: str) -> dict:
    """`config.json` of `folder`, refused when it is unreadable, names its own code, or a family transformers
    does not know."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(
            f"The config.json of {name} cannot be read ({first_line(error)}): {_SAVE_AGAIN}."
        ) from error
    if not isinstance(config, dict):
        raise ModelLoadError(f"The config.json of {name} is not a JSON object: {_SAVE_AGAIN}.")
    if "auto_map" in config:
        raise ModelLoadError(
            f"{name} needs its own Python code to load (auto_map in its config.json); Token Trails never runs a "
            "model's own code: pick a model of a family transformers supports."
        )
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"{name} declares the model type {model_type!r}, which transformers does not know: pick a model of a "
            "supported family, or update transformers."
        )
    return config


def read_checkpoint(folder: Path, name: str) -> Checkpoint:
    """The config and weight headers of `folder`, refusing damaged, truncated or missing weight files and a
    folder without tokenizer files."""
    config = read_config(folder, name)
    index = folder / WEIGHTS_INDEX
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / shard for shard in dict.fromkeys(weight_map.values())]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ModelLoadError(f"The weights index {WEIGHTS_INDEX} of {name} is damaged: {_SAVE_AGAIN}.") from error
    else:
        raise ModelLoadError(
            f"{name} has no {WEIGHTS_FILE} (or {WEIGHTS_INDEX}); Token Trails reads only safetensors weights: convert "
            "it with model.save_pretrained(folder, safe_serialization=True)."
        )
    tensors: dict[str, tuple[int, ...]] = {}
    for path in files:
        tensors.update(safetensors_shapes(path, name))
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):  # transformers would make one up
        raise ModelLoadError(
            f"{name} has no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, …): save it beside the model with "
            "tokenizer.save_pretrained(folder)."
        )
    return Checkpoint(folder, name, config, tensors)


def safetensors_shapes(path: Path, name: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's header, checking that the file holds every byte its header
    promises (a truncated, empty or garbage file is refused, naming the file)."""
    damaged = f"The weights file {path.name} of {name} is damaged"
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            header_bytes = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            if not 2 <= header_bytes <= min(_MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(f"{damaged} ({size:,} bytes, no valid header): {_SAVE_AGAIN}.")
            header = json.loads(file.read(header_bytes).decode("utf-8"))
    except FileNotFoundError as error:
        raise ModelLoadError(f"The weights file {path.name} of {name} is missing: {_SAVE_AGAIN}.") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{damaged} (its header is not readable): {_SAVE_AGAIN}.") from error
    if not isinstance(header, dict):
        raise ModelLoadError(f"{damaged} (its header is not a table of tensors): {_SAVE_AGAIN}.")
    shapes, end = {}, 0
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        try:
            shapes[tensor] = tuple(int(n) for n in entry["shape"])
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ModelLoadError(f"{damaged} (its header entry for {tensor} is malformed): {_SAVE_AGAIN}.") from error
    data_bytes = size - 8 - header_bytes
    if end > data_bytes:
        raise ModelLoadError(
            f"{damaged}: it is truncated, holding {data_bytes:,} of the {end:,} bytes of weights its header lists; "
            f"{_SAVE_AGAIN}."
        )
    return shapes


def check_complete(checkpoint: Checkpoint, model_parameters: int) -> None:
    """Refuse, before allocating, a checkpoint whose tensors hold fewer numbers than the model its config
    describes: those weights would be initialised at random."""
    held = checkpoint.parameter_count
    if held < model_parameters:
        raise ModelLoadError(
            f"The weights of {checkpoint.name} hold {held:,} numbers but its config describes a model of "
            f"{model_parameters:,}: weights are missing or smaller than the config says; {_SAVE_AGAIN}."
        )


def check_memory(name: str, model_bytes: int, max_bytes: int | None) -> None:
    """Refuse a model larger than `max_bytes` (a deployment's limit) or than the memory free now, before
    allocating it."""
    if max_bytes is not None and model_bytes > max_bytes:
        raise ModelLoadError(
            f"{name} is about {model_bytes / 2**30:.2f} GB in float32, over this deployment's limit of "
            f"{max_bytes / 2**30:.2f} GB (max_model_gb); pick a smaller model."
        )
    free = available_memory_bytes()
    if free is not None and model_bytes > free:
        raise ModelLoadError(
            f"{name} needs about {model_bytes / 2**30:.2f} GB in float32 but only {free / 2**30:.2f} GB of memory is "
            "free: close other programs or pick a smaller model."
        )


def available_memory_bytes() -> int | None:
    """Memory free for a new allocation (Linux: MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def checkpoint_architecture(checkpoint: Checkpoint) -> str:
    """The class the checkpoint was saved as (config.json "architectures"), or its model type."""
    architectures = checkpoint.config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return f"a {checkpoint.config.get('model_type')} model"


def check_loaded(
    name: str, loading_info: dict, base_prefix: str, base_modules: set[str]
) -> tuple[list[str], list[str]]:
    """Refuse a loaded model some of whose base weights the checkpoint lacked (they were initialised at random),
    had under names the model does not know, or had in another shape; a missing pooler is never read. Returns the
    weights of the prediction head the checkpoint lacked (the model then has no lens) and the checkpoint's weights
    outside the base model that nothing reads (other task heads: classifier, next-sentence, a head in another
    form)."""

    def in_base(key: str) -> bool:
        return key.startswith(f"{base_prefix}.") or key.split(".")[0] in base_modules

    never_read = tuple(f"{base_prefix}.{module}" for module in UNREAD_MODULES) + UNREAD_MODULES
    missing = sorted(
        key.removeprefix(f"{base_prefix}.")
        for key in loading_info["missing_keys"]
        if in_base(key) and not key.startswith(never_read)
    )
    if missing:
        raise ModelLoadError(
            f"{name} lacks {_count(missing, 'weight')} ({_examples(missing)}): they would be random; {_SAVE_AGAIN}."
        )
    misplaced = sorted(key.removeprefix(f"{base_prefix}.") for key in loading_info["unexpected_keys"] if in_base(key))
    if misplaced:
        raise ModelLoadError(
            f"{name} has {_count(misplaced, 'weight')} its architecture does not know ({_examples(misplaced)}): the "
            f"checkpoint and its config.json disagree; {_SAVE_AGAIN}."
        )
    mismatched = sorted(loading_info["mismatched_keys"], key=str)  # (name, shape in the file, shape by config)
    if mismatched:
        key, stored, expected = mismatched[0]
        key = key.removeprefix(f"{base_prefix}.")
        raise ModelLoadError(
            f"{name} has {_count(mismatched, 'weight')} of another shape than its config.json describes ({key} is "
            f"{list(stored)} in the file, {list(expected)} by the config): {_SAVE_AGAIN}."
        )
    head_missing = sorted(key for key in loading_info["missing_keys"] if not in_base(key))
    unread = sorted(
        key for key in loading_info["unexpected_keys"] if not in_base(key) and not key.startswith(never_read)
    )
    return head_missing, unread


def check_tokenizer(name: str, tokenizer: PreTrainedTokenizerBase, embedding_rows: int) -> None:
    """Refuse a tokenizer that holds only special tokens or has ids past the embedding table."""
    vocabulary = tokenizer.get_vocab()
    if len(vocabulary) <= len(set(tokenizer.all_special_ids)):
        raise ModelLoadError(f"The tokenizer of {name} holds only special tokens: save the model's real tokenizer.")
    largest = max(vocabulary.values())
    if largest >= embedding_rows:
        raise ModelLoadError(
            f"The tokenizer of {name} has ids up to {largest:,} but the embedding table has {embedding_rows:,} rows: "
            "the tokenizer belongs to another model; save the model's own tokenizer beside it."
        )


def _count(items: list, noun: str) -> str:
    return f"{len(items):,} {noun}" + ("" if len(items) == 1 else "s")


def _examples(keys: list[str], shown: int = 2) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def first_line(error: Exception) -> str:
    """An error's message cut to its first line (transformers' messages run to several)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

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
from typing import Any

import torch
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
_FIX = "correct it, or save the model again with model.save_pretrained(folder)"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
               "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
"""The safetensors dtypes and their bytes per number."""


class ModelLoadError(ValueError):
    """A model or folder cannot be used: every refusal of the loading path is one (UnsupportedModelError
    included), with one line that says what is wrong and what to do instead."""


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
    check_config_values(config, name)
    return config


SIZES = ("hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "num_layers", "num_attention_heads",
         "n_head", "vocab_size", "max_position_embeddings", "n_positions")  # fmt: skip
"""Config sizes every model needs whole and positive, under each family's name for them."""
OPTIONAL_SIZES = ("intermediate_size", "n_inner", "num_key_value_heads", "head_dim", "embedding_size")
"""Sizes a config may leave out or set to null (the family's default), and otherwise whole and positive."""
NUMBERS = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "norm_eps", "initializer_range")
"""Real numbers a config holds that the model computes with: finite and not negative."""
ACTIVATIONS = ("hidden_act", "activation_function", "hidden_activation")
WIDTHS, HEADS, LAYERS = ("hidden_size", "n_embd", "d_model"), ("num_attention_heads", "n_head"), (
    "num_hidden_layers", "n_layer", "num_layers")  # fmt: skip
"""Each family's name for the width, the attention heads and the number of blocks."""


def _size(config: dict, names: tuple[str, ...]) -> int | None:
    """The first of `names` the config gives (families name the same size differently), or None."""
    return next((config[name] for name in names if name in config), None)


def check_config_values(config: dict, name: str) -> None:
    """Refuse a config whose sizes are not whole positive numbers, whose epsilons are not finite numbers, whose
    activation is not a name, or whose width does not split into its heads, before anything is built from it
    (transformers would fail with a traceback, divide by zero or allocate a negative table)."""
    where = f"The config.json of {name}"
    for key in (*SIZES, *OPTIONAL_SIZES):
        if key not in config or (config[key] is None and key in OPTIONAL_SIZES):
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"{where} gives {key} as {value!r}: it must be a whole number of at least 1; {_FIX}.")
    for key in NUMBERS:
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ModelLoadError(f"{where} gives {key} as {value!r}: it must be a finite number of at least 0; {_FIX}.")
    for key in ACTIVATIONS:
        if key in config and not isinstance(config[key], str):
            raise ModelLoadError(f"{where} gives {key} as {config[key]!r}: it must name an activation such as "
                                 f"'gelu'; {_FIX}.")  # fmt: skip
    width = _size(config, WIDTHS)
    heads = _size(config, HEADS)
    if width and heads and config.get("head_dim") is None and width % heads:
        raise ModelLoadError(f"{where} splits a width of {width} into {heads} heads, which does not divide it; {_FIX}.")


def check_layer_count(checkpoint: Checkpoint) -> None:
    """Refuse, before the model is built, a config declaring more blocks than its weights could hold: each block
    holds at least width² numbers (its attention projections alone hold 4 width²), so a config asking for more
    than twice the numbers the files hold is wrong (building 100,000 blocks would take minutes before any other
    check could refuse it)."""
    config = checkpoint.config
    width = _size(config, WIDTHS)
    layers = _size(config, LAYERS)
    if width and layers and layers * width**2 > 2 * checkpoint.parameter_count:
        raise ModelLoadError(
            f"The weights of {checkpoint.name} hold {checkpoint.parameter_count:,} numbers but its config describes "
            f"a model of at least {layers * width**2:,} ({layers:,} layers of width {width:,}): weights are missing "
            f"or smaller than the config says; {_SAVE_AGAIN}."
        )


def read_checkpoint(folder: Path, name: str) -> Checkpoint:
    """The config and weight headers of `folder`, refusing damaged, truncated or missing weight files and a
    folder without tokenizer files."""
    config = read_config(folder, name)
    index = folder / WEIGHTS_INDEX
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif index.is_file():
        try:
            found = json.loads(index.read_text(encoding="utf-8"))
            weight_map, metadata = found["weight_map"], found["metadata"]  # transformers reads both
            if not isinstance(metadata, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
                raise TypeError("a weight_map of file names and a metadata table")
            files = [folder / shard for shard in dict.fromkeys(weight_map.values())]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            what = f"it has no {error.args[0]!r} entry" if isinstance(error, KeyError) else first_line(error)
            raise ModelLoadError(
                f"The weights index {WEIGHTS_INDEX} of {name} is damaged ({what}): {_SAVE_AGAIN}."
            ) from error
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
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        _check_json_table(folder / file, name)
    checkpoint = Checkpoint(folder, name, config, tensors)
    check_layer_count(checkpoint)
    return checkpoint


def _check_json_table(path: Path, name: str) -> None:
    """Refuse a tokenizer file that is not a JSON table (the tokenizer would fail with a traceback)."""
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"The {path.name} of {name} cannot be read ({first_line(error)}): save the tokenizer "
                             "again with tokenizer.save_pretrained(folder).") from error  # fmt: skip
    if not isinstance(found, dict):
        raise ModelLoadError(f"The {path.name} of {name} is not a JSON table: save the tokenizer again with "
                             "tokenizer.save_pretrained(folder).")  # fmt: skip


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
        shapes[tensor], end_of_tensor = _header_entry(tensor, entry, damaged)
        end = max(end, end_of_tensor)
    data_bytes = size - 8 - header_bytes
    if end > data_bytes:
        raise ModelLoadError(
            f"{damaged}: it is truncated, holding {data_bytes:,} of the {end:,} bytes of weights its header lists; "
            f"{_SAVE_AGAIN}."
        )
    return shapes


def _header_entry(tensor: str, entry: Any, damaged: str) -> tuple[tuple[int, ...], int]:
    """One tensor's shape and the end of its bytes, from its safetensors header entry, refused unless its dtype is
    known, its shape whole and not negative, and its byte range [begin, end] exactly the bytes its shape needs."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (*shape, begin, end)):
            raise TypeError("not whole numbers")
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"{damaged} (its header entry for {tensor} is malformed): {_SAVE_AGAIN}.") from error
    if dtype not in DTYPE_BYTES:
        raise ModelLoadError(f"{damaged} (its header gives {tensor} the unknown dtype {dtype!r}): {_SAVE_AGAIN}.")
    if min((*shape, begin, end), default=0) < 0 or begin > end:
        raise ModelLoadError(
            f"{damaged} (its header gives {tensor} the shape {shape} and the bytes {begin} to {end}): {_SAVE_AGAIN}."
        )
    needed = math.prod(shape) * DTYPE_BYTES[dtype]
    if end - begin != needed:
        raise ModelLoadError(
            f"{damaged} (its header gives {tensor} {end - begin:,} bytes, but a {dtype} tensor of shape {shape} "
            f"needs {needed:,}): {_SAVE_AGAIN}."
        )
    return tuple(shape), end


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


def check_finite(name: str, model: torch.nn.Module) -> None:
    """Refuse a loaded model holding NaN or infinite weights (every cosine would be NaN and every rank 1), naming
    the first such tensor."""
    for tensor, weight in model.named_parameters():
        if not torch.isfinite(weight).all():
            count = int((~torch.isfinite(weight)).sum())
            raise ModelLoadError(
                f"{name} holds non-finite weights (NaN or infinity): {count:,} of the {weight.numel():,} numbers of "
                f"{tensor}; the checkpoint is damaged: {_SAVE_AGAIN}."
            )


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

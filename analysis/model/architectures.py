"""Where each architecture keeps the parts Token Trails reads: a small table per family, checked on the model.

The stages are read with hooks on these parts (see `analysis.capture`); nothing here re-implements a model.
Every path is an attribute path from the base model (`AutoModel`'s output) or, for block parts, from one
block. A family the table does not name is read from what it does (`analysis.model.discovery`); what cannot
be read raises `UnsupportedModelError` naming what was found and what was missing.

| block kind | attn_residual | attn_output |
|---|---|---|
| post_ln (BERT, RoBERTa, ALBERT, DistilBERT, MPNet, DeBERTa) | input of the attention LayerNorm | its output |
| pre_ln (GPT-2, Llama-style, Gemma, OPT, BLOOM, ModernBERT, Megatron-BERT) | input of the MLP's norm | its output |
| parallel (GPT-NeoX, Pythia, GPT-J, Phi, Falcon) | block input + attention output (summed here) | not available |
| norm_after (OLMo 2) | input of the MLP | not available (no norm reads it) |
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from analysis.model.checkpoint import ModelLoadError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

BlockKind = Literal["post_ln", "pre_ln", "parallel", "norm_after"]

BLOCK_KINDS: dict[BlockKind, str] = {
    "post_ln": "post-LayerNorm block: LN(x + attention), then LN(that + MLP)",
    "pre_ln": "pre-LayerNorm block: x + attention(norm(x)), then that + MLP(norm(that))",
    "parallel": "parallel block: x + attention(norm(x)) + MLP(norm(x)), one residual sum",
    "norm_after": "norm-after block: x + norm(attention(x)), then that + norm(MLP(that)) (OLMo 2)",
}


class UnsupportedModelError(ModelLoadError):
    """The model's structure is not one Token Trails can read; the message names what was missing. A
    ModelLoadError, so a script catches every "this model cannot be used" in one place."""


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps its parts (attribute paths; None where the family has none)."""

    label: str
    kind: BlockKind
    blocks: str | Callable[[nn.Module], list[nn.Module]]  # from the base model; a callable for shared layers
    attention: str  # from a block: the module returning (update, attention weights)
    out_projection: str  # from a block: the attention's output projection; its input holds every head's context
    mid_norm: str | None = None  # from a block: post_ln the attention LayerNorm, pre_ln the MLP's norm
    value: str | None = None  # from a block: the separate value projection (the original demo needs it)
    position: str | None = None  # from the base model: the absolute position table
    token_type: str | None = None
    embedding_norm: str | None = None
    projection: str | None = None  # from the base model: embedding size -> hidden size, after the embeddings
    causal: bool = False
    final_norm: str | None = None  # from the base model: the norm after the last block (decoders, ModernBERT)
    attention_norm: str | None = None  # from a block: the norm of the attention's output before the residual sum
    mlp: str | None = None  # from a block: the MLP, whose input is attn_residual in a norm_after block
    lens_head: tuple[str, ...] = ()  # from the masked-LM or causal-LM model: hidden -> logits, applied in turn


def _albert_blocks(base: nn.Module) -> list[nn.Module]:
    """ALBERT runs its layer groups in turn, sharing weights: block i is group int(i / (layers / groups))."""
    config = base.config
    groups = base.encoder.albert_layer_groups
    per_group = config.num_hidden_layers / config.num_hidden_groups
    return [
        groups[int(i / per_group)].albert_layers[inner]
        for i in range(config.num_hidden_layers)
        for inner in range(config.inner_group_num)
    ]


FAMILIES_FILE = Path(__file__).with_name("families.toml")
_BLOCK_READERS: dict[str, Callable[[nn.Module], list[nn.Module]]] = {"albert_layer_groups": _albert_blocks}


def _read_families(path: Path) -> dict[str, Family]:
    """The families table (`families.toml`): each entry, after the one it is `like`, as a Family."""
    table = tomllib.loads(path.read_text(encoding="utf-8"))
    families: dict[str, Family] = {}
    for model_type, entry in table.items():
        fields = {**(asdict(families[entry["like"]]) if "like" in entry else {}), **entry}
        fields.pop("like", None)
        fields["blocks"] = _BLOCK_READERS.get(fields["blocks"], fields["blocks"])
        fields["lens_head"] = tuple(fields.get("lens_head", ()))
        families[model_type] = Family(**fields)
    return families


FAMILIES: dict[str, Family] = _read_families(FAMILIES_FILE)
"""Model types (config.model_type) read by name, from `families.toml`."""


@dataclass(frozen=True)
class EmbeddingParts:
    """The embedding tables, the embedding norm and any projection to the hidden size (None where absent)."""

    word: nn.Embedding
    position: nn.Embedding | None
    position_offset: int  # row of position 0 (padding_idx + 1 for RoBERTa, XLM-R and MPNet; 2 for OPT)
    ids_offset: int  # what position 0's id is in the model's `position_ids` input (OPT's table adds its own 2)
    token_type: nn.Embedding | None
    norm: nn.LayerNorm | None
    projection: nn.Linear | None
    scale: float = 1.0  # the factor the embedding layer multiplies word rows by (Gemma: sqrt(hidden))

    @property
    def positions_after_projection(self) -> bool:
        """The position rows are added after the word rows are projected (OPT-350m): P(w) + q, a form the
        reference algebra (P(w + q)) does not hold."""
        return (
            self.projection is not None
            and self.position is not None
            and self.position.embedding_dim != self.word.embedding_dim
        )


@dataclass(frozen=True)
class LayerParts:
    """One block: the block itself, its attention, the attention's output projection and the mid norm."""

    block: nn.Module
    attention: nn.Module
    out_projection: nn.Module  # nn.Linear, or transformers' Conv1D (GPT-2) with its [in, out] weight
    mid_norm: nn.Module | None
    value: nn.Linear | None
    attention_norm: nn.Module | None = None  # normalises the attention's output before the residual sum (Gemma 2)
    mlp: nn.Module | None = None  # a norm_after block's MLP: its input is attn_residual


@dataclass(frozen=True)
class ModelStructure:
    """What `find_structure` located: the family, block kind, embeddings and blocks (a shared block repeats)."""

    family: str
    label: str
    kind: BlockKind
    causal: bool
    embeddings: EmbeddingParts
    layers: tuple[LayerParts, ...]
    num_heads: int
    final_norm: nn.Module | None = None  # the norm (OPT-350m: projection) the model applies after its last block


def architecture(hf_model: nn.Module) -> str:
    """The class name the checkpoint was saved as (BertForMaskedLM, GPT2LMHeadModel, …)."""
    architectures = getattr(getattr(hf_model, "config", None), "architectures", None)
    return architectures[0] if architectures else type(hf_model).__name__


def unsupported(hf_model: nn.Module, why: str) -> UnsupportedModelError:
    families = ", ".join(sorted(FAMILIES))
    return UnsupportedModelError(
        f"The architecture {architecture(hf_model)} is not supported: {why}. Token Trails reads these model "
        f"types by their table: {families}; others by what they do, where that can be read."
    )


def module_at(root: nn.Module, path: str | None) -> nn.Module | None:
    """The module at the attribute path `path` ("encoder.layer") from `root`; None where there is none."""
    if path is None:
        return None
    module: object = root
    for name in path.split("."):
        module = getattr(module, name, None)
    return module if isinstance(module, nn.Module) else None


def _need(
    hf_model: nn.Module, root: nn.Module, path: str | None, kind: type | tuple[type, ...], what: str
) -> nn.Module:
    found = module_at(root, path)
    if not isinstance(found, kind):
        raise unsupported(hf_model, f"{what} ({path!r}) was not found")
    return found


def linear_like(module: nn.Module | None) -> bool:
    """A Linear, or transformers' Conv1D (a linear layer stored [in, out])."""
    return isinstance(module, nn.Linear) or (
        type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)
    )


def is_norm(module: nn.Module | None) -> bool:
    """A LayerNorm or an RMSNorm (each family names its own classes: OLMo's LayerNorm has no parameters)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def output_matrix(module: nn.Module) -> torch.Tensor:
    """The weight of a linear layer as [out, in], whichever way it stores it."""
    weight = module.weight.detach()
    return weight if isinstance(module, nn.Linear) else weight.T


def _embedding_parts(hf_model: nn.Module, family: Family) -> EmbeddingParts:
    word = hf_model.get_input_embeddings()
    if not isinstance(word, nn.Embedding):
        raise unsupported(hf_model, "no word-embedding table was found")
    position = module_at(hf_model, family.position)
    owner = module_at(hf_model, family.position.rpartition(".")[0]) if family.position else None
    padding_idx = getattr(owner, "padding_idx", None)
    own_offset = getattr(position, "offset", None)  # a table that adds its offset to the ids it is given (OPT)
    offset = own_offset if isinstance(own_offset, int) else padding_idx + 1 if isinstance(padding_idx, int) else 0
    norm = module_at(hf_model, family.embedding_norm)
    if norm is not None and not isinstance(norm, nn.LayerNorm):
        raise unsupported(hf_model, f"its embedding norm ({family.embedding_norm!r}) is not a LayerNorm")
    token_type = module_at(hf_model, family.token_type)
    projection = module_at(hf_model, family.projection)
    if module_at(hf_model, "embeddings.embed_proj") is not None:
        raise unsupported(hf_model, "it projects its embeddings before their LayerNorm (embedding_size != hidden)")
    hidden = hf_model.config.hidden_size
    if projection is None and word.embedding_dim != hidden:
        raise unsupported(hf_model, "its word embeddings are not the hidden size and no projection was found")
    embed_scale = getattr(word, "embed_scale", 1.0)
    meta = isinstance(embed_scale, torch.Tensor) and embed_scale.is_meta  # an outline's: no value, none needed
    scale = 1.0 if meta else float(embed_scale)
    if scale != 1.0 and (position is not None or norm is not None or projection is not None):
        raise unsupported(hf_model, "it scales its word rows and then adds positions, normalises or projects them")
    return EmbeddingParts(
        word=word,
        position=position if isinstance(position, nn.Embedding) else None,
        position_offset=offset,
        ids_offset=0 if isinstance(own_offset, int) else offset,
        token_type=token_type if isinstance(token_type, nn.Embedding) else None,
        norm=norm,
        projection=projection if isinstance(projection, nn.Linear) else None,
        scale=scale,
    )


def _layer_parts(hf_model: nn.Module, family: Family, block: nn.Module) -> LayerParts:
    attention = _need(hf_model, block, family.attention, nn.Module, "the attention module")
    out_projection = module_at(block, family.out_projection)
    if not linear_like(out_projection):
        raise unsupported(hf_model, f"the attention output projection ({family.out_projection!r}) was not found")
    mid_norm = None
    if family.mid_norm is not None:
        mid_norm = module_at(block, family.mid_norm)
        if not is_norm(mid_norm):
            raise unsupported(hf_model, f"the norm after the attention ({family.mid_norm!r}) was not found")
    value = module_at(block, family.value)
    attention_norm = module_at(block, family.attention_norm)
    if family.attention_norm is not None and not type(attention_norm).__name__.endswith("RMSNorm"):
        raise unsupported(hf_model, f"the RMSNorm of the attention's output ({family.attention_norm!r}) was not found")
    mlp = _need(hf_model, block, family.mlp, nn.Module, "the MLP") if family.kind == "norm_after" else None
    return LayerParts(
        block=block,
        attention=attention,
        out_projection=out_projection,
        mid_norm=mid_norm,
        value=value if isinstance(value, nn.Linear) else None,
        attention_norm=attention_norm,
        mlp=mlp,
    )


def family_of(config: PretrainedConfig) -> Family | None:
    """The table's entry for this config's model type, in the variant its config chooses; None for a type the
    table does not name."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        return None
    if config.model_type == "gpt_neox" and not getattr(config, "use_parallel_residual", True):
        return replace(family, kind="pre_ln", mid_norm="post_attention_layernorm")
    if config.model_type == "falcon" and not (config.parallel_attn or config.new_decoder_architecture):
        return replace(family, kind="pre_ln", mid_norm="post_attention_layernorm")
    if config.model_type == "opt" and not getattr(config, "do_layer_norm_before", True):  # OPT-350m
        projected = config.word_embed_proj_dim != config.hidden_size
        return replace(
            family,
            label="OPT-350m form (post-LayerNorm decoder, word rows projected in and the output projected out)",
            kind="post_ln",
            mid_norm="self_attn_layer_norm",
            projection="decoder.project_in" if projected else None,
            final_norm="decoder.project_out" if projected else None,  # applied after the last block, before the head
        )
    return family


def find_structure(hf_model: nn.Module) -> ModelStructure:
    """Locate the embeddings and blocks of `hf_model` (a base model, not a task head) by its family's table."""
    config = hf_model.config
    if getattr(config, "is_encoder_decoder", False):
        raise unsupported(hf_model, "it is an encoder-decoder model; load an encoder or a decoder-only model")
    family = family_of(config)
    if family is None:  # read from what the model does (imported here: discovery builds on this module's parts)
        from analysis.model.discovery import discover_family

        family = discover_family(hf_model)
    if callable(family.blocks):
        blocks = family.blocks(hf_model)
    else:
        found = module_at(hf_model, family.blocks)
        if not isinstance(found, nn.ModuleList) or not len(found):
            raise unsupported(hf_model, f"no list of blocks at {family.blocks!r} was found")
        blocks = list(found)
    return ModelStructure(
        family=config.model_type,
        label=family.label,
        kind=family.kind,
        causal=family.causal,
        embeddings=_embedding_parts(hf_model, family),
        layers=tuple(_layer_parts(hf_model, family, block) for block in blocks),
        num_heads=config.num_attention_heads,
        final_norm=module_at(hf_model, family.final_norm),
    )

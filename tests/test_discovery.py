"""A model type the family table does not name is read from what it does (`analysis.model.discovery`): on every
family the table does name, discovery finds what the table says; other types load exactly (checked against their
own forward pass) or are refused saying what was found, never read by assumption."""

import dataclasses

import numpy as np
import pytest

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.model.architectures import FAMILIES
from analysis.model.discovery import discover_family
from tests.synthetic import TINY_FAMILIES, random_hf_model, sentencepiece_tokenizer, tiny_model

STRUCTURE = ("kind", "blocks", "attention", "out_projection", "mid_norm", "position", "token_type", "embedding_norm",
             "final_norm", "causal", "attention_norm", "mlp")  # fmt: skip
NOT_DISCOVERED = {
    "albert": "one block shared by every layer: no list of its blocks",
    "deberta-v2": "disentangled attention: no norm reads the block input plus an attention output it returns",
}


@pytest.mark.parametrize("family", sorted(set(TINY_FAMILIES) - set(NOT_DISCOVERED)))
def test_discovery_finds_what_the_family_table_says(family):
    hf_model, _ = tiny_model(family)
    found = dataclasses.asdict(discover_family(hf_model.base_model))
    expected = dataclasses.asdict(FAMILIES[family])
    fields = [f for f in STRUCTURE if not (family == "electra" and f == "embedding_norm")]  # behind its projection
    assert {f: found[f] for f in fields} == {f: expected[f] for f in fields}


@pytest.mark.parametrize("family", sorted(NOT_DISCOVERED))
def test_what_discovery_cannot_read_it_refuses_saying_what_was_found(family):
    hf_model, _ = tiny_model(family)
    with pytest.raises(analysis.UnsupportedModelError, match=r"is not supported: (no single list|no norm)"):
        discover_family(hf_model.base_model)


UNNAMED = {  # model types outside the table, each a different block: pre_ln, parallel, norm_after, learned positions
    "xglm": {"d_model": 32, "num_layers": 3, "attention_heads": 4, "ffn_dim": 64},
    "codegen": {"n_embd": 32, "n_layer": 3, "n_head": 4, "rotary_dim": 4, "n_positions": 64},
    "gpt_bigcode": {"n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64},
    "cohere": {"num_key_value_heads": 2},
    "exaone4": {"num_key_value_heads": 2},
    "granite": {"num_key_value_heads": 2},
}
KINDS = {"xglm": "pre_ln", "codegen": "parallel", "gpt_bigcode": "pre_ln", "cohere": "parallel",
         "exaone4": "norm_after", "granite": "pre_ln"}  # fmt: skip
BASE = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
        "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # fmt: skip


def save(tmp_path, model_type: str, **changes) -> str:
    tokenizer = sentencepiece_tokenizer(decoder=True)
    random_hf_model(model_type, {**BASE, **UNNAMED[model_type], **changes}, tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    analysis.release_models()
    return str(tmp_path)


@pytest.mark.parametrize("model_type", sorted(UNNAMED))
def test_a_model_type_outside_the_table_loads_exactly(model_type, tmp_path):
    lm = analysis.load_model(save(tmp_path, model_type))
    assert lm.structure.label == f"{model_type} (structure read from the model: {KINDS[model_type]})"
    assert lm.self_check.hidden <= 1e-4  # a lens only where a tied head makes one without a checkpoint's head
    assert (
        (lm.unembed is not None) == bool(lm.hf_model.config.tie_word_embeddings) == (lm.self_check.logits is not None)
    )
    assert ("attn_output" in analysis.capabilities(lm).stages) == (KINDS[model_type] == "pre_ln")
    for layer in (0, lm.num_layers - 1):
        parts = analysis.decompose_heads(lm, SEED_SENTENCE, layer)
        assert np.abs(parts.reconstructed() - parts.attn_residual).max() <= 1e-4
    assert analysis.outline_model(str(tmp_path)) is None  # no outline: its structure needs a forward pass
    analysis.release_models()


def test_a_residual_scaled_by_a_multiplier_is_refused_not_assumed(tmp_path):
    """Granite scales each sublayer's output before the residual sum: no norm reads block input + attention."""
    with pytest.raises(analysis.UnsupportedModelError, match="no norm of its blocks reads the block input plus"):
        analysis.load_model(save(tmp_path, "granite", residual_multiplier=0.5))
    analysis.release_models()


SCALINGS = [("cohere", {"logit_scale": 0.25}), ("granite", {"logits_scaling": 4.0}), ("xglm", {})]


@pytest.mark.parametrize("model_type, scaling", SCALINGS)
def test_a_decoder_outside_the_table_has_its_lens_scaled_as_its_config_says(model_type, scaling, tmp_path):
    """Its head is its output embedding after its discovered final norm, then the scale its config applies."""
    tokenizer = sentencepiece_tokenizer(decoder=True)
    shape = {**BASE, **UNNAMED[model_type], **scaling}
    random_hf_model(model_type, shape, tokenizer, head=True).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    analysis.release_models()
    lm = analysis.load_model(str(tmp_path))
    assert lm.unembed is not None and lm.self_check.logits <= 1e-4, lm.no_lens
    assert [type(m).__name__ for m in lm.unembed][-1] == ("LogitScale" if scaling else "Linear")
    result = analysis.lens(lm, SEED_SENTENCE)
    assert result.target == "next"
    analysis.release_models()

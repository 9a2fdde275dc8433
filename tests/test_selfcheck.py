"""Every load checks the capture against the model's own plain forward pass on a short batched, padded probe:
stages that disagree refuse the model, naming where and by how much; a lens that disagrees with the model's
logits is dropped, saying why. Broken on purpose here: shifted position ids, a wrong final norm, a head missing
its norm."""

import dataclasses

import pytest
import torch

import analysis
from analysis.capture import selfcheck
from analysis.model import architectures, loaded
from analysis.model.unembed import find_unembed
from tests.synthetic import TINY_FAMILIES, random_hf_model, sentencepiece_tokenizer


@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_every_family_passes_its_self_check_on_load(family, head, family_folder):
    lm = analysis.load_model(str(family_folder(family, head)))
    found = lm.self_check
    assert found is not None and found.hidden <= selfcheck.TOLERANCE
    assert (found.logits is not None) == (lm.unembed is not None)
    assert lm.unembed is not None or not head  # a checkpoint with its head has its lens (a tied one even without)
    assert found.logits is None or found.logits <= selfcheck.TOLERANCE
    assert found.summary().startswith("self-check passed: agrees with the model's own forward pass to ")


def test_the_bundled_model_records_its_self_check(minilm):
    assert minilm.self_check.hidden <= selfcheck.TOLERANCE
    assert minilm.self_check.logits is None and minilm.unembed is None  # saved without its masked-LM head


def _fresh(folder):
    analysis.release_models()
    return str(folder)


def test_shifted_position_ids_refuse_the_model_naming_the_stage(family_folder, monkeypatch):
    """The capture feeds position ids one row off the model's own (as for a family numbering them otherwise)."""
    real = architectures._embedding_parts

    def shifted(hf_model, family):
        parts = real(hf_model, family)
        return dataclasses.replace(parts, position_offset=parts.position_offset + 1, ids_offset=parts.ids_offset + 1)

    monkeypatch.setattr(architectures, "_embedding_parts", shifted)
    with pytest.raises(analysis.UnsupportedModelError) as refused:
        analysis.load_model(_fresh(family_folder("roberta")))
    message = str(refused.value)
    assert "reads it wrongly: its layer_input of layer 0 differs from the model's own forward pass by" in message
    assert "\n" not in message
    analysis.release_models()


def test_a_final_norm_the_model_does_not_apply_refuses_it(family_folder, monkeypatch):
    family = architectures.FAMILIES["gpt2"]
    monkeypatch.setitem(architectures.FAMILIES, "gpt2", dataclasses.replace(family, final_norm=None))
    with pytest.raises(analysis.UnsupportedModelError, match="its last hidden state differs from the model"):
        analysis.load_model(_fresh(family_folder("gpt2")))
    analysis.release_models()


def test_a_lens_that_is_not_the_models_own_is_dropped_with_the_reason(family_folder, monkeypatch):
    """The lens skips the final norm the model applies before its head: the stages are right, the lens is not."""

    def without_final_norm(head_model, final_norm):
        return torch.nn.Sequential(*list(find_unembed(head_model, final_norm))[1:])

    monkeypatch.setattr(loaded, "find_unembed", without_final_norm)
    lm = analysis.load_model(_fresh(family_folder("llama", head=True)))
    assert lm.unembed is None and lm.self_check.logits > selfcheck.TOLERANCE
    assert "its lens at the last layer differs from the model's own logits by" in lm.no_lens
    assert "lens" in analysis.capabilities(lm).unavailable
    analysis.release_models()


def test_a_stage_read_in_another_shape_refuses_the_model(family_folder, monkeypatch):
    """As OPT's flattened tokens were before they were viewed per text again: one vector per token or nothing."""
    from analysis.capture import forward

    monkeypatch.setattr(forward, "_per_text", lambda reading, batch_size, length: reading)
    with pytest.raises(
        analysis.UnsupportedModelError,
        match=r"reads its attn_(residual|output) at layer \d as a tensor of shape \(\d+, 32\), not one 32-vector per",
    ):
        analysis.load_model(_fresh(family_folder("opt")))
    analysis.release_models()


def test_gemma2s_lens_applies_its_logit_soft_cap_without_which_it_is_dropped(family_folder, monkeypatch):
    from analysis.model.unembed import LogitSoftCap

    lm = analysis.load_model(_fresh(family_folder("gemma2", head=True)))
    assert isinstance(lm.unembed[-1], LogitSoftCap) and lm.self_check.logits <= selfcheck.TOLERANCE
    without_cap = lambda head_model, final_norm: torch.nn.Sequential(*find_unembed(head_model, final_norm)[:-1])  # noqa: E731
    monkeypatch.setattr(loaded, "find_unembed", without_cap)
    lm = analysis.load_model(_fresh(family_folder("gemma2", head=True)))
    assert lm.unembed is None and "differs from the model's own logits" in lm.no_lens
    analysis.release_models()


OUTSIDE_THE_TABLE = {  # model types the family table does not name, as the issue found them
    "ibert": ("its input embedding is a QuantEmbedding, not an embedding table", False),  # crashed before
    "nystromformer": ("a probe pass to read its structure failed", False),  # was silently wrong
    "roc_bert": ("", True),  # read from what it does, and the self-check confirms it
    "layoutlm": ("", True),
}


@pytest.mark.parametrize("model_type", sorted(OUTSIDE_THE_TABLE))
def test_a_model_outside_the_table_is_read_exactly_or_refused_in_one_line(model_type, tmp_path):
    said, loads = OUTSIDE_THE_TABLE[model_type]
    tokenizer = sentencepiece_tokenizer()
    shape = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
             "max_position_embeddings": 66, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}  # fmt: skip
    if model_type == "nystromformer":
        shape |= {"num_landmarks": 4, "segment_means_seq_len": 8}
    random_hf_model(model_type, shape, tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if loads:
        lm = analysis.load_model(_fresh(tmp_path))
        assert "structure read from the model: post_ln" in lm.structure.label
        assert lm.self_check.hidden <= selfcheck.TOLERANCE
    else:
        with pytest.raises(analysis.UnsupportedModelError) as refused:
            analysis.load_model(_fresh(tmp_path))
        assert said in str(refused.value) and "\n" not in str(refused.value)
    analysis.release_models()

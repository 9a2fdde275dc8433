"""Every supported family, on a tiny random model saved as safetensors + tokenizer and loaded like a user's folder:
stage vectors against the model's own computation read by this test's own hooks, references against explicit
computations, the head decomposition, and what each model lacks."""

import re

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.scoring.references import vocabulary_scorer
from analysis.tables import token_labels
from analysis.wordclass import word_classes
from tests.hooks import stage_vectors
from tests.numerics import COSINE32, exact_cosines, exact_references, rank_bounds
from tests.synthetic import (
    TINY_FAMILIES,
    byte_level_tokenizer,
    random_hf_model,
    sentencepiece_tokenizer,
    wordpiece_tokenizer,
)

# Where each family keeps its parts, written here from the transformers model sources, independently of
# analysis.architectures: the blocks, the norm after the attention (None: a parallel block) and the attention.
LLAMA_LIKE = ["llama", "qwen2", "mistral", "gemma", "phi3", "starcoder2", "stablelm", "olmo"]
SANDWICH = ["gemma2", "gemma3_text"]  # norms around the attention's and the MLP's outputs too
GEMMAS = ["gemma", *SANDWICH]  # embedding rows scaled by sqrt(hidden)
BLOCKS = {"distilbert": "transformer.layer", "modernbert": "layers", "gpt2": "h", "gpt_neox": "layers"}
BLOCKS |= dict.fromkeys([*LLAMA_LIKE, *SANDWICH, "phi"], "layers") | dict.fromkeys(["bloom", "gpt_neo", "gptj"], "h")
BLOCKS |= {"opt": "decoder.layers", "falcon": "h", "olmo2": "layers"}
MID_NORM = (
    {
        "albert": "attention.LayerNorm",
        "distilbert": "sa_layer_norm",
        "mpnet": "attention.LayerNorm",
        "modernbert": "mlp_norm",
        "gpt2": "ln_2",
        "gpt_neox": None,
        "gptj": None,
        "phi": None,
        "opt": "final_layer_norm",  # OPT's name for the norm before each block's MLP
        "bloom": "post_attention_layernorm",
        "gpt_neo": "ln_2",
        "falcon": None,
        "megatron-bert": "ln",  # pre-LN encoders: the norm before each block's MLP
        "xlm-roberta-xl": "LayerNorm",
        "olmo2": "mlp",  # no norm reads attn_residual: the MLP itself does (its output is no stage)
    }
    | dict.fromkeys(LLAMA_LIKE, "post_attention_layernorm")
    | dict.fromkeys(SANDWICH, "pre_feedforward_layernorm")
)
# Parallel blocks: the attention module whose output joins the residual sum, and the norm the MLP reads.
ATTENTION = {"gpt_neox": "attention", "gptj": "attn", "phi": "self_attn", "falcon": "self_attention"}
PARALLEL_MLP_NORM = {"gpt_neox": "post_attention_layernorm", "gptj": "ln_1", "phi": "input_layernorm"}
PARALLEL_MLP_NORM["falcon"] = "input_layernorm"
MLP = dict.fromkeys(
    ["gpt2", "modernbert", "gpt_neox", "bloom", "gpt_neo", "gptj", "phi", *LLAMA_LIKE, *SANDWICH], "mlp"
)
MLP |= {"falcon": "mlp", "megatron-bert": "intermediate", "xlm-roberta-xl": "intermediate", "olmo2": "mlp"}
NORM_AFTER = {"olmo2"}  # x + norm(attention(x)), then that + norm(MLP(that))
MLP["opt"] = None  # fc1, activation, fc2 sit in the block itself
PROJECTION = {"electra": "embeddings_project", "albert": "encoder.embedding_hidden_mapping_in"}
DECODERS = {"gpt2", "gpt_neox", "opt", "bloom", "gpt_neo", "gptj", "phi", "falcon", "olmo2", *LLAMA_LIKE, *SANDWICH}
ROTARY_OR_ALIBI = {"gpt_neox", "bloom", "gptj", "phi", "falcon", "olmo2", *LLAMA_LIKE, *SANDWICH}  # no table


def attribute(module, path):
    for name in path.split("."):
        module = getattr(module, name)
    return module


def blocks_of(hf_model, family):
    if family == "albert":  # one shared block runs at every depth
        return [hf_model.encoder.albert_layer_groups[0].albert_layers[0]] * hf_model.config.num_hidden_layers
    return list(attribute(hf_model, BLOCKS.get(family, "encoder.layer")))


@pytest.fixture(scope="module", params=list(TINY_FAMILIES))
def family_model(request, family_folder):
    """(model_type, the tiny model of that family loaded from its saved folder through load_model)."""
    yield request.param, analysis.load_model(family_folder(request.param))
    analysis.release_models()


def own_readings(lm, family, text):
    """A plain forward pass (the model's default positions, no package code) with this test's own hooks:
    per block its input, output, the mid norm's input and output and the attention's output."""
    hf_model = lm.hf_model
    seen = {key: [] for key in ("input", "output", "norm_in", "norm_out", "attention")}
    handles = []
    unique_blocks = list({id(b): b for b in blocks_of(hf_model, family)}.values())
    for block in unique_blocks:
        handles.append(
            block.register_forward_pre_hook(
                lambda m, args, kwargs: seen["input"].append((args[0] if args else kwargs["hidden_states"])[0]),
                with_kwargs=True,
            )
        )
        handles.append(
            block.register_forward_hook(
                lambda m, a, out: seen["output"].append((out if torch.is_tensor(out) else out[0])[0])
            )
        )
        norm_path = MID_NORM.get(family, "attention.output.LayerNorm")
        if norm_path is not None:
            norm = attribute(block, norm_path)
            one = (lambda t: t) if family == "opt" else (lambda t: t[0])  # OPT flattens its one text's tokens
            handles.append(norm.register_forward_pre_hook(lambda m, args, f=one: seen["norm_in"].append(f(args[0]))))
            handles.append(norm.register_forward_hook(lambda m, a, out, f=one: seen["norm_out"].append(f(out))))
        else:
            attention = attribute(block, ATTENTION[family])
            handles.append(attention.register_forward_hook(lambda m, a, out: seen["attention"].append(out[0][0])))
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    try:
        with torch.no_grad():
            hf_model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.stack(values) if values else None for key, values in seen.items()}


def test_every_stage_is_what_the_model_computes(family_model):
    family, lm = family_model
    own = own_readings(lm, family, SEED_SENTENCE)
    available = analysis.capabilities(lm).stages
    got = {stage: stage_vectors(lm, SEED_SENTENCE, stage)[1] for stage in available}
    # Two forward passes through the same kernels, one with explicit position ids and mask: float32 defaults.
    torch.testing.assert_close(got["layer_input"], own["input"])
    torch.testing.assert_close(got["layer_output"], own["output"])
    if MID_NORM.get(family, "") is None:  # parallel block: the model never forms attn_residual
        assert "attn_output" not in available
        torch.testing.assert_close(got["attn_residual"], own["input"] + own["attention"])
    else:
        torch.testing.assert_close(got["attn_residual"], own["norm_in"])
        if family in NORM_AFTER:
            assert "attn_output" not in available
        else:
            torch.testing.assert_close(got["attn_output"], own["norm_out"])


def test_the_residual_stream_adds_up_through_pre_ln_and_parallel_blocks(family_model):
    """layer_output = attn_residual + MLP(norm(·)) with the model's own MLP: in pre-LN blocks the norm is the
    mid norm of attn_residual, in parallel blocks the MLP's norm of the block input. (Post-LN blocks are checked
    against their LayerNorms in test_capture.)"""
    family, lm = family_model
    _, x = stage_vectors(lm, SEED_SENTENCE, "layer_input")
    _, residual = stage_vectors(lm, SEED_SENTENCE, "attn_residual")
    _, output = stage_vectors(lm, SEED_SENTENCE, "layer_output")
    for layer, block in enumerate(blocks_of(lm.hf_model, family) if family in MLP else []):
        with torch.no_grad():
            if family in PARALLEL_MLP_NORM:
                mlp_input = attribute(block, PARALLEL_MLP_NORM[family])(x[layer])
            elif family in NORM_AFTER:
                mlp_input = residual[layer]
            else:
                mlp_input = attribute(block, MID_NORM[family])(residual[layer])
            if MLP[family] is None:
                mlp_output = block.fc2(block.activation_fn(block.fc1(mlp_input)))
            elif family == "bloom":  # BLOOM's MLP adds the residual it is given
                mlp_output = block.mlp(mlp_input.unsqueeze(0), torch.zeros_like(mlp_input.unsqueeze(0)))[0]
            elif MLP[family] == "intermediate":  # pre-LN encoders: intermediate, then output (which adds a residual)
                mlp_output = block.output(block.intermediate(mlp_input), torch.zeros_like(mlp_input))
            else:
                mlp_output = attribute(block, MLP[family])(mlp_input.unsqueeze(0))[0]
            if family in SANDWICH or family in NORM_AFTER:
                mlp_output = block.post_feedforward_layernorm(mlp_output)
        torch.testing.assert_close(output[layer], residual[layer] + mlp_output)  # float32 defaults
    assert (lm.info.block != "post_ln") == (family in MLP)


def explicit_reference(lm, family, reference, token_ids, positions):
    """The reference written out from the model's own modules: word rows (+ position and type rows), the
    embedding LayerNorm for `embedding`, then the projection where the family has one."""
    hf_model = lm.hf_model
    vectors = hf_model.get_input_embeddings().weight[token_ids]  # the rows (Gemma's layer would scale them)
    embeddings = getattr(hf_model, "embeddings", None)
    if reference == "embedding" and family in GEMMAS:  # Gemma multiplies the word rows by sqrt(hidden)
        vectors = vectors * hf_model.config.hidden_size**0.5
    if reference != "raw":
        if family in ("gpt2", "gpt_neo"):
            vectors = vectors + hf_model.wpe(positions)
        elif family == "opt":  # OPT's table starts at row 2
            vectors = vectors + hf_model.decoder.embed_positions.weight[positions + 2]
        elif getattr(embeddings, "position_embeddings", None) is not None:
            offset = 2 if family in ("xlm-roberta", "mpnet", "roberta", "xlm-roberta-xl") else 0
            vectors = vectors + embeddings.position_embeddings(positions + offset)
        if getattr(embeddings, "token_type_embeddings", None) is not None:
            vectors = vectors + embeddings.token_type_embeddings.weight[0]
    if reference == "embedding":
        norm = getattr(embeddings, "LayerNorm", None) or getattr(embeddings, "norm", None)
        norm = getattr(hf_model, "word_embeddings_layernorm", None) if family == "bloom" else norm
        vectors = norm(vectors) if norm is not None else vectors
    if family in PROJECTION:
        vectors = attribute(hf_model, PROJECTION[family])(vectors)
    return vectors


def test_references_are_the_explicit_computation_and_embedding_feeds_block_zero(family_model):
    family, lm = family_model
    tokens, layer_input = stage_vectors(lm, SEED_SENTENCE, "layer_input")
    ids, position_ids = torch.tensor(tokens.ids), torch.tensor(tokens.position_ids)
    positions = torch.arange(len(ids))
    with torch.no_grad():
        for reference in analysis.capabilities(lm).references:
            scorer = vocabulary_scorer(lm, reference)
            expected = explicit_reference(lm, family, reference, ids, positions)
            torch.testing.assert_close(scorer.references(ids, position_ids), expected)  # float32 defaults
        # What block 0 reads is the embedding layer's output: the `embedding` reference of each token.
        embedding = vocabulary_scorer(lm, "embedding").references(ids, position_ids)
        torch.testing.assert_close(embedding, layer_input[0])


def test_cosines_and_ranks_match_materialised_references(family_model):
    family, lm = family_model
    for reference in analysis.capabilities(lm).references:
        result = analysis.analyze(lm, SEED_SENTENCE, stage="layer_output", reference=reference)
        scorer = vocabulary_scorer(lm, reference)
        rows = result.metrics[result.metrics["layer"].isin([0, lm.num_layers - 1])]
        for row in rows.itertuples():
            position_id = int(result.tokens.at[row.position, "position_id"])
            cosines = exact_cosines(result.vectors[row.layer, row.position], exact_references(scorer, position_id))
            assert row.cosine == pytest.approx(cosines[row.token_id], abs=COSINE32)
            low, high = rank_bounds(cosines, row.token_id)
            assert low <= row.rank <= high, (family, reference, row)


def test_head_decomposition_adds_up_and_decoders_are_causal(family_model):
    family, lm = family_model
    for layer in (0, lm.num_layers - 1):
        parts = analysis.decompose_heads(lm, SEED_SENTENCE, layer)
        n = len(parts.tokens)
        assert parts.head_contributions.shape == (lm.num_heads, n, lm.hidden_size)
        # float64 sums of the model's float32 pieces against its float32 attn_residual (values of order 1-10).
        assert np.abs(parts.reconstructed() - parts.attn_residual).max() <= 1e-4
        np.testing.assert_allclose(parts.attention.sum(-1), 1.0, atol=1e-5)
        above_diagonal = parts.attention[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]]
        if family in DECODERS:
            assert lm.info.causal and np.abs(above_diagonal).max() == 0
        else:
            assert not lm.info.causal and np.abs(above_diagonal).max() > 0


def test_what_a_model_lacks_is_refused_with_what_it_has(family_model):
    family, lm = family_model
    found = analysis.capabilities(lm)
    lens = {"lens", "masked"} & found.unavailable.keys()
    for missing, why in found.unavailable.items():
        assert why
        if missing in lens:
            continue
        kind = "stage" if missing in analysis.STAGES else "reference"
        has = ", ".join(found.stages if kind == "stage" else found.references)
        with pytest.raises(ValueError, match=re.escape(f"has no {kind} {missing!r}") + ".*" + re.escape(has)):
            analysis.analyze(lm, SEED_SENTENCE, **{kind: missing})
    expected_missing = set()
    if MID_NORM.get(family, "") is None or family in NORM_AFTER:  # no norm reads attn_residual
        expected_missing.add("attn_output")
    if family in {"deberta-v2", "modernbert", *ROTARY_OR_ALIBI}:
        expected_missing.add("position")
    assert set(found.unavailable) - lens == expected_missing
    if family in DECODERS and lm.hf_model.config.tie_word_embeddings:  # the head is the tied embedding table
        assert lens == {"masked"} and found.lens
    else:  # saved without a head, as a base model
        assert lens == {"lens", "masked"} and "holds no" in found.reason("lens")
    assert (found.original_demo is None) == (
        family in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "deberta-v2")
    )


def test_an_unrecognised_structure_names_what_is_missing(tmp_path):
    config = AutoConfig.for_model("bert", vocab_size=300, **{"hidden_size": 32, "num_hidden_layers": 2})
    config.num_attention_heads, config.intermediate_size = 4, 64
    hf_model = AutoModel.from_config(config)
    for block in hf_model.encoder.layer:
        del block.attention.output.dense
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    wordpiece_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(analysis.UnsupportedModelError, match=re.escape("'attention.output.dense') was not found")):
        analysis.wrap_model(hf_model, wordpiece_tokenizer(), "broken")


def test_an_encoder_decoder_model_is_refused(tmp_path):
    config = AutoConfig.for_model("t5", vocab_size=300, d_model=32, d_ff=64, num_layers=1, num_heads=4, d_kv=8)
    AutoModel.from_config(config).save_pretrained(tmp_path)
    wordpiece_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(analysis.UnsupportedModelError, match="encoder-decoder"):
        analysis.load_model(tmp_path)


def test_word_classes_and_chips_read_byte_level_and_sentencepiece_pieces(family_model):
    """Ġ and ▁ pieces: chips show the covered text, word classes follow the words the pieces spell."""
    _, lm = family_model
    result = analysis.analyze(lm, "Time flies like an arrow.", stage="layer_output", top_k=1, overlap_n=1)
    labels = token_labels(result)
    assert not any(marker in label for label in labels for marker in ("Ġ", "▁", "##"))
    classes = word_classes(result.tokens)
    spans = result.tokens[["char_start", "char_end"]].to_numpy()
    by_word = {word: set(classes[(spans[:, 0] < end) & (spans[:, 1] > start) & ~result.tokens["special"]])
               for word, (start, end) in {"flies": (5, 10), "like": (11, 15), "an": (16, 18)}.items()}  # fmt: skip
    assert by_word == {"flies": {"content"}, "like": {"function"}, "an": {"function"}}
    assert set(classes[result.tokens["special"]]) <= {"special"}


@pytest.mark.parametrize(
    ("model_type", "options", "kind", "references"),
    [
        ("gpt_neox", {"use_parallel_residual": False}, "pre_ln", ("raw", "embedding")),
        ("falcon", {"parallel_attn": False}, "pre_ln", ("raw", "embedding")),
        (
            "deberta-v2",
            {"position_biased_input": True, "type_vocab_size": 2},
            "post_ln",
            ("raw", "position", "embedding"),
        ),
    ],
)
def test_variants_read_from_their_config(model_type, options, kind, references):
    """GPT-NeoX without the parallel residual and Falcon without parallel attention are pre-LN blocks; DeBERTa-v2
    with absolute positions has them."""
    tokenizer_kind, shape = TINY_FAMILIES[model_type]
    tokenizer = byte_level_tokenizer() if tokenizer_kind == "byte_level_plain" else sentencepiece_tokenizer()
    lm = analysis.wrap_model(random_hf_model(model_type, {**shape, **options}, tokenizer), tokenizer, "variant")
    found = analysis.capabilities(lm)
    assert lm.info.block == kind and found.references == references and "attn_output" in found.stages
    tokens, layer_input = stage_vectors(lm, SEED_SENTENCE, "layer_input")
    embedding = vocabulary_scorer(lm, "embedding").references(
        torch.tensor(tokens.ids), torch.tensor(tokens.position_ids)
    )
    torch.testing.assert_close(embedding, layer_input[0])  # float32 defaults
    parts = analysis.decompose_heads(lm, SEED_SENTENCE, 1)
    assert np.abs(parts.reconstructed() - parts.attn_residual).max() <= 1e-4


def test_opt_350ms_form_is_read_with_its_projections(tmp_path):
    """Post-LN blocks, word rows projected in (positions added after), the output projected out before the head:
    exact against its own forward pass and logits (the self-check), with the raw reference alone."""
    tokenizer = byte_level_tokenizer()
    shape = {**TINY_FAMILIES["opt"][1], "word_embed_proj_dim": 16, "do_layer_norm_before": False}
    random_hf_model("opt", shape, tokenizer, head=True).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = analysis.load_model(str(tmp_path))
    found = analysis.capabilities(lm)
    assert lm.info.block == "post_ln" and lm.self_check.hidden <= 1e-4 and lm.self_check.logits <= 1e-4
    assert found.references == ("raw",) and "after projecting its word rows" in found.reason("embedding")
    assert [type(m).__name__ for m in lm.unembed] == ["Linear", "Linear"]  # project_out, then the head
    assert analysis.analyze(lm, SEED_SENTENCE).settings.reference == "raw"
    analysis.release_models()

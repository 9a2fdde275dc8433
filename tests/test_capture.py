"""Stage vectors and the per-head decomposition equal what the model itself computes."""

import numpy as np
import pytest
import torch

import analysis
from analysis.definitions import SEED_SENTENCE
from tests.hooks import installed_hooks, stage_vectors


def plain_hidden_states(lm, text):
    """hidden_states from an ordinary forward pass with no hooks: `[layers + 1, tokens, hidden]`."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        output = lm.hf_model(input_ids=ids, output_hidden_states=True)
    return torch.stack([h[0] for h in output.hidden_states])


def test_layer_input_and_output_are_the_models_hidden_states(lm):
    expected = plain_hidden_states(lm, SEED_SENTENCE)
    _, layer_input = stage_vectors(lm, SEED_SENTENCE, "layer_input")
    _, layer_output = stage_vectors(lm, SEED_SENTENCE, "layer_output")
    # Two forward passes (this one without explicit mask and position ids): float32's default tolerances
    # (rtol 1.3e-6, atol 1e-5) admit the last-bit differences another kernel choice could make.
    torch.testing.assert_close(layer_input, expected[:-1])
    torch.testing.assert_close(layer_output, expected[1:])


def test_attn_residual_feeds_the_rest_of_the_block(lm):
    """attn_residual = x + dense(self-attention(x)); LN of it is attn_output; the FFN of that is hidden_states[l+1]."""
    hidden = plain_hidden_states(lm, SEED_SENTENCE)
    _, residual = stage_vectors(lm, SEED_SENTENCE, "attn_residual")
    _, attn_output = stage_vectors(lm, SEED_SENTENCE, "attn_output")
    blocks = lm.hf_model.encoder.layer
    assert residual.shape == (len(blocks), hidden.shape[1], lm.hidden_size)
    # Each sublayer recomputed on its own in float32: float32's default tolerances (rtol 1.3e-6, atol 1e-5).
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            x = hidden[layer].unsqueeze(0)
            attention_delta = block.attention.output.dense(block.attention.self(x)[0])[0]
            torch.testing.assert_close(residual[layer], hidden[layer] + attention_delta)
            torch.testing.assert_close(attn_output[layer], block.attention.output.LayerNorm(residual[layer]))
            block_output = block.output(block.intermediate(attn_output[layer]), attn_output[layer])
            torch.testing.assert_close(block_output, hidden[layer + 1])


def test_attn_residual_is_the_attention_layernorms_input(lm):
    """Read independently of the package: a hook of the test's own on each attention LayerNorm."""
    seen = {}
    handles = [
        block.attention.output.LayerNorm.register_forward_pre_hook(
            lambda module, args, layer=layer: seen.__setitem__(layer, args[0][0].clone())
        )
        for layer, block in enumerate(lm.hf_model.encoder.layer)
    ]
    try:
        plain_hidden_states(lm, SEED_SENTENCE)
    finally:
        for handle in handles:
            handle.remove()
    _, residual = stage_vectors(lm, SEED_SENTENCE, "attn_residual")
    torch.testing.assert_close(residual, torch.stack([seen[i] for i in range(len(seen))]))  # float32 defaults


@pytest.mark.parametrize("layer", [0, 2])
def test_head_decomposition_adds_up_to_the_captured_vector(lm, layer):
    parts = analysis.decompose_heads(lm, SEED_SENTENCE, layer)
    tokens = len(parts.tokens)
    assert parts.head_contributions.shape == (lm.num_heads, tokens, lm.hidden_size)
    assert parts.attention.shape == (lm.num_heads, tokens, tokens)
    np.testing.assert_allclose(parts.attention.sum(-1), 1.0, atol=1e-5)  # a float32 softmax row: ~tokens * eps32
    # The decomposition is float64 arithmetic on the model's float32 inputs; the model computed attn_residual in
    # float32 through two products of `hidden` terms each, so they agree to float32 rounding of values up to ~10.
    assert np.abs(parts.reconstructed() - parts.attn_residual).max() <= 1e-4
    _, captured = stage_vectors(lm, SEED_SENTENCE, "attn_residual")
    torch.testing.assert_close(torch.from_numpy(parts.attn_residual).float(), captured[layer])  # float32 defaults
    np.testing.assert_allclose(parts.residual + parts.attention_delta(), parts.attn_residual, atol=1e-4)


def test_the_original_demos_value_and_output_products_do_not_add_up(minilm):
    """Demo error 1: untransposed value/output weights without biases are not what the model computes."""
    parts = analysis.decompose_heads(minilm, SEED_SENTENCE, 1)
    block = minilm.hf_model.encoder.layer[1]
    heads, head_dim = minilm.num_heads, minilm.hidden_size // minilm.num_heads
    value_weight = block.attention.self.value.weight.detach().double().numpy()
    out_weight = block.attention.output.dense.weight.detach().double().numpy()
    values = (parts.residual @ value_weight).reshape(len(parts.residual), heads, head_dim).transpose(1, 0, 2)
    demo_update = (parts.attention @ values).transpose(1, 0, 2).reshape(len(parts.residual), -1) @ out_weight
    assert np.abs(parts.residual + demo_update - parts.attn_residual).max() > 1e-2


def test_decompose_heads_rejects_a_layer_out_of_range(minilm):
    for layer in (-1, minilm.num_layers, "5", True):
        with pytest.raises(ValueError, match="layer must be a whole number from 0 to 5"):
            analysis.decompose_heads(minilm, SEED_SENTENCE, layer)


def test_hooks_are_removed_after_each_call(lm):
    plain_hidden_states(lm, SEED_SENTENCE)
    before = installed_hooks(lm)
    analysis.decompose_heads(lm, SEED_SENTENCE, 0)
    analysis.analyze(lm, SEED_SENTENCE, stage="attn_output")
    assert installed_hooks(lm) == before


def same_run(mine: analysis.AnalysisResult, theirs: analysis.AnalysisResult) -> None:
    """Two analyses of the same forward pass: vectors and cosines within float32 rounding, ranks and neighbours
    equal."""
    np.testing.assert_allclose(mine.vectors, theirs.vectors, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mine.metrics["cosine"], theirs.metrics["cosine"], rtol=0, atol=1e-6)
    assert mine.metrics["rank"].tolist() == theirs.metrics["rank"].tolist()
    assert mine.neighbors["neighbor_id"].tolist() == theirs.neighbors["neighbor_id"].tolist()


def test_every_reader_of_one_trace_gives_what_it_gives_from_the_text(lm):
    """One forward pass serves `analyze` at every stage, the head decomposition and the original demo: each equals
    the same reader run on the text itself (its own pass)."""
    from analysis.capture.heads import decompose_heads
    from analysis.capture.trace import EXTRAS, available_points, trace

    calls = []
    handle = lm.hf_model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        run = trace(lm, SEED_SENTENCE, available_points(lm, EXTRAS))
    finally:
        handle.remove()
    assert len(calls) == 1 and run.points == {*analysis.STAGES, *EXTRAS}
    for stage in analysis.STAGES:
        from_trace = analysis.analyze(lm, run, stage=stage, top_k=3, overlap_n=5)
        alone = analysis.analyze(lm, SEED_SENTENCE, stage=stage, top_k=3, overlap_n=5)
        same_run(from_trace, alone)
    for layer in (0, lm.num_layers - 1):
        mine, theirs = decompose_heads(lm, run, layer), decompose_heads(lm, SEED_SENTENCE, layer)
        np.testing.assert_allclose(mine.head_contributions, theirs.head_contributions, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mine.attention, theirs.attention, rtol=1e-6, atol=1e-7)
    if lm.structure.kind == "post_ln":
        same_run(analysis.original_demo(lm, run), analysis.original_demo(lm, SEED_SENTENCE))
    plain = trace(lm, SEED_SENTENCE, ["layer_output"])
    with pytest.raises(ValueError, match=r"did not record attn_residual \(it holds layer_output\)"):
        analysis.analyze(lm, plain, stage="attn_residual")
    with pytest.raises(ValueError, match="did not record layer_input, attn_residual, attention, head_context"):
        decompose_heads(lm, plain, 0)

"""Spike scores, head attribution, attention-sink shares, outlier dimensions, CKA and the corpus check."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from analysis.capture.heads import attention_shares, attribute_heads, outlier_dimensions
from analysis.corpus.counts import corpus_spikes, wilson_interval
from analysis.data import corpus_sentences
from analysis.definitions import SEED_SENTENCE
from analysis.report.compare import SUMMARY_COLUMNS, cka_matrix, linear_cka, model_summary, word_vectors
from analysis.scoring.references import own_references
from analysis.spikes import spike_shares, token_spikes, top_spike_layer
from analysis.wordclass import word_classes


def metrics_from_ranks(ranks: dict[str, list[int]]) -> pd.DataFrame:
    rows = [
        {"layer": layer, "position": position, "token": token, "text": token, "special": False, "rank": rank}
        for position, (token, by_layer) in enumerate(ranks.items())
        for layer, rank in enumerate(by_layer)
    ]
    return pd.DataFrame(rows)


def test_spike_share_by_hand():
    metrics = metrics_from_ranks(
        {
            "a": [1, 20, 1, 1],  # spikes at layer 1: 20 >= 10 x 1 on both sides
            "b": [1, 5, 1, 1],  # 5 < 10: no spike
            "c": [50, 2, 2, 2],  # spikes at layer 0 (its own embedding, rank 1, stands before layer 0)
            "d": [1, 1, 9, 900],  # the last layer never spikes: nothing follows it
        }
    )
    spikes = token_spikes(metrics)
    assert spikes.loc[spikes["spike"], ["layer", "token"]].values.tolist() == [[0, "c"], [1, "a"]]
    shares = spike_shares(metrics)
    assert shares["share"].tolist()[:3] == [0.25, 0.25, 0.0]
    assert np.isnan(shares["share"].iloc[-1])
    assert top_spike_layer(metrics) == 0  # ties go to the earliest layer
    row = spikes[(spikes["layer"] == 1) & (spikes["token"] == "a")].iloc[0]
    assert (row["rank_before"], row["rank"], row["rank_after"]) == (1, 20, 1)


@pytest.mark.parametrize("layer", [0, 2])
def test_head_attribution_adds_up_to_the_change_in_cosine(lm, layer):
    parts = analysis.decompose_heads(lm, SEED_SENTENCE, layer)
    split = attribute_heads(parts, own_references(lm, parts.tokens, "position"))
    assert split.per_head.shape == (lm.num_heads, len(parts.tokens))
    # The split is float64 arithmetic; `total` uses the model's float32 attn_residual, the parts its float64
    # recomputation, which agree to float32 rounding (see test_head_decomposition_adds_up_to_the_captured_vector).
    np.testing.assert_allclose(split.per_head.sum(0) + split.bias + split.rescaling, split.total, atol=1e-4)
    residual = analysis.analyze(lm, SEED_SENTENCE, stage="attn_residual", reference="position")
    block_input = analysis.analyze(lm, SEED_SENTENCE, stage="layer_input", reference="position")
    after = residual.metrics[residual.metrics["layer"] == layer]["cosine"].to_numpy()
    before = block_input.metrics[block_input.metrics["layer"] == layer]["cosine"].to_numpy()
    np.testing.assert_allclose(split.total, after - before, atol=1e-4)


def test_attention_sink_shares_are_the_models_own_attention_mass_per_group(lm):
    """Each head's share of attention on each group of key tokens, against the attention weights the model
    returns itself (`output_attentions`), summed over the group's keys and averaged over the queries."""
    parts = analysis.decompose_heads(lm, SEED_SENTENCE, 1)
    classes = word_classes(parts.tokens)
    groups = classes.where(classes.isin(["special", "punctuation"]), "other")
    shares = attention_shares(parts, groups)
    assert list(shares.index) == list(range(lm.num_heads))
    assert set(shares.columns) == {"special", "punctuation", "other"}
    encoded = lm.tokenizer(SEED_SENTENCE, return_tensors="pt")
    with torch.inference_mode():
        own = lm.hf_model(**encoded, output_attentions=True).attentions[1][0].double().numpy()  # [heads, q, k]
    for group in shares.columns:
        keys = (groups == group).to_numpy()
        np.testing.assert_allclose(shares[group], own[:, :, keys].sum(-1).mean(-1), rtol=1e-5, atol=1e-7)


def test_outlier_dimensions_find_the_dimension_that_carries_the_change():
    vectors = np.zeros((3, 4, 6))
    vectors[2, :, 2] = 5.0  # everything that changes into layer 2 is dimension 2
    vectors[2, :, 4] = 1.0
    vectors[1, :, 0] = 1.0
    table = outlier_dimensions(vectors, 2, top=3)
    assert table["dimension"].tolist()[:2] == [2, 4]
    assert table.iloc[0, 1] == pytest.approx(25 / 27)  # changes 5, 1 and -1 (dimension 0)
    assert table.iloc[:, 1].sum() <= 1 + 1e-12
    with pytest.raises(ValueError, match="needs layers"):
        outlier_dimensions(vectors, 0)


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0)  # invariant to rotation, scale, shift
    assert 0 <= linear_cka(x, rng.normal(size=(40, 5))) < 0.5


def test_a_model_against_itself_gives_one_on_the_cka_diagonal(lm):
    result = analysis.analyze(lm, SEED_SENTENCE)
    matrix = cka_matrix(result, result, SEED_SENTENCE)
    assert matrix.shape == (lm.num_layers, lm.num_layers)
    # CKA is computed in float64 (from float32 vectors): the ratio of two equal float64 sums is 1 to ~1e-15.
    np.testing.assert_allclose(np.diag(matrix), 1.0, rtol=1e-12)
    assert ((matrix.to_numpy() >= -1e-9) & (matrix.to_numpy() <= 1 + 1e-9)).all()


def test_cka_across_tokenizers_compares_words(minilm, tiny_roberta):
    bert = analysis.analyze(minilm, SEED_SENTENCE)
    roberta = analysis.analyze(tiny_roberta, SEED_SENTENCE)
    words, pooled = word_vectors(roberta, SEED_SENTENCE)
    assert len(words) == 12  # Time flies like an arrow . Fruit flies like a banana .
    token_vectors = roberta.vectors[:, roberta.tokens["text"].eq("Time").to_numpy()]
    np.testing.assert_allclose(pooled[:, 0], token_vectors.mean(1), rtol=1e-6)  # float32 means of the same rows
    assert cka_matrix(bert, roberta, SEED_SENTENCE).shape == (6, 3)


def test_model_summary_names_its_parts(minilm):
    """The final ranks are the medians of each word class's ranks at the last layer, and the drift the mean fall
    of a token's cosine from layer 0 to the last, read token by token from the metrics."""
    result = analysis.analyze(minilm, SEED_SENTENCE)
    summary = model_summary(result, "1: all-MiniLM-L6-v2")
    assert list(summary) == list(SUMMARY_COLUMNS) and summary["model"] == "1: all-MiniLM-L6-v2"
    assert summary["layers"] == 6
    classes = word_classes(result.tokens)
    by_cell = {(row.layer, row.position): row for row in result.metrics.itertuples()}
    for word_class in ("function", "content"):
        ranks = [by_cell[(5, position)].rank for position in classes.index[classes == word_class]]
        assert summary[f"final rank, {word_class}"] == float(np.median(ranks))
    falls = [by_cell[(0, p)].cosine - by_cell[(5, p)].cosine for p in result.tokens["position"]]
    assert summary["drift"] == pytest.approx(sum(falls) / len(falls), abs=5e-5)  # rounded to 4 decimals


def test_model_summary_names_the_spike_layers_with_their_shares(minilm):
    """The spike layers are listed with their shares whenever something spikes (the seed sentence on MiniLM does
    not: its ranks are replaced here by hand, so layers 0 and 1 each have one spiking token of four)."""
    result = analysis.analyze(minilm, "Time flies.")  # [CLS] time flies . [SEP]: five tokens, six layers
    spiking = {(1, 1): 40, (2, 2): 60}  # (layer, position): rank, each 10x its neighbours' rank 1
    ranks = [
        spiking.get((layer, position), 1)
        for layer, position in zip(result.metrics["layer"], result.metrics["position"], strict=True)
    ]
    result = dataclasses.replace(result, metrics=result.metrics.assign(rank=ranks))
    assert model_summary(result, "1: x")["spike layers"] == "1 (20%), 2 (20%)"


def test_the_corpus_has_over_a_hundred_distinct_sentences():
    sentences = corpus_sentences()
    assert len(sentences) >= 100 and len(set(sentences)) == len(sentences)
    assert all(sentence[0].isupper() and sentence[-1] in ".?!" for sentence in sentences)


def test_wilson_interval_known_values():
    low, high = wilson_interval(np.array([5, 0]), np.array([10, 20]))
    assert low[0] == pytest.approx(0.2366, abs=1e-4) and high[0] == pytest.approx(0.7634, abs=1e-4)
    assert low[1] == 0 and high[1] == pytest.approx(0.1611, abs=1e-4)


def test_corpus_spikes_count_every_token_once_per_layer(tiny_roberta):
    sentences = corpus_sentences()[:6]
    seen = []
    table = corpus_spikes(tiny_roberta, sentences, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6)
    n_tokens = sum(len(analysis.analyze(tiny_roberta, s, top_k=1, overlap_n=1).tokens) for s in sentences)
    per_layer = table.groupby("layer")["tokens"].sum()
    assert list(per_layer.index) == list(range(tiny_roberta.num_layers - 1))
    assert (per_layer == n_tokens).all()
    assert ((table["low"] <= table["share"]) & (table["share"] <= table["high"])).all()

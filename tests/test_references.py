"""The algebraic vocabulary cosines equal cosines against explicitly materialised references."""

import numpy as np
import pytest
import torch

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.scoring.references import vocabulary_scorer
from tests.hooks import stage_vectors
from tests.numerics import COSINE32


def materialised_cosine(scorer, vectors, position_ids):
    """Naive: build every reference row for each position and take cosines: `[groups, positions, vocab]`."""
    vocab = scorer.word.shape[0]
    columns = []
    for p, position_id in enumerate(position_ids.tolist()):
        refs = scorer.references(torch.arange(vocab), torch.full((vocab,), position_id))
        columns.append(torch.nn.functional.cosine_similarity(vectors[:, p, None, :], refs[None], dim=-1))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("reference", list(analysis.REFERENCES))
def test_algebraic_cosine_equals_materialised_references(lm, reference):
    tokens, vectors = stage_vectors(lm, SEED_SENTENCE, "attn_residual")
    positions = torch.tensor(tokens.position_ids[:5])
    sample = vectors[[0, -1], :5]
    scorer = vocabulary_scorer(lm, reference)
    with torch.inference_mode():
        fast = scorer.cosine(sample.clone(), positions)
        slow = materialised_cosine(scorer, sample, positions)
    # Two float32 routes to the same cosine (algebraic vs materialised): see tests/numerics.py for COSINE32.
    torch.testing.assert_close(fast, slow, rtol=0, atol=COSINE32)


def test_position_reference_uses_each_tokens_own_position(tiny_roberta):
    """Demo error 2: the position-0 embedding must not stand in for every position (RoBERTa offset 2)."""
    scorer = vocabulary_scorer(tiny_roberta, "position")
    ids = torch.tensor([7, 7])
    refs = scorer.references(ids, torch.tensor([2, 5]))
    position_table = tiny_roberta.hf_model.embeddings.position_embeddings.weight
    type_row = tiny_roberta.hf_model.embeddings.token_type_embeddings.weight[0]
    word = tiny_roberta.hf_model.embeddings.word_embeddings.weight[7]
    torch.testing.assert_close(refs[1], word + position_table[5] + type_row)
    assert not torch.allclose(refs[0], refs[1])


def test_embedding_reference_is_the_embedding_layers_output(lm):
    """With reference `embedding`, layer 0's input is its own reference: cosine 1, rank 1, full overlap."""
    result = analysis.analyze(lm, SEED_SENTENCE, stage="layer_input", reference="embedding", overlap_n=20)
    first = result.metrics[result.metrics.layer == 0]
    # The own cosine is computed in float64 from the model's float32 vector: the embedding layer summed the same
    # rows in another order, so the two vectors differ by float32 rounding, and the cosine is 1 to ~1e-12.
    np.testing.assert_allclose(first["cosine"], 1.0, rtol=0, atol=1e-12)
    assert (first["rank"] == 1).all()
    assert (result.overlap[result.overlap.layer == 0]["reference"] == 20).all()


def test_raw_rows_are_not_the_embedding_output(minilm):
    """Demo error 3: hidden_states[0] includes position, type and LayerNorm, so raw rows do not match it."""
    result = analysis.analyze(minilm, SEED_SENTENCE, stage="layer_input", reference="raw")
    embedded = analysis.analyze(minilm, SEED_SENTENCE, stage="layer_input", reference="embedding")
    rows = minilm.structure.embeddings.word.weight.detach().double().numpy()[result.tokens["token_id"]]
    vectors = result.vectors[0].astype(np.float64)  # hidden_states[0]: word + position + type rows, LayerNorm'd
    by_hand = (vectors * rows).sum(-1) / np.linalg.norm(vectors, axis=-1) / np.linalg.norm(rows, axis=-1)
    at_zero = result.metrics[result.metrics.layer == 0]["cosine"].to_numpy()
    np.testing.assert_allclose(at_zero, by_hand, rtol=0, atol=1e-6)  # float32 vectors, float64 arithmetic
    assert at_zero.max() < 0.99 < embedded.metrics[embedded.metrics.layer == 0]["cosine"].min()

"""Rank, top-k and overlap definitions on a hand-built vocabulary whose answers are worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.model.architectures import EmbeddingParts
from analysis.scoring import ranks
from analysis.scoring.geometry import PLAIN
from analysis.scoring.ranks import MapScorer, overlap_counts, own_rank, score_tokens
from analysis.scoring.references import VocabularyScorer, vocabulary_scorer
from tests.numerics import assert_top_ids_consistent, exact_cosines, exact_references, rank_bounds

# Six vocabulary rows in 3-D.
WORDS = torch.tensor(
    [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [-1, 0, 0]],
)


def hand_built_scorer() -> VocabularyScorer:
    parts = EmbeddingParts(
        word=nn.Embedding.from_pretrained(WORDS),
        position=nn.Embedding.from_pretrained(torch.zeros(4, 3)),
        token_type=None,
        norm=nn.LayerNorm(3),
        position_offset=0,
        ids_offset=0,
        projection=None,
    )
    return VocabularyScorer(parts, "raw")


def test_rank_topk_and_overlap_by_hand():
    # Token id 0 at one position, seen at two layers.
    # Layer 0: v = (1, .5, 0): cos e3 = .949, e0 = .894, e4 = .632, e1 = .447, e2 = 0, e5 = -.894 -> rank 2.
    # Layer 1: v = (0, 1, .2): cos e1 = .981, e3 = .693, e2 = .196, e4 = .139, e0 = e5 = 0 -> rank 5.
    vectors = torch.tensor([[[1.0, 0.5, 0.0]], [[0.0, 1.0, 0.2]]])
    scorer = hand_built_scorer()
    (scores,) = score_tokens(scorer, [(vectors, MapScorer(scorer, PLAIN))], torch.tensor([0]), torch.tensor([0]), k=3)
    assert scores.rank[:, 0].tolist() == [2, 5]
    assert scores.cosine[0, 0].item() == pytest.approx(1 / math.sqrt(1.25), abs=1e-6)
    assert scores.top_ids[0, 0].tolist() == [3, 0, 4]
    assert scores.top_ids[1, 0].tolist() == [1, 3, 2]
    assert overlap_counts(scores.top_ids[1], scores.top_ids[0]).tolist() == [1]


def test_ties_do_not_push_the_rank_down():
    cosines = torch.tensor([[[0.1, 0.9, 0.5, 0.9]]])
    own, rank = own_rank(cosines.clone(), torch.tensor([1]))
    assert rank.item() == 1 and own.item() == pytest.approx(0.9)
    _, rank = own_rank(cosines.clone(), torch.tensor([2]))
    assert rank.item() == 3


@pytest.mark.parametrize(
    ("shape", "k"),
    [((41, 50_257), 10), ((2, 3, 50_265), 5), ((4, 30_522), 1), ((3, 30_522), 120), ((5, 1_000), 10), ((7,), 3)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_is_torch_topk(shape, k, ties):
    """`top_k` (segments first, then the few that can hold the k largest) gives torch.topk's values, largest first,
    with ids that hold them: the same ids where no two scores are equal; with ties (scores rounded to a coarse
    grid, some -inf) k distinct ids whose scores are those values."""
    generator = torch.Generator().manual_seed(len(shape) * 1000 + k)
    scores = torch.randn(shape, generator=generator) * 4
    if ties:
        scores = scores.round()
        scores.view(-1)[::7] = -torch.inf
    values, ids = ranks.top_k(scores, k)
    expected = torch.topk(scores, k, dim=-1)
    assert torch.equal(values, expected.values)
    assert torch.equal(scores.gather(-1, ids), values)
    assert (ids.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct items per row
    if not ties:
        assert torch.equal(ids, expected.indices)


def test_top_k_reads_a_view_into_a_workspace_in_place():
    """Score blocks are views into a reused workspace (`[groups, tokens, vocab]` with fewer tokens than it holds):
    `top_k` reads them where they are, never as a copy of the block."""
    workspace = torch.randn(2, 9, 50_257, generator=torch.Generator().manual_seed(1))
    block = workspace[:, :4]
    assert not block.is_contiguous()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        values, ids = ranks.top_k(block, 10)
    allocated = sum(event.cpu_memory_usage for event in profile.events() if event.cpu_memory_usage > 0)
    assert allocated < block.numel() * block.element_size() / 4  # a copy of the block would be 1.6 MB
    expected = torch.topk(block, 10, dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices)


def test_overlap_counts_shared_ids():
    a = torch.tensor([[1, 2, 3], [4, 5, 6]])
    b = torch.tensor([[3, 9, 1], [7, 8, 9]])
    assert overlap_counts(a, b).tolist() == [2, 0]


def test_position_blocks_give_the_same_result_as_one_block(tiny_roberta, monkeypatch):
    whole = analysis.analyze(tiny_roberta, SEED_SENTENCE, reference="embedding")
    monkeypatch.setattr(ranks, "SCORE_BLOCK_BYTES", 1)  # one position per block
    blocked = analysis.analyze(tiny_roberta, SEED_SENTENCE, reference="embedding")
    # Matrix products of another shape may round the last float32 bit differently, so ranks and neighbours are
    # checked against exact float64 cosines (each allowed only float32's ambiguity), not against each other.
    scorer = vocabulary_scorer(tiny_roberta, "embedding")
    for result in (whole, blocked):
        for row in result.metrics.itertuples():
            position_id = row.position + tiny_roberta.structure.embeddings.position_offset
            cos = exact_cosines(result.vectors[row.layer, row.position], exact_references(scorer, position_id))
            low, high = rank_bounds(cos, row.token_id)
            assert low <= row.rank <= high
            top = result.neighbors[(result.neighbors.layer == row.layer) & (result.neighbors.position == row.position)]
            assert_top_ids_consistent(top["neighbor_id"].tolist(), cos)
    # The stage vectors and the float64 own cosines do not depend on the scoring blocks at all.
    np.testing.assert_array_equal(whole.vectors, blocked.vectors)
    pd.testing.assert_series_equal(whole.metrics["cosine"], blocked.metrics["cosine"])

"""analyze(): tidy tables, 1-based ranks checked against a naive argsort, truncation, bad input."""

import threading

import numpy as np
import pytest

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.scoring.references import vocabulary_scorer
from tests.hooks import installed_hooks
from tests.numerics import COSINE32, assert_top_ids_consistent, exact_cosines, exact_references, rank_bounds


def test_tables_have_the_documented_shape(lm):
    result = analysis.analyze(lm, SEED_SENTENCE, top_k=5, overlap_n=10)
    n_tokens = len(result.tokens)
    rows = lm.num_layers * n_tokens
    assert list(result.metrics.columns) == [
        "layer",
        "position",
        "token",
        "token_id",
        "text",
        "special",
        "cosine",
        "rank",
    ]
    assert len(result.metrics) == rows and len(result.overlap) == rows
    assert len(result.neighbors) == rows * 5
    assert result.vectors.shape == (lm.num_layers, n_tokens, lm.hidden_size)
    assert result.metrics["rank"].min() >= 1
    assert result.metrics["rank"].max() <= lm.vocab_size
    assert result.overlap["previous"].isna().sum() == n_tokens  # layer 0 has no previous layer
    assert not result.truncated and result.n_tokens_in_text == n_tokens
    assert result.tokens["special"].iloc[0] and result.tokens["special"].iloc[-1]
    assert "".join(result.tokens["text"][~result.tokens["special"]]).replace(" ", "") == SEED_SENTENCE.replace(" ", "")


def test_rank_is_one_based_and_matches_a_naive_argsort(lm):
    """Demo error 4: rank 1 = the own embedding is the nearest, the same in every table. Checked against every
    vocabulary reference materialised in float64; ranks may differ only where float32 cannot tell items apart."""
    result = analysis.analyze(lm, SEED_SENTENCE, stage="attn_output", reference="position")
    scorer = vocabulary_scorer(lm, "position")
    for layer in (0, lm.num_layers - 1):
        for position in (0, 3, len(result.tokens) - 1):
            row = result.metrics[(result.metrics.layer == layer) & (result.metrics.position == position)].iloc[0]
            position_id = position + lm.structure.embeddings.position_offset
            cos = exact_cosines(result.vectors[layer, position], exact_references(scorer, position_id))
            low, high = rank_bounds(cos, row["token_id"])
            assert low <= row["rank"] <= high
            # float64 references and float32 stage vectors: the displayed cosine is exact to ~1e-15.
            assert row["cosine"] == pytest.approx(cos[row["token_id"]], abs=1e-12)
            top = result.neighbors[(result.neighbors.layer == layer) & (result.neighbors.position == position)]
            assert_top_ids_consistent(top["neighbor_id"].tolist(), cos)
            np.testing.assert_allclose(top["cosine"], cos[top["neighbor_id"]], rtol=0, atol=COSINE32)


def test_overlap_counts_agree_with_the_neighbour_table(minilm):
    result = analysis.analyze(minilm, SEED_SENTENCE, top_k=20, overlap_n=20)
    neighbours = result.neighbors.groupby(["layer", "position"])["neighbor_id"].apply(set)
    for row in result.overlap[result.overlap.layer > 0].itertuples():
        shared = neighbours[(row.layer, row.position)] & neighbours[(row.layer - 1, row.position)]
        assert row.previous == len(shared)


def test_neighbours_mark_the_own_token(minilm):
    result = analysis.analyze(minilm, SEED_SENTENCE, stage="layer_input", reference="embedding", top_k=3)
    first = result.neighbors[(result.neighbors.layer == 0) & (result.neighbors.neighbor_rank == 1)]
    assert first["is_own"].all()
    assert (first["neighbor"] == first["token"]).all()


def test_long_text_is_truncated_and_says_where(minilm):
    text = " ".join(["word"] * 600) + " tail"
    result = analysis.analyze(minilm, text, top_k=3, overlap_n=3)
    assert result.truncated
    assert len(result.tokens) == minilm.max_tokens == 512
    assert result.n_tokens_in_text == 603
    assert result.truncated_at_char == len("word ") * 510 - 1
    assert result.provenance["truncated"] is True


def test_counts_past_the_vocabulary_are_refused_and_the_whole_vocabulary_is_allowed(tiny_roberta):
    """Asking for more neighbours than the vocabulary holds is refused, never cut silently (1e9 asked for 41.9 GB);
    the whole vocabulary is a valid count."""
    vocabulary = tiny_roberta.vocab_size
    for counts in ({"top_k": vocabulary + 1}, {"overlap_n": 10_000}):
        with pytest.raises(ValueError, match=f"more than the {vocabulary} vocabulary items of tiny-roberta"):
            analysis.analyze(tiny_roberta, SEED_SENTENCE, **counts)
    result = analysis.analyze(tiny_roberta, SEED_SENTENCE, top_k=vocabulary, overlap_n=vocabulary)
    assert result.neighbors.groupby(["layer", "position"]).size().max() == vocabulary
    assert (result.overlap["reference"] == vocabulary).all()  # the whole vocabulary shares itself


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "text is empty"),
        ({"text": " \n\t "}, "text is empty"),
        ({"text": None}, "must be a string"),
        ({"stage": "attention"}, "Unknown stage 'attention': choose one of layer_input"),
        ({"reference": "original"}, "Unknown reference 'original': choose one of raw"),
        ({"top_k": 0}, "top_k must be a whole number of at least 1"),
        ({"overlap_n": -5}, "overlap_n must be a whole number"),
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"overlap_n": True}, "overlap_n must be a whole number"),
    ],
)
def test_bad_input_gives_a_clear_value_error(minilm, kwargs, message):
    arguments = {"text": SEED_SENTENCE, **kwargs}
    with pytest.raises(ValueError, match=message):
        analysis.analyze(minilm, **arguments)


def test_a_model_name_instead_of_a_loaded_model_is_refused_clearly():
    with pytest.raises(TypeError, match=r"needs a model from analysis.load_model\(name\)"):
        analysis.analyze("roberta-base", SEED_SENTENCE)


def test_text_of_only_control_characters_is_refused(minilm):
    with pytest.raises(ValueError, match="no tokens the model can read"):
        analysis.analyze(minilm, "\x00\x01\x02")


def test_concurrent_calls_equal_serial_calls(minilm):
    texts = [SEED_SENTENCE, "The cat sat on the mat.", "Why layer five?", "A period. A comma, too."]
    settings = [("attn_residual", "position"), ("layer_output", "embedding")]
    serial = {(t, s): analysis.analyze(minilm, t, stage=s[0], reference=s[1]) for t in texts for s in settings}
    heads_serial = analysis.decompose_heads(minilm, SEED_SENTENCE, 3)
    hooks_before = installed_hooks(minilm)
    results, errors = {}, []

    def work(index):
        try:
            for text in texts[index % 2 :] + texts[: index % 2]:
                for stage, reference in settings:
                    results[(index, text, stage)] = analysis.analyze(minilm, text, stage=stage, reference=reference)
            results[(index, "heads")] = analysis.decompose_heads(minilm, SEED_SENTENCE, 3)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    # Each thread runs the same code path on the same shapes (same kernels, same summation order): the same bits.
    for index in range(6):
        for text in texts:
            for stage, reference in settings:
                got = results[(index, text, stage)]
                assert got.metrics.equals(serial[(text, (stage, reference))].metrics)
                assert got.neighbors.equals(serial[(text, (stage, reference))].neighbors)
        np.testing.assert_array_equal(results[(index, "heads")].head_contributions, heads_serial.head_contributions)
    assert installed_hooks(minilm) == hooks_before

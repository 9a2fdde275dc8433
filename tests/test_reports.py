"""The pages' reports: pure functions from results to ready-to-draw frames, tested without Streamlit."""

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.capture.heads import attribute_heads
from analysis.definitions import SEED_SENTENCE
from analysis.tables import (
    baseline_table,
    comparison_report,
    layer_report,
    layernorm_table,
    opening_layer,
    rogue_table,
)
from analysis.wordclass import word_classes
from tests.test_deepdive import metrics_from_ranks


def test_the_deep_dive_opens_on_the_top_spike_layer_or_says_why_not():
    spiking = metrics_from_ranks({"a": [1, 20, 1, 1], "b": [1, 1, 1, 1]})
    assert opening_layer(spiking) == (1, None)
    # No spikes: layer 2 has the largest median change (|40 - 1| and |2 - 1| -> 20.5); layer 3 the same median
    # as layer 1 (0.5), so only the median decides here.
    calm = metrics_from_ranks({"a": [1, 1, 40, 40], "b": [1, 2, 1, 2]})
    layer, why = opening_layer(calm)
    assert layer == 2 and "opened on layer 2" in why
    assert why.endswith("the typical token moves 20 places (the median), 20.0 on average.")  # (39 + 1) / 2
    # Equal medians everywhere: the larger mean change wins, and the sentence says most tokens keep their rank.
    tied = metrics_from_ranks({"a": [1, 1, 1, 1], "b": [1, 1, 1, 1], "c": [1, 1, 9, 9]})
    layer, why = opening_layer(tied)
    assert layer == 2 and why.endswith("2.7 places on average, though most tokens keep their rank.")  # 8 / 3
    # Nothing moves at all: the first layer, and a sentence that says so instead of "0.0 places on average".
    still = metrics_from_ranks({"a": [1, 1, 1], "b": [1, 1, 1]})
    layer, why = opening_layer(still)
    assert layer == 0 and "No token of this text changes rank at any layer" in why and "places" not in why


@pytest.fixture(scope="module")
def seed_result(request):
    return analysis.analyze(request.getfixturevalue("minilm"), SEED_SENTENCE, reference="position")


def test_layer_report_lays_out_the_layers_decomposition(minilm, seed_result):
    parts = analysis.decompose_heads(minilm, SEED_SENTENCE, 2)
    attribution = attribute_heads(parts, seed_result.own_references.astype(np.float64))
    report = layer_report(seed_result, word_classes(seed_result.tokens), parts, attribution)
    n_tokens = len(seed_result.tokens)
    assert report.layer == 2 and len(report.leaps) == n_tokens
    assert {"rank at layer 1", "rank at layer 2", "rank at layer 3", "word class"} <= set(report.leaps.columns)
    assert report.leap_summary.startswith(f"0 of {n_tokens} tokens spike at layer 2")
    by_part = report.attribution.pivot(index="token", columns="part", values="change in cosine")
    parts_sum = by_part[[f"head {h}" for h in range(minilm.num_heads)] + ["output bias", "rescaling"]].sum(axis=1)
    np.testing.assert_allclose(parts_sum, by_part["total"], atol=1e-4)  # float32 attn_residual vs float64 parts
    np.testing.assert_allclose(report.norms["residual"], np.linalg.norm(parts.residual, axis=-1))
    assert report.sink_shares.groupby("head")["share"].sum().to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert report.outliers is not None and len(report.outliers) == 8
    first = layer_report(seed_result, word_classes(seed_result.tokens), *_heads(minilm, seed_result, 0))
    assert first.outliers is None


def _heads(lm, result, layer):
    parts = analysis.decompose_heads(lm, SEED_SENTENCE, layer)
    return parts, attribute_heads(parts, result.own_references.astype(np.float64))


def test_the_layernorm_table_pairs_before_and_after(minilm):
    before = analysis.analyze(minilm, SEED_SENTENCE, stage="attn_residual")
    after = analysis.analyze(minilm, SEED_SENTENCE, stage="attn_output")
    table = layernorm_table(before, after, 3)
    assert len(table) == len(before.tokens)
    at_three = before.metrics[before.metrics["layer"] == 3]
    np.testing.assert_array_equal(table["rank before LayerNorm"], at_three["rank"])


def test_baseline_and_rogue_tables_add_up(minilm, seed_result):
    background = analysis.background(minilm, "attn_residual", "position")
    baseline = baseline_table(background, seed_result)
    assert list(baseline["layer"]) == list(range(minilm.num_layers))
    np.testing.assert_array_equal(baseline["anisotropy baseline"], background.vectors.anisotropy)
    words = seed_result.metrics[~seed_result.metrics["special"]]
    at_two = words[words["layer"] == 2]["cosine"]
    assert baseline.loc[2, "median token cosine"] == pytest.approx(at_two.median())
    assert baseline.loc[2, "share of tokens above the baseline"] == pytest.approx(
        (at_two > background.vectors.anisotropy[2]).mean()
    )
    every = rogue_table(background, seed_result, 2, [3, 6], top=minilm.hidden_size)
    at_two = seed_result.metrics[seed_result.metrics["layer"] == 2].set_index("position")["cosine"]
    for position, column in ((3, "share of the cosine of 3 · like"), (6, "share of the cosine of 6 · .")):
        # a dimension's share times the token's cosine (the analysis's own, in float64) is that dimension's term of
        # the cosine: v_d r_d / (|v| |r|), from the raw vectors
        v = seed_result.vectors[2, position].astype(np.float64)
        r = seed_result.own_references[position].astype(np.float64)
        terms = v[every["dimension"]] * r[every["dimension"]] / (np.linalg.norm(v) * np.linalg.norm(r))
        np.testing.assert_allclose(every[column] * at_two[position], terms, rtol=1e-6, atol=1e-9)
    top = rogue_table(background, seed_result, 2, [3], top=3)
    assert top["dimension"].tolist() == background.vectors.rogue_order[2, :3].tolist()


def test_comparison_report_of_a_model_with_itself(seed_result):
    comparison = comparison_report(seed_result, seed_result, SEED_SENTENCE)
    assert comparison.same_tokens and comparison.cka_note is None
    assert list(comparison.summary["layers"]) == [6, 6]
    diagonal = comparison.cka_cells[
        comparison.cka_cells["first model layer"] == comparison.cka_cells["second model layer"]
    ]
    np.testing.assert_allclose(diagonal["CKA"], 1.0, rtol=1e-12)
    assert (comparison.best_match.iloc[:, 1] == comparison.best_match.iloc[:, 0]).all()
    short = comparison_report(seed_result, seed_result, "Hi")
    assert short.cka_cells is None and "at least three words" in short.cka_note
    assert isinstance(short.summary, pd.DataFrame)


def test_the_skipped_note_counts_names_and_caps_the_texts():
    from analysis.tables import skipped_note

    assert skipped_note([1]).endswith("and was skipped (text 2).")
    assert skipped_note([0, 4]).startswith("2 texts have no token") and skipped_note([0, 4]).endswith("(texts 1, 5).")
    assert skipped_note(list(range(30)), listed=3).endswith("(texts 1, 2, 3, …).")

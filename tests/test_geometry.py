"""Geometry controls and the original demo's computation, each against an explicit float64 computation."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from analysis.__main__ import main as cli_main
from analysis.capture.tokens import length_batches, tokenize_all
from analysis.capture.trace import trace_tokens
from analysis.corpus.counts import corpus_spikes, shares_from_counts
from analysis.corpus.verdict import spike_verdict, top_layer, verdict_summary
from analysis.data import corpus_sentences
from analysis.definitions import GEOMETRIES, METHODS, SEED_SENTENCE, VERDICT_COLUMNS
from analysis.report.original_demo import original_demo
from analysis.scoring.geometry import BACKGROUND_BATCH_TOKENS, GEOMETRY_SPECS, compute_background, geometry_map
from analysis.scoring.ranks import map_scorer, score_blocks
from analysis.scoring.references import vocabulary_scorer
from tests.hooks import stage_vectors
from tests.numerics import COSINE32, assert_top_ids_consistent, exact_references, rank_bounds


def stage_and_references(lm, sentences, stage, reference):
    """Every non-special token's stage vectors `[layers, n, hidden]` and own references `[n, hidden]`, float64,
    read in the batches the background reads them in (`test_sweep` checks batched vectors against single ones)."""
    scorer = vocabulary_scorer(lm, reference)
    xs, ys = [], []
    tokens = tokenize_all(lm, sentences)
    for batch in length_batches([len(t) for t in tokens], BACKGROUND_BATCH_TOKENS):
        run = trace_tokens(lm, [sentences[i] for i in batch], [tokens[i] for i in batch], [stage])
        for index, text in enumerate(run.tokens):
            keep = ~np.array(text.special)
            xs.append(run.stage(stage, index).double().numpy()[:, keep])
            ids, positions = torch.tensor(text.ids)[keep], torch.tensor(text.position_ids)[keep]
            ys.append(scorer.references(ids, positions, torch.float64).numpy())
    return np.concatenate(xs, axis=1), np.concatenate(ys)


def test_background_statistics_match_a_direct_numpy_computation(tiny_roberta):
    sentences = corpus_sentences()[:12]
    found = compute_background(tiny_roberta, "attn_residual", "position", sentences=sentences)
    x, y = stage_and_references(tiny_roberta, sentences, "attn_residual", "position")
    n = x.shape[1]
    assert found.vectors.n_tokens == n and found.n_sentences == 12
    np.testing.assert_allclose(found.vectors.mean, x.mean(1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(found.vectors.std, np.maximum(x.std(1), 1e-6), rtol=1e-10)
    np.testing.assert_allclose(found.references.mean, y.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(found.references.std, np.maximum(y.std(0), 1e-6), rtol=1e-10)
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    distinct = ~np.eye(n, dtype=bool)  # the ordered pairs a != b
    for layer in range(tiny_roberta.num_layers):
        pairs = unit[layer] @ unit[layer].T
        assert found.vectors.anisotropy[layer] == pytest.approx(pairs[distinct].mean(), rel=1e-10)
        # each dimension's share, pair by pair: the mean over a != b of unit_a[d] * unit_b[d]
        by_dimension = np.array([np.outer(column, column)[distinct].mean() for column in unit[layer].T])
        np.testing.assert_allclose(found.vectors.rogue_contribution[layer], by_dimension, rtol=1e-9, atol=1e-15)
        ordered = by_dimension[found.vectors.rogue_order[layer]]
        assert (np.diff(ordered) <= 1e-12).all()  # largest first, by the pairwise account


def test_the_shipped_background_is_computed_once_per_model_stage_and_reference(minilm):
    first = analysis.background(minilm, "layer_output", "raw")
    assert analysis.background(minilm, "layer_output", "raw") is first
    assert first.n_sentences == len(corpus_sentences())
    assert first.vectors.mean.shape == first.vectors.std.shape == (6, 384) and first.vectors.mean.dtype == np.float64
    assert first.corpus["sentences"] == first.n_sentences and len(first.corpus["sha256"]) == 64
    assert (first.vectors.anisotropy[1:] > 0).all()  # contextual vectors sit in a cone (Ethayarajh 2019)


MATERIALISED: dict[tuple[str, str, int], np.ndarray] = {}


def materialised_references(lm, reference: str, position_id: int) -> np.ndarray:
    """`exact_references` as a read-only array, kept: every stage and geometry case of one model, reference and
    position shares it."""
    key = (lm.name, reference, position_id)
    if key not in MATERIALISED:
        MATERIALISED[key] = exact_references(vocabulary_scorer(lm, reference), position_id).numpy()
        MATERIALISED[key].flags.writeable = False
    return MATERIALISED[key]


def explicit_geometry_cosines(lm, stage, reference, geometry, vectors, layers, position_ids, rogue_k):
    """cos(f(v), g(r)) for every vocabulary item with every reference materialised in float64: `vectors`
    `[layers, positions, hidden]` holds the vectors at `position_ids` → `[len(layers), positions, vocab]`."""
    found = analysis.background(lm, stage, reference) if geometry != "cosine" else None
    out = np.empty((len(layers), len(position_ids), lm.vocab_size))
    for p, position_id in enumerate(position_ids):
        references = materialised_references(lm, reference, position_id)
        if geometry in ("centered", "standardized"):  # g(r) is the same at every layer: mapped once
            references = references - found.references.mean
            if geometry == "standardized":
                references = references / found.references.std
        for i, layer in enumerate(layers):
            v, r = vectors[layer, p].astype(np.float64), references
            if geometry in ("centered", "standardized"):
                v = v - found.vectors.mean[layer]
                if geometry == "standardized":
                    v = v / found.vectors.std[layer]
            elif geometry == "no_rogue":
                removed = found.vectors.rogue_order[layer, :rogue_k]
                v, r = v.copy(), r.copy()
                v[removed], r[:, removed] = 0, 0
            elif geometry != "cosine":
                raise NotImplementedError(f"write the explicit map of the geometry {geometry!r} here")
            norms = np.linalg.norm(r, axis=1) * np.linalg.norm(v)
            out[i, p] = np.divide(r @ v, norms, out=np.zeros(len(r)), where=norms > 0)  # a zero row (pad): 0
    return out


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_each_geometrys_spec_says_what_its_maps_do(tiny_roberta, geometry):
    """The spec table against the maps themselves: which geometries score on plain cosine's product, which change
    with rogue_k, which need the corpus statistics."""
    spec = GEOMETRY_SPECS[geometry]
    scorer = vocabulary_scorer(tiny_roberta, "position")
    maps = [geometry_map(tiny_roberta, "layer_output", "position", geometry, rogue_k=k) for k in (1, 4)]
    assert (map_scorer(tiny_roberta, scorer, maps[0]).product == "shared") == spec.shared_product
    fields = ("vector_scale", "vector_shift", "reference_scale", "reference_shift")
    same = [np.array_equal(*(np.asarray(getattr(m, f), dtype=float) for m in maps), equal_nan=True) for f in fields]
    assert (not all(same)) == spec.uses_rogue_k
    assert (maps[0].background is not None) == spec.needs_background


def test_an_unknown_geometry_is_refused_before_anything_runs(tiny_roberta):
    for refuse, kind in (
        (lambda: analysis.AnalysisSettings(geometry="whitened").resolve(tiny_roberta), "geometry"),
        (
            lambda: analysis.AnalysisSettings(geometry="whitened").sweeping(("cosine",)).resolve(tiny_roberta),
            "geometry",
        ),
        (lambda: analysis.SweepSettings(methods=("whitened",)).resolve(tiny_roberta), "method"),
        (lambda: analysis.analyze(tiny_roberta, SEED_SENTENCE, geometry="whitened"), "geometry"),
    ):
        with pytest.raises(ValueError, match=f"Unknown {kind} 'whitened': choose one of "):
            refuse()


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("reference", list(analysis.REFERENCES))
@pytest.mark.parametrize("stage", list(analysis.STAGES))
def test_each_geometry_scores_every_vocabulary_item_exactly(lm, stage, reference, geometry):
    tokens, vectors = stage_vectors(lm, SEED_SENTENCE, stage)
    first = vectors[:, :3]  # the first three tokens (position ids 2, 3, 4 for RoBERTa)
    positions = tokens.position_ids[:3]
    scorer = vocabulary_scorer(lm, reference)
    mapping = map_scorer(lm, scorer, geometry_map(lm, stage, reference, geometry, rogue_k=3))
    with torch.inference_mode():
        blocks = score_blocks(scorer, torch.tensor(positions), [(first.clone(), mapping)])
        fast = torch.cat([cosines for _, _, cosines in blocks], dim=1).double().numpy()
    layers = [0, lm.num_layers - 1]
    slow = explicit_geometry_cosines(lm, stage, reference, geometry, first.numpy(), layers, positions, 3)
    # float32 scores against float64 ones; standardizing rescales dimensions, so allow 10x the plain tolerance.
    np.testing.assert_allclose(fast[layers], slow, rtol=0, atol=10 * COSINE32)


@pytest.mark.parametrize("geometry", ["centered", "standardized", "no_rogue"])
def test_analyze_follows_the_geometry_in_every_table(minilm, geometry):
    result = analysis.analyze(minilm, SEED_SENTENCE, stage="layer_output", reference="embedding", geometry=geometry)
    assert result.settings.geometry == geometry and result.provenance["geometry"] == geometry
    assert result.provenance["background_corpus"]["sentences"] == len(corpus_sentences())
    _, vectors = stage_vectors(minilm, SEED_SENTENCE, "layer_output")
    layers = [1, 4]
    positions = [0, 3, 6]
    at_positions = vectors.numpy()[:, positions]  # MiniLM has no position offset: position ids are positions
    slow = explicit_geometry_cosines(minilm, "layer_output", "embedding", geometry, at_positions, layers, positions, 3)
    for i, layer in enumerate(layers):
        for p, position in enumerate(positions):
            row = result.metrics[(result.metrics.layer == layer) & (result.metrics.position == position)].iloc[0]
            cos = slow[i, p]
            assert row["cosine"] == pytest.approx(cos[row["token_id"]], abs=1e-9)  # float64 own cosine
            low, high = rank_bounds(cos, row["token_id"], tol=10 * COSINE32)
            assert low <= row["rank"] <= high
            top = result.neighbors[(result.neighbors.layer == layer) & (result.neighbors.position == position)]
            assert_top_ids_consistent(top["neighbor_id"].tolist(), cos, tol=10 * COSINE32)


def test_the_original_neighbourhood_stays_the_plain_cosine_one(minilm):
    """The overlap column `reference` compares each layer's top N under the geometry with the top N of the
    token's own reference vector under plain cosine, which belongs to no layer."""
    result = analysis.analyze(minilm, SEED_SENTENCE, geometry="centered", top_k=20, overlap_n=20)
    scorer = vocabulary_scorer(minilm, "position")
    ids = torch.tensor(result.tokens["token_id"].to_numpy())
    positions = torch.tensor(result.tokens["position_id"].to_numpy())
    with torch.inference_mode():
        original = scorer.cosine(scorer.references(ids, positions)[None], positions)[0].topk(20).indices
    neighbours = result.neighbors.groupby(["layer", "position"])["neighbor_id"].apply(set)
    for row in result.overlap.itertuples():
        assert row.reference == len(neighbours[(row.layer, row.position)] & set(original[row.position].tolist()))


def test_no_rogue_with_no_dimensions_removed_is_plain_cosine(tiny_roberta):
    plain = analysis.analyze(tiny_roberta, SEED_SENTENCE)
    none_removed = analysis.analyze(tiny_roberta, SEED_SENTENCE, geometry="no_rogue", rogue_k=0)
    np.testing.assert_allclose(none_removed.metrics["cosine"], plain.metrics["cosine"], rtol=0, atol=1e-12)
    assert none_removed.neighbors["neighbor_id"].equals(plain.neighbors["neighbor_id"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"geometry": "whitened"},
            "Unknown geometry 'whitened': choose one of cosine, centered, standardized, no_rogue",
        ),
        ({"geometry": "no_rogue", "rogue_k": 384}, "rogue_k must be a whole number from 0 to 383"),
        ({"geometry": "no_rogue", "rogue_k": -1}, "rogue_k must be a whole number from 0 to 383"),
        ({"geometry": "no_rogue", "rogue_k": 2.0}, "rogue_k must be a whole number"),
    ],
)
def test_bad_geometry_settings_give_a_value_error_listing_the_choices(minilm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        analysis.analyze(minilm, SEED_SENTENCE, **kwargs)


def explicit_demo_vectors(lm, text):
    """The demo's formulas written out from the model's own hidden states and attention weights (float64)."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        output = lm.hf_model(input_ids=ids, output_hidden_states=True, output_attentions=True)
    heads, hidden = lm.num_heads, lm.hidden_size
    head_dim = hidden // heads
    vectors = []
    for layer, block in enumerate(lm.hf_model.encoder.layer):
        x = output.hidden_states[layer][0].double()
        attention = output.attentions[layer][0].double()
        value = x @ block.attention.self.value.weight.double()
        z = torch.cat([attention[h] @ value[:, h * head_dim : (h + 1) * head_dim] for h in range(heads)], dim=-1)
        vectors.append(x + z @ block.attention.output.dense.weight.double())
    return torch.stack(vectors)


@pytest.mark.parametrize("positional", [False, True])
def test_the_original_demo_reproduces_its_formulas(lm, positional):
    result = original_demo(lm, SEED_SENTENCE, positional=positional)
    assert result.method == "original_demo" and result.provenance["positional"] is positional
    expected = explicit_demo_vectors(lm, SEED_SENTENCE)
    # The demo's products in float32 (package) and float64 (here), over two products of `hidden` terms each.
    torch.testing.assert_close(torch.tensor(result.vectors, dtype=torch.float64), expected, rtol=1e-5, atol=1e-4)
    embeddings = lm.hf_model.embeddings
    words = embeddings.word_embeddings.weight.detach().double()
    offset = lm.structure.embeddings.position_offset
    position_zero = embeddings.position_embeddings.weight[offset].detach().double()  # for every token: error 2
    references = words + position_zero if positional else words
    for layer in (0, lm.num_layers - 1):
        for position in (1, 6):
            row = result.metrics[(result.metrics.layer == layer) & (result.metrics.position == position)].iloc[0]
            vector = torch.tensor(result.vectors[layer, position], dtype=torch.float64)
            cos = torch.nn.functional.cosine_similarity(vector[None], references).numpy()
            assert row["cosine"] == pytest.approx(cos[row["token_id"]], abs=1e-9)
            low, high = rank_bounds(cos, row["token_id"])
            assert low <= row["rank"] <= high


def test_the_original_demo_is_not_what_the_model_computes(minilm):
    demo = original_demo(minilm, SEED_SENTENCE)
    exact = analysis.analyze(minilm, SEED_SENTENCE, stage="attn_residual", reference="raw")
    assert np.abs(demo.vectors - exact.vectors).max() > 1e-2
    assert list(demo.metrics.columns) == list(exact.metrics.columns)


def test_the_verdicts_cosine_rows_equal_the_corpus_check(tiny_roberta):
    sentences = corpus_sentences()[:8]
    seen = []
    verdict = spike_verdict(tiny_roberta, sentences=sentences, on_progress=lambda *progress: seen.append(progress))
    assert seen[-1] == (8, 8) and [done for done, _ in seen] == sorted({done for done, _ in seen})
    assert list(verdict.columns) == list(VERDICT_COLUMNS)
    assert list(dict.fromkeys(verdict["method"])) == list(METHODS)
    assert set(verdict["word_class"]) <= {"function", "content"}
    check = corpus_spikes(tiny_roberta, sentences)
    check = check[check["word_class"].isin(["function", "content"])].reset_index(drop=True)
    cosine = verdict[verdict["method"] == "cosine"].reset_index(drop=True)
    pd.testing.assert_frame_equal(cosine[list(check.columns)], check)


def test_the_top_layer_is_where_function_and_content_tokens_spike_most_together():
    """Hand-built counts: layer 2 has the most spikes of function words, layer 1 the largest share of function and
    content tokens pooled (the top layer); a tie goes to the earlier layer; no spikes at all, no top layer."""

    def counts(spikes: dict[tuple[int, str], int]) -> pd.DataFrame:
        cells = [(layer, word_class) for layer in range(4) for word_class in ("function", "content")]
        return pd.DataFrame(
            [{"layer": layer, "word_class": word_class, "spikes": spikes.get((layer, word_class), 0), "tokens": 10}
             for layer, word_class in cells]
        )  # fmt: skip

    assert top_layer(counts({(2, "function"): 6, (1, "function"): 4, (1, "content"): 5})) == 1
    assert top_layer(counts({(3, "content"): 2, (1, "function"): 2})) == 1
    assert top_layer(counts({})) is None


def verdict_rows(spikes: dict[str, list[int]], tokens: int = 100) -> pd.DataFrame:
    """A hand-built verdict: function-word spikes per layer for each method, out of `tokens` each."""
    rows = pd.DataFrame(
        [
            {"method": method, "layer": layer, "word_class": "function", "spikes": n, "tokens": tokens}
            for method, by_layer in spikes.items()
            for layer, n in enumerate(by_layer)
        ]
    )
    return shares_from_counts(pd.concat([rows, rows.assign(layer=rows["layer"].max() + 1)]))


def test_the_summary_sentence_answers_the_question_with_its_numbers():
    exact = {"cosine": [0, 10, 40, 0], "centered": [0, 5, 30, 0], "standardized": [0, 0, 20, 0]}
    held = verdict_summary(verdict_rows({"original_demo": [0, 20, 50, 0], **exact, "no_rogue": [0, 1, 25, 0]}))
    assert held.startswith("Yes: the spike survives the exact computation and every geometry control.")
    assert "spike most at layer 2 under the original demo" in held
    assert "original_demo 50.0% (40.4%-59.6%); cosine 40.0% (30.9%-49.8%)" in held  # Wilson, 100 tokens
    faded = verdict_summary(verdict_rows({"original_demo": [0, 20, 50, 0], **exact, "no_rogue": [0, 0, 1, 0]}))
    assert faded.startswith("Partly: the exact computation keeps it, but it fades under no_rogue.")
    gone = {"cosine": [0, 0, 1, 0], "centered": [0, 0, 0, 0]}
    assert verdict_summary(verdict_rows({"original_demo": [0, 9, 50, 0], **gone})).startswith(
        "No: under the exact computation and every control, function words do not spike there."
    )
    decoder = verdict_summary(verdict_rows({"cosine": [3, 40, 0, 0], "centered": [0, 30, 2, 0]}))
    assert "spike most at layer 1 under the exact computation (cosine)" in decoder
    nothing = verdict_summary(verdict_rows({"original_demo": [0, 0], "cosine": [0, 0]}))
    assert nothing.startswith("No: no method finds function words spiking at any layer of this corpus.")
    faint = verdict_summary(verdict_rows({"original_demo": [0, 1, 0], "cosine": [0, 0, 0]}))  # 1 of 100 tokens
    assert faint.startswith("No: no method finds") and "original_demo 1.0% (0.2%-5.4%) at layer 1" in faint
    elsewhere = verdict_summary(
        verdict_rows({"original_demo": [0, 1, 0], "cosine": [0, 0, 0], "standardized": [9, 0, 0]})
    )
    assert elsewhere.startswith("No clear spike under original_demo; only standardized (layer 0) finds")


def test_the_verdict_command_writes_its_table_chart_and_summary(tmp_path, family_folder):
    folder = family_folder("roberta")
    assert cli_main(["verdict", "--model", str(folder), "--out", str(tmp_path / "out"), "--rogue-k", "2"]) == 0
    verdict = pd.read_csv(tmp_path / "out" / "verdict.csv")
    assert set(verdict["method"]) == set(METHODS)
    assert (tmp_path / "out" / "verdict.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "out" / "verdict.txt").read_text().strip() == verdict_summary(verdict).strip()
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["rogue_k"] == 2 and provenance["corpus"]["sentences"] == len(corpus_sentences())
    assert cli_main(["verdict", "--model", str(folder), "--out", str(tmp_path / "x"), "--rogue-k", "32"]) == 1


def test_changing_the_reference_reuses_the_stages_statistics_without_a_forward_pass(tiny_roberta):
    """The stage's statistics need the corpus run through the model; the reference's need no forward pass, so a
    reference change costs a fraction of a second instead of a pass over the corpus."""
    first = analysis.background(tiny_roberta, "layer_output", "position")
    passes = []
    hook = tiny_roberta.hf_model.register_forward_pre_hook(lambda module, args: passes.append(1))
    try:
        for reference in ("raw", "embedding"):
            other = analysis.background(tiny_roberta, "layer_output", reference)
            assert other.references.reference == reference and other.vectors is first.vectors
            assert not np.allclose(other.references.mean, first.references.mean)
    finally:
        hook.remove()
    assert passes == []

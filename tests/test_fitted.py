"""Fitted lenses against independent references: numpy's least squares on the same vectors, a model whose every
layer is a known affine image away from its output, the held-out KL of the tuned lens against its start, a lens
saved and loaded, and the commitment layer on a hand-written case."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from analysis.data import corpus_sentences
from analysis.fitted.fit import _batches, fit_lens, split_of
from analysis.fitted.lens import lens_paths, load_fitted
from analysis.fitted.moments import Moments
from analysis.report.lens import lens
from analysis.scoring.logits import NEVER_COMMITS, commit_layers
from analysis.tables import fitted_summary
from tests.synthetic import byte_level_tokenizer, random_hf_model
from tests.test_cli import run_cli
from tests.test_lens import own_logits

TEXT = "The cat sat on the mat, and the dog slept by the door."
TEXTS = corpus_sentences()


@pytest.fixture(scope="module")
def minilm_linear(minilm):
    return fit_lens(minilm, TEXTS)


def split_vectors(lm, stage, *names):
    """The real tokens' vectors `[layers, tokens, hidden]` and outputs of the texts in the splits `names`."""
    chosen = [(text, tokens) for i, (text, tokens) in enumerate(readable(lm)) if split_of(i) in names]
    found = list(_batches(lm, [t for t, _ in chosen], [k for _, k in chosen], stage, None))
    return torch.cat([v for v, _, _ in found], 1).double(), torch.cat([o for _, o, _ in found]).double()


def readable(lm):
    from analysis.capture.tokens import tokenize_readable

    return [(t, k) for t, k in zip(TEXTS, tokenize_readable(lm, TEXTS), strict=True) if k is not None]


def test_linear_fit_equals_numpy_least_squares_with_the_same_ridge(minilm, minilm_linear):
    vectors, outputs = split_vectors(minilm, "layer_output", "fit", "validation")
    ridges = minilm_linear.record["ridge"]["lambda"]
    assert len(ridges) == minilm.num_layers - 1  # the last layer's output is the output itself: the identity
    for layer, ridge in enumerate(ridges):
        x = vectors[layer].numpy()
        x_mean, y_mean = x.mean(0), outputs.numpy().mean(0)
        hidden = x.shape[1]
        stacked_x = np.vstack([x - x_mean, np.sqrt(ridge) * np.eye(hidden)])
        stacked_y = np.vstack([outputs.numpy() - y_mean, np.zeros((hidden, hidden))])
        expected = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
        found = minilm_linear.weights[layer].double().numpy()
        scale = np.abs(expected).max()
        np.testing.assert_allclose(found, expected, rtol=0, atol=2e-6 * scale)  # float32 storage of a float64 solve
        np.testing.assert_allclose(
            minilm_linear.biases[layer].double().numpy(),
            y_mean - x_mean @ expected,
            rtol=0,
            atol=2e-6 * np.abs(y_mean).max() + 2e-6 * scale,
        )
    assert torch.equal(minilm_linear.weights[-1], torch.eye(minilm.hidden_size))


def test_moments_added_batch_by_batch_equal_the_whole_set():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(3, 50, 8, generator=generator, dtype=torch.float64) * 5 + 100  # far from 0: cancellation
    outputs = torch.randn(50, 8, generator=generator, dtype=torch.float64) - 40
    given = vectors.clone()
    added, first, second = (Moments.empty(3, 8, torch.device("cpu")) for _ in range(3))
    for start, stop in ((0, 7), (7, 30), (30, 50)):
        added.add(vectors[:, start:stop], outputs[start:stop])
    first.add(vectors[:, :20], outputs[:20])
    second.add(vectors[:, 20:], outputs[20:])
    first.absorb(second)
    x_centred = vectors - vectors.mean(1, keepdim=True)
    y_centred = outputs - outputs.mean(0)
    for found in (added, first):
        torch.testing.assert_close(found.xx, x_centred.transpose(1, 2) @ x_centred, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(found.xy, x_centred.transpose(1, 2) @ y_centred, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(found.x_mean, vectors.mean(1), rtol=1e-14, atol=0)
        assert found.count == 50 and found.yy == pytest.approx(float(y_centred.square().sum()), rel=1e-12)
    assert torch.equal(vectors, given)  # the batches are read, not overwritten


def test_the_ridge_is_chosen_on_validation_texts_and_beats_the_identity_on_held_out_ones(minilm, minilm_linear):
    record = minilm_linear.record
    assert record["texts"]["held_out_texts"] == sum(split_of(i) == "held_out" for i in range(len(readable(minilm))))
    scores = minilm_linear.scores.set_index(["lens", "layer"])
    for layer in range(minilm.num_layers - 1):
        assert scores.loc[("linear", layer), "r2"] > scores.loc[("plain", layer), "r2"]
    assert scores.loc[("linear", minilm.num_layers - 1), "r2"] == pytest.approx(1.0)
    assert scores["kl_final"].isna().all()  # MiniLM has no head: hidden space only
    assert record["notes"] and "fewer than the 3,840" in record["notes"][0]
    # the held-out r² of the plain lens, recomputed from the held-out vectors
    vectors, outputs = split_vectors(minilm, "layer_output", "held_out")
    total = (outputs - outputs.mean(0)).square().sum()
    for layer in range(minilm.num_layers):
        plain = 1 - float((vectors[layer] - outputs).square().sum() / total)
        assert scores.loc[("plain", layer), "r2"] == pytest.approx(plain, rel=1e-9)
        mapped = vectors[layer] @ minilm_linear.weights[layer].double() + minilm_linear.biases[layer].double()
        linear = 1 - float((mapped - outputs).square().sum() / total)
        assert scores.loc[("linear", layer), "r2"] == pytest.approx(linear, rel=1e-6, abs=1e-6)


def affine_gpt2(folder):
    """A tiny GPT-2 whose every block is affine in its input: attention writes only its output bias (its
    projection's weights are 0), the MLP's activation is the identity, and every LayerNorm has an epsilon of 1e12
    (its gain scaled up by 1e6 to match), so that (x - mean) / sqrt(var + eps) is (x - mean) / 1e6 to 1e-15.
    Returns the folder and each block's (B, d): out = x B + d."""
    tokenizer = byte_level_tokenizer(max_length=60)
    tokenizer.model_max_length = 60
    shape = {"n_embd": 32, "n_layer": 3, "n_head": 4, "n_positions": 64, "bos_token_id": 1, "eos_token_id": 2,
             "pad_token_id": 0, "layer_norm_epsilon": 1e12, "activation_function": "linear"}  # fmt: skip
    hf_model = random_hf_model("gpt2", shape, tokenizer, head=True)
    blocks = []
    with torch.no_grad():
        for norm in [m for m in hf_model.modules() if isinstance(m, torch.nn.LayerNorm)]:
            norm.weight.mul_(1e6)
        for block in hf_model.transformer.h:
            block.attn.c_proj.weight.zero_()
            block.mlp.c_fc.weight.mul_(10)  # blocks that move their input far: the plain lens is far off
            gain = block.ln_2.weight.double() / 1e6
            centring = torch.eye(32, dtype=torch.float64) - 1 / 32
            mlp = block.mlp.c_fc.weight.double() @ block.mlp.c_proj.weight.double()  # Conv1D: x @ W + b
            linear = torch.eye(32, dtype=torch.float64) + centring @ torch.diag(gain) @ mlp
            constant = (
                block.attn.c_proj.bias.double() @ linear
                + block.ln_2.bias.double() @ mlp
                + block.mlp.c_fc.bias.double() @ block.mlp.c_proj.weight.double()
                + block.mlp.c_proj.bias.double()
            )
            blocks.append((linear, constant))
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, blocks


def test_a_model_whose_layers_are_known_affine_images_is_recovered_and_read_as_its_own_logits(tmp_path):
    folder, blocks = affine_gpt2(tmp_path / "affine-gpt2")
    lm = analysis.load_model(folder)
    fitted = fit_lens(lm, TEXTS)
    for layer in range(len(blocks)):
        known, offset = torch.eye(32, dtype=torch.float64), torch.zeros(32, dtype=torch.float64)
        for linear, constant in blocks[layer + 1 :]:  # the last output is this layer's, through every later block
            known, offset = known @ linear, offset @ linear + constant
        torch.testing.assert_close(fitted.weights[layer].double(), known, rtol=0, atol=1e-5 * float(known.abs().max()))
        torch.testing.assert_close(fitted.biases[layer].double(), offset, rtol=0, atol=1e-5 * float(offset.abs().max()))
    read = lens(lm, TEXT, fitted=fitted, top_k=5)
    own = own_logits(folder, lm, read.tokens["token_id"].tolist()).double()  # the checkpoint's own GPT2LMHeadModel
    top = read.top
    expected = own.numpy()[top["position"].to_numpy(), top["prediction_id"].to_numpy()]  # one row per top-k row
    fitted_error = np.abs(top["logit"].to_numpy() - expected).max()
    assert fitted_error < 1e-5 * np.abs(expected).max()
    plain = lens(lm, TEXT, top_k=5).top  # the head reading layer 0 as it is: not the model's logits
    plain = plain[plain["layer"] == 0]
    plain_expected = own.numpy()[plain["position"].to_numpy(), plain["prediction_id"].to_numpy()]
    assert np.abs(plain["logit"].to_numpy() - plain_expected).max() > 1000 * fitted_error
    analysis.release_models()


def test_the_tuned_lens_lowers_held_out_kl_from_its_linear_start(family_folder):
    lm = analysis.load_model(family_folder("roberta", head=True))
    tuned = fit_lens(lm, TEXTS, kind="tuned", tuned_tokens=4096)
    scores = tuned.scores.set_index(["lens", "layer"])["kl_final"]
    assert tuned.record["tuned"]["kept_step"] > 0
    for layer in range(lm.num_layers - 1):
        assert scores[("tuned", layer)] < scores[("linear", layer)]
    assert tuned.kind == "tuned" and tuned.record["tuned"]["token_reads"] <= 4096


def test_a_fitted_lens_saved_and_loaded_reads_the_same_numbers(family_folder, tmp_path):
    lm = analysis.load_model(family_folder("gpt2", head=True))
    fitted = fit_lens(lm, TEXTS)
    written = fitted.save(tmp_path / "gpt2-linear")
    assert [path.name for path in written] == ["gpt2-linear.safetensors", "gpt2-linear.json"]
    loaded = load_fitted(written[1])
    assert torch.equal(loaded.weights, fitted.weights) and torch.equal(loaded.biases, fitted.biases)
    before, after = lens(lm, TEXT, fitted=fitted), lens(lm, TEXT, fitted=loaded)
    pd.testing.assert_frame_equal(before.metrics, after.metrics, rtol=1e-6)
    pd.testing.assert_frame_equal(before.top, after.top, rtol=1e-6)
    assert after.reading == "linear" and after.provenance["lens_fitted_sha256"] == loaded.record["weights_sha256"]


def test_a_lens_fitted_at_layer_output_reads_the_last_layer_as_the_output_with_one_product(family_folder):
    """The last layer's map is the identity there: the head reads the output once (as the plain lens does), and
    the last layer's numbers are the plain lens's, KL 0."""
    lm = analysis.load_model(family_folder("gpt2", head=True))
    fitted = fit_lens(lm, TEXTS, score_tokens=0)
    calls = []
    handle = lm.unembed.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        read = lens(lm, TEXT, fitted=fitted)
    finally:
        handle.remove()
    assert len(calls) == lm.num_layers
    last = lm.num_layers - 1
    columns = ["lens_logit", "lens_prob", "entropy", "kl_final", "lens_rank"]
    fitted_last = read.metrics[read.metrics["layer"] == last][columns].reset_index(drop=True)
    plain = lens(lm, TEXT).metrics
    pd.testing.assert_frame_equal(fitted_last, plain[plain["layer"] == last][columns].reset_index(drop=True))
    assert (fitted_last["kl_final"] == 0).all()


def test_a_fitted_lens_is_refused_for_another_model_stage_or_changed_weights(family_folder, minilm_linear, tmp_path):
    lm = analysis.load_model(family_folder("gpt2", head=True))
    fitted = fit_lens(lm, TEXTS)
    with pytest.raises(ValueError, match=r"fitted on .* at layer_output: read it at layer_output, not layer_input"):
        lens(lm, TEXT, stage="layer_input", fitted=fitted)
    other = analysis.load_model(family_folder("roberta", head=True))
    with pytest.raises(ValueError, match="not on"):
        lens(other, TEXT, fitted=fitted)
    weights, record = fitted.save(tmp_path / "lens")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="SHA-256 differ"):
        load_fitted(weights)
    record.write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not a fitted lens's record"):
        load_fitted(record)
    with pytest.raises(ValueError, match="No fitted lens at"):
        load_fitted(tmp_path / "missing.safetensors")
    assert lens_paths(tmp_path / "a.json") == lens_paths(tmp_path / "a") == lens_paths(tmp_path / "a.safetensors")


def test_fit_lens_refuses_bad_input_before_any_forward_pass(minilm):
    with pytest.raises(ValueError, match="at least 5 texts"):
        fit_lens(minilm, TEXTS[:4])
    with pytest.raises(ValueError, match="list of texts"):
        fit_lens(minilm, "one text")
    with pytest.raises(ValueError, match="Unknown fitted lens kind"):
        fit_lens(minilm, TEXTS, kind="quadratic")
    with pytest.raises(ValueError, match="has no lens"):
        fit_lens(minilm, TEXTS, kind="tuned")
    for score_tokens in (-1, True, 2.5):
        with pytest.raises(ValueError, match="score_tokens must be a whole number of at least 0"):
            fit_lens(minilm, TEXTS, score_tokens=score_tokens)


def test_the_commitment_layer_is_the_first_from_which_the_top_1_stays_final():
    final = torch.tensor([7, 7, 7, 7])
    top_1 = torch.tensor(
        [
            [7, 3, 7, 3],  # layer 0
            [3, 7, 7, 3],  # layer 1
            [7, 7, 7, 3],  # layer 2
            [7, 7, 7, 3],  # layer 3
        ]
    )
    found = commit_layers(top_1.unsqueeze(-1), final)
    assert found.tolist() == [2, 1, 0, NEVER_COMMITS]


def test_the_lens_table_holds_each_tokens_commitment_layer(family_folder):
    lm = analysis.load_model(family_folder("gpt2", head=True))
    read = lens(lm, TEXT)
    top_1 = read.top[read.top["prediction_rank"] == 1].set_index(["position", "layer"])["prediction_id"]
    for position, rows in read.metrics.groupby("position"):
        final = rows["final_top_id"].iloc[0]
        agreeing = [top_1[(position, layer)] == final for layer in range(lm.num_layers)]
        expected = next((layer for layer in range(lm.num_layers) if all(agreeing[layer:])), None)
        found = rows["commit_layer"].iloc[0]
        assert (pd.isna(found) and expected is None) or found == expected
        assert rows["commit_layer"].nunique(dropna=False) == 1


def test_a_sweep_reads_the_lens_through_a_fitted_lens_each_text_as_alone(family_folder, tmp_path):
    """Every text's lens columns equal `lens(..., fitted=)` on it alone; the same command continues; a changed lens
    file is refused before anything is computed; --lens-fitted without --lens is refused."""
    folder = family_folder("gpt2", head=True)
    lm = analysis.load_model(folder)
    fitted_path = fit_lens(lm, TEXTS).save(tmp_path / "linear")[1]
    texts = [TEXT, "Time flies like an arrow.", "We measured it."]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "sweep"
    arguments = ["sweep", "--model", str(folder), "--input", str(corpus), "--out", str(out), "--lens",
                 "--stage", "layer_output", "--lens-fitted", str(fitted_path)]  # fmt: skip
    assert run_cli(*arguments).returncode == 0
    rows = pd.read_parquet(out / "rows")
    fitted = load_fitted(fitted_path)
    for sentence, text in enumerate(texts):
        alone = lens(lm, text, stage="layer_output", fitted=fitted).metrics
        mine = rows[rows["sentence_id"] == sentence]
        assert mine["lens_rank"].tolist() == alone["lens_rank"].tolist()
        assert mine["lens_commit_layer"].tolist() == alone["commit_layer"].tolist()
        np.testing.assert_allclose(mine["lens_prob"], alone["lens_prob"], rtol=1e-5, atol=1e-9)
    record = json.loads((out / "provenance.json").read_text())
    assert record["lens_fitted_sha256"] == fitted.record["weights_sha256"]
    commitment = pd.read_csv(out / "commitment.csv")  # the share of each class committed by each layer
    tokens = rows[rows["layer"] == 0]
    for (word_class, layer), row in commitment.set_index(["word_class", "layer"]).iterrows():
        of_class = tokens.loc[tokens["word_class"] == word_class, "lens_commit_layer"]
        assert row["tokens"] == len(of_class) and row["committed"] == int((of_class <= layer).sum())
        assert row["low"] <= row["share"] <= row["high"]
    assert set(commitment["layer"]) == set(range(lm.num_layers)) and set(commitment["word_class"]) == set(
        tokens["word_class"]
    )
    again = run_cli(*arguments)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    refit = fit_lens(lm, TEXTS[:40])  # another fit written over the same file
    for path in lens_paths(fitted_path):
        path.unlink()
    refit.save(fitted_path)
    changed = run_cli(*arguments)
    assert changed.returncode == 1 and "lens_fitted_sha256" in changed.stderr
    elsewhere = [str(tmp_path / "other") if a == str(out) else a for a in arguments if a != "--lens"]
    without = run_cli(*elsewhere)
    assert without.returncode == 1 and "add --lens" in without.stderr and not (tmp_path / "other").exists()


def test_the_fit_lens_command_writes_the_lens_and_refuses_before_writing(family_folder, tmp_path):
    folder = family_folder("roberta", head=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:8]) + "\n")
    out = tmp_path / "lenses" / "roberta-linear"
    arguments = ["fit-lens", "--model", str(folder), "--input", str(corpus), "--out", str(out)]
    done = run_cli(*arguments)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(path) for path in lens_paths(out)]
    assert "held-out scores" in done.stderr and "fewer than the" in done.stderr  # 8 texts: too few tokens, said
    record = load_fitted(out).record
    assert record["kind"] == "linear" and record["texts"]["count"] == 8 and len(record["scores"]) == 2 * 3
    again = run_cli(*arguments)
    assert again.returncode == 1 and "already exist" in again.stderr
    tuned_minilm = run_cli("fit-lens", "--model", analysis.BUNDLED_MODEL, "--input", str(corpus), "--out",
                           str(tmp_path / "minilm"), "--kind", "tuned")  # fmt: skip
    assert tuned_minilm.returncode == 1 and "has no lens" in tuned_minilm.stderr
    assert not list(tmp_path.glob("minilm*"))
    export = run_cli("export", "--model", analysis.BUNDLED_MODEL, "--text", TEXT, "--out", str(tmp_path / "e"),
                     "--lens-fitted", str(out))  # fmt: skip
    assert export.returncode == 1 and "add --lens" in export.stderr and not (tmp_path / "e").exists()
    exported = run_cli("export", "--model", str(folder), "--text", TEXT, "--out", str(tmp_path / "read"), "--lens",
                       "--stage", "layer_output", "--lens-fitted", str(out))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    provenance = json.loads((tmp_path / "read" / "provenance.json").read_text())
    assert provenance["lens_reading"] == "linear" and provenance["lens_fitted_sha256"] == record["weights_sha256"]
    written = pd.read_csv(tmp_path / "read" / "lens.csv")
    expected = lens(analysis.load_model(folder), TEXT, fitted=load_fitted(out)).metrics
    assert written["lens_rank"].tolist() == expected["lens_rank"].tolist()
    assert written["commit_layer"].fillna(-1).tolist() == expected["commit_layer"].fillna(-1).tolist()


def test_the_held_out_vocabulary_scores_are_the_lens_on_each_held_out_text(family_folder):
    """Each lens's held-out KL, top-1 agreement and median target rank per layer equal `lens` run on each held-out
    text alone (plain, and through the fitted lens), over every token the tokenizer did not add."""
    lm = analysis.load_model(family_folder("gpt2", head=True))
    fitted = fit_lens(lm, TEXTS, score_tokens=100_000)
    held_out = [text for i, (text, _) in enumerate(readable(lm)) if split_of(i) == "held_out"]
    scores = fitted.scores.set_index(["lens", "layer"])
    for name, reading in (("plain", None), ("linear", fitted)):
        frames = []
        for text in held_out:
            read = lens(lm, text, fitted=reading, top_k=1)
            top_1 = read.top.set_index(["layer", "position"])["prediction_id"]
            metrics = read.metrics[~read.metrics["special"]].copy()
            metrics["agrees"] = top_1.loc[list(zip(metrics["layer"], metrics["position"], strict=True))].to_numpy() == (
                metrics["final_top_id"].to_numpy()
            )
            frames.append(metrics)
        rows = pd.concat(frames)
        assert scores.loc[(name, 0), "scored_tokens"] == len(rows) / lm.num_layers
        for layer, found in rows.groupby("layer"):
            assert scores.loc[(name, layer), "kl_final"] == pytest.approx(found["kl_final"].mean(), rel=1e-4, abs=1e-9)
            assert scores.loc[(name, layer), "top1_agreement"] == pytest.approx(found["agrees"].mean())
            assert scores.loc[(name, layer), "target_rank"] == np.median(found["lens_rank"].dropna().astype(float))


def test_a_lens_fitted_at_another_stage_maps_every_layer_including_the_last(family_folder):
    """At attn_residual the last layer's vectors are not the output: its map is fitted too, and r² says how well."""
    lm = analysis.load_model(family_folder("roberta", head=True))
    fitted = fit_lens(lm, TEXTS, stage="attn_residual")
    assert len(fitted.record["ridge"]["alpha"]) == lm.num_layers and not fitted.record["identity_layers"]
    assert not torch.equal(fitted.weights[-1], torch.eye(lm.hidden_size))
    scores = fitted.scores.set_index(["lens", "layer"])
    assert scores.loc[("linear", lm.num_layers - 1), "r2"] > scores.loc[("plain", lm.num_layers - 1), "r2"]
    read = lens(lm, TEXT, stage="attn_residual", fitted=fitted)
    assert read.reading == "linear" and read.provenance["lens_stage"] == "attn_residual"


def test_the_tuned_lens_can_start_from_the_identity_and_says_so(family_folder):
    """Started from the identity (the plain lens), the kept maps lower the validation KL from there; the record
    says where it started."""
    lm = analysis.load_model(family_folder("roberta", head=True))
    tuned = fit_lens(lm, TEXTS, kind="tuned", tuned_tokens=2048, tuned_start="identity", score_tokens=256)
    record = tuned.record["tuned"]
    assert record["start"] == "identity" and record["kept_step"] > 0
    assert "Tuned from its identity start" in fitted_summary(tuned.record)
    assert sum(record["validation_kl_kept"]) < sum(record["validation_kl_start"])
    scores = tuned.scores.set_index(["lens", "layer"])["kl_final"]
    assert all(scores[("tuned", layer)] < scores[("plain", layer)] for layer in range(lm.num_layers - 1))
    with pytest.raises(ValueError, match="Unknown tuned lens start"):
        fit_lens(lm, TEXTS, kind="tuned", tuned_start="zeros")


def test_the_commitment_chart_draws_each_token_or_past_its_limit_the_counts(family_folder, monkeypatch):
    """One point per token up to COMMITMENT_TOKENS, each at its commitment layer; past it, bars of the same rows
    counted per layer and word class (the rows stay one per token: nothing is dropped)."""
    import analysis.charts as charts
    from analysis.wordclass import word_classes

    lm = analysis.load_model(family_folder("roberta", head=True))
    read = lens(lm, TEXT)
    points = charts.commitment_chart(read, word_classes(read.tokens).tolist())
    first = read.metrics[read.metrics["layer"] == 0]
    assert points.spec["mark"]["type"] == "point" and len(points.data) == len(first)
    expected = ["never" if pd.isna(c) else str(int(c)) for c in first["commit_layer"]]
    assert points.data["commit"].tolist() == expected
    monkeypatch.setattr(charts, "COMMITMENT_TOKENS", 5)
    bars = charts.commitment_chart(read, word_classes(read.tokens).tolist())
    assert bars.spec["mark"]["type"] == "bar" and bars.data["commit"].tolist() == expected
    assert bars.spec["encoding"]["y"]["aggregate"] == "count"

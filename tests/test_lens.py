"""The lens: every family with a head, saved with its head weights like a user's folder, against the test's own
computation from the model's modules (the full model's logits, and the logits of the same checkpoint cut after
each layer)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

import analysis
from analysis.capture import masked as masked_capture
from analysis.capture.forward import model_inputs
from analysis.capture.tokens import tokenize
from analysis.corpus.engine import batch_rows
from analysis.definitions import (
    EXPORT_FILES,
    LENS_COLUMNS,
    LENS_FILES,
    LENS_ROW_COLUMNS,
    LENS_TOP_COLUMNS,
    ROW_COLUMNS,
)
from analysis.model.checkpoint import WEIGHTS_FILE
from analysis.model.unembed import head_class
from analysis.output.sweep import open_sweep, write_shard
from analysis.report.lens import lens
from analysis.scoring import logits as lens_logits
from analysis.settings import SweepSettings
from tests.synthetic import TINY_FAMILIES
from tests.test_cli import error_lines, run_cli
from tests.test_sweep import TEXTS, run_sweep, texts_file

TEXT = "The cat sat on the mat, and the dog slept by the door."
ENCODERS = ("bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "mpnet", "deberta-v2", "modernbert",
            "megatron-bert", "xlm-roberta-xl")  # fmt: skip
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # float32 logits of a tiny head, computed in other batch shapes


@pytest.fixture(scope="module", params=list(TINY_FAMILIES))
def head_model(request, family_folder):
    """(folder, the tiny model of that family loaded with its head through load_model)."""
    folder = family_folder(request.param, head=True)
    yield folder, analysis.load_model(folder)
    analysis.release_models()


def own_logits(folder, lm, token_ids: list[int], layers: int | None = None) -> torch.Tensor:
    """The logits `[tokens, vocabulary]` the checkpoint's own masked-LM or causal-LM model computes for
    `token_ids`, cut after `layers` blocks where given (the checkpoint's first blocks, its own head)."""
    config = AutoConfig.from_pretrained(folder)
    options = {} if layers is None else {"num_hidden_layers": layers}
    hf_model = head_class(config).from_pretrained(folder, attn_implementation="eager", **options).eval()
    tokens = tokenize(lm, TEXT)
    inputs = model_inputs(lm, [tokens])
    inputs["input_ids"] = torch.tensor([token_ids])
    with torch.inference_mode():
        return hf_model(**{k: v for k, v in inputs.items() if k != "use_cache"}).logits[0]


def rank_bounds(logits: torch.Tensor, ids: torch.Tensor, slack: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """The ranks of `ids` under `logits [positions, vocabulary]` allowing float slack: items clearly above, and
    items above or within the slack (a near-tie may fall either way in another batch shape)."""
    chosen = logits.gather(-1, ids.unsqueeze(-1))
    return 1 + (logits > chosen + slack).sum(-1), 1 + (logits > chosen - slack).sum(-1) - 1


def check_layer(table: pd.DataFrame, top: pd.DataFrame, logits: torch.Tensor, layer: int, final: torch.Tensor) -> None:
    """The lens rows of `layer` against that layer's own `logits` and the model's `final` logits."""
    rows = table[table["layer"] == layer]
    positions = torch.tensor(rows["position"].to_numpy())
    logits, final = logits[positions], final[positions]
    log_probs = torch.log_softmax(logits.double(), -1)
    final_log_probs = torch.log_softmax(final.double(), -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    kl = (final_log_probs.exp() * (final_log_probs - log_probs)).sum(-1)
    torch.testing.assert_close(torch.tensor(rows["entropy"].to_numpy()), entropy, **TOLERANCE)
    torch.testing.assert_close(torch.tensor(rows["kl_final"].to_numpy()), kl.clamp(min=0), **TOLERANCE)
    has = rows["target_id"].notna().to_numpy().copy()  # writable: torch indexes with it
    target = torch.from_numpy(rows["target_id"].fillna(0).to_numpy(dtype=np.int64).copy())[has]
    scored = logits[has].gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(torch.tensor(rows["lens_logit"].to_numpy()[has]), scored.double(), **TOLERANCE)
    probability = log_probs[has].gather(-1, target.unsqueeze(-1)).squeeze(-1).exp()
    torch.testing.assert_close(torch.tensor(rows["lens_prob"].to_numpy()[has]), probability, **TOLERANCE)
    low, high = rank_bounds(logits[has], target)
    ranks = torch.tensor(rows["lens_rank"].to_numpy()[has].astype(np.int64))
    assert bool(((low <= ranks) & (ranks <= high)).all())
    assert rows["lens_rank"].isna().to_numpy().tolist() == (~has).tolist()
    final_top = torch.tensor(rows["final_top_id"].to_numpy())
    assert bool((final.gather(-1, final_top.unsqueeze(-1)).squeeze(-1) >= final.max(-1).values - 1e-5).all())
    low, high = rank_bounds(logits, final_top)
    ranks = torch.tensor(rows["final_top_rank"].to_numpy())
    assert bool(((low <= ranks) & (ranks <= high)).all())
    predictions = top[top["layer"] == layer]
    k = int(predictions["prediction_rank"].max())
    shown = torch.tensor(predictions["logit"].to_numpy()).view(len(positions), k)
    torch.testing.assert_close(shown, logits.double().topk(k, -1).values, **TOLERANCE)
    ids = torch.tensor(predictions["prediction_id"].to_numpy()).view(len(positions), k)
    torch.testing.assert_close(logits.gather(-1, ids).double(), shown, **TOLERANCE)


def test_every_layer_is_the_models_own_head_on_that_layer(head_model):
    """At the last layer's output the lens is the model's own logits; at layer l it is the logits of the same
    checkpoint cut after block l (the model's own blocks, final norm and head)."""
    folder, lm = head_model
    assert analysis.capabilities(lm).lens
    result = lens(lm, TEXT)
    assert result.target == ("next" if lm.structure.causal else "own")
    ids = result.tokens["token_id"].tolist()
    final = own_logits(folder, lm, ids)
    for layer in range(lm.num_layers):
        cut = final if layer == lm.num_layers - 1 else own_logits(folder, lm, ids, layers=layer + 1)
        check_layer(result.metrics, result.top, cut, layer, final)
    last = result.metrics[result.metrics["layer"] == lm.num_layers - 1]
    assert (last["final_top_rank"] == 1).all() and np.allclose(last["kl_final"], 0, atol=1e-5)
    if lm.structure.causal:
        expected = [*ids[1:], None]
        assert [None if t is pd.NA else t for t in last["target_id"]] == expected


@pytest.mark.parametrize("family", ["roberta", "bert", "modernbert", "deberta-v2"])
def test_masked_mode_reads_each_token_hidden_in_one_batched_pass(family, family_folder, monkeypatch):
    """Each position is read from a copy of the text with that token replaced by the mask token: its last
    layer equals the model's own logits on that copy, run alone; the copies run as one batch."""
    folder = family_folder(family, head=True)
    lm = analysis.load_model(folder)
    calls = []
    handle = lm.hf_model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        result = lens(lm, TEXT, masked=True)
    finally:
        handle.remove()
    assert len(calls) == 1
    tokens = result.tokens
    content = tokens[~tokens["special"]]
    assert result.metrics["position"].unique().tolist() == content["position"].tolist()
    mask = lm.tokenizer.mask_token_id
    last = lm.num_layers - 1
    for position in content["position"].tolist()[:4]:
        ids = tokens["token_id"].tolist()
        ids[position] = mask
        final = own_logits(folder, lm, ids)
        rows = result.metrics[(result.metrics["position"] == position)]
        row = rows[rows["layer"] == last].iloc[0]
        assert row["target_id"] == tokens["token_id"][position]
        torch.testing.assert_close(
            torch.tensor(row["lens_logit"]), final[position, row["target_id"]].double(), **TOLERANCE
        )
        assert row["final_top_id"] == int(final[position].argmax())
    monkeypatch.setattr(masked_capture, "MASKED_PASS_BYTES", 1)  # one copy per pass: the same numbers
    one_by_one = lens(lm, TEXT, masked=True)
    columns = ["lens_logit", "lens_prob", "entropy", "kl_final"]
    np.testing.assert_allclose(one_by_one.metrics[columns], result.metrics[columns], rtol=1e-5, atol=1e-6)
    analysis.release_models()


@pytest.mark.parametrize("scale", [1e-5, 1e-3, 1e-1, 0.3, 1.0, 30.0])
def test_kl_to_the_final_prediction_is_within_1e_7_nats_of_float64(scale):
    """KL(final || layer) against a float64 computation on the same float32 logits, for layers whose vectors
    differ from the output's by `scale`: from a true KL near 1e-10 nats (where the textbook -H_f - sum p_f z + lse
    left ~1e-6 of float32 rounding, reading 0 or 1e-6) to distributions a thousand nats apart. Within 1e-7 nats, or
    1e-6 of the KL where that is more (between 0.1 and 1 nat the float32 probabilities' own rounding is ~3e-7),
    below 1 nat; within float32's relative precision above; a 50k vocabulary with logits of GPT-2's size."""
    generator = torch.Generator().manual_seed(0)
    hidden, vocabulary, positions = 64, 50_000, 6
    unembed = torch.nn.Linear(hidden, vocabulary, bias=False)
    with torch.no_grad():
        unembed.weight.copy_(torch.randn(vocabulary, hidden, generator=generator))
    final = torch.randn(positions, hidden, generator=generator)
    layers = torch.stack([final + scale * torch.randn(positions, hidden, generator=generator) for _ in range(3)])
    scores = lens_logits.lens_scores(unembed, layers, torch.zeros(positions, dtype=torch.long), 1, vocabulary, final)
    with torch.inference_mode():  # the very logits the lens reads: one product per layer, as it makes them
        final_log_probs = torch.log_softmax(unembed(final).double(), -1)
        layer_log_probs = torch.log_softmax(torch.stack([unembed(layer) for layer in layers]).double(), -1)
    expected = (final_log_probs.exp() * (final_log_probs - layer_log_probs)).sum(-1)
    error = (scores.kl_final.double() - expected).abs()
    near = expected < 1
    assert (error[near] < torch.clamp(1e-6 * expected[near], min=1e-7)).all(), error.max()
    assert (error[expected < 0.1] < 1e-7).all()
    assert (error[expected >= 1] < 1e-5 * expected[expected >= 1]).all()


def test_the_vocabulary_is_scored_in_blocks_of_positions(family_folder, monkeypatch):
    """No [layers, positions, vocabulary] tensor: the head sees at most one block of positions at a time, and
    blocks of one position give the numbers of one block of all."""
    lm = analysis.load_model(family_folder("gpt2", head=True))
    whole = lens(lm, TEXT)
    monkeypatch.setattr(lens_logits, "LENS_BLOCK_BYTES", 4 * lm.vocab_size)  # one position per block
    shapes = []
    handle = lm.unembed.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    try:
        blocked = lens(lm, TEXT)
    finally:
        handle.remove()
    assert max(rows for rows, _ in shapes) == 1
    columns = ["lens_logit", "lens_prob", "entropy", "kl_final"]
    np.testing.assert_allclose(blocked.metrics[columns], whole.metrics[columns], rtol=1e-5, atol=1e-6)
    assert blocked.metrics["lens_rank"].equals(whole.metrics["lens_rank"])
    analysis.release_models()


def test_a_model_without_a_head_says_why(minilm, family_folder):
    found = analysis.capabilities(minilm)
    assert not found.lens and "holds no masked-LM head" in found.reason("lens") and "BertModel" in found.reason("lens")
    with pytest.raises(ValueError, match="has no lens: its checkpoint holds no masked-LM head"):
        lens(minilm, TEXT)
    decoder = analysis.load_model(family_folder("llama", head=True))
    assert "never sees a mask token" in analysis.capabilities(decoder).reason("masked")
    with pytest.raises(ValueError, match="has no masked lens: a decoder predicts the next token"):
        lens(decoder, TEXT, masked=True)
    with pytest.raises(ValueError, match="Unknown lens target 'previous'"):
        lens(decoder, TEXT, target="previous")
    own = lens(decoder, TEXT, target="own")
    assert (own.metrics["target_id"] == own.metrics["token_id"]).all()
    encoder = analysis.load_model(family_folder("roberta", head=True))
    with pytest.raises(ValueError, match="its target is own"):
        lens(encoder, TEXT, masked=True, target="next")
    analysis.release_models()


def test_a_trace_serves_the_lens_and_the_vocabulary_view_in_one_pass(family_folder):
    lm = analysis.load_model(family_folder("roberta", head=True))
    run = analysis.trace(lm, TEXT)
    from_trace = lens(lm, run, stage="attn_residual")
    from_text = lens(lm, TEXT, stage="attn_residual")
    np.testing.assert_allclose(from_trace.metrics["lens_logit"], from_text.metrics["lens_logit"], rtol=1e-5)
    assert from_trace.provenance["lens_stage"] == "attn_residual" and from_trace.provenance["model"] == lm.name
    analysis.release_models()


def test_export_writes_the_lens_beside_the_tables_with_its_provenance(family_folder, minilm, tmp_path):
    folder = family_folder("roberta", head=True)
    out = tmp_path / "out"
    done = run_cli("export", "--model", str(folder), "--text", TEXT, "--stage", "attn_residual", "--lens",
                   "--lens-masked", "--lens-top-k", "3", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {path.name for path in out.iterdir()} == {*EXPORT_FILES, *LENS_FILES, "provenance.json"}
    expected = lens(analysis.load_model(folder), TEXT, stage="attn_residual", masked=True, top_k=3)
    written = pd.read_csv(out / "lens.csv", keep_default_na=False, na_values=[""])
    assert list(written.columns) == list(LENS_COLUMNS)
    np.testing.assert_allclose(written["lens_prob"], expected.metrics["lens_prob"], rtol=1e-6)
    assert written["lens_rank"].tolist() == expected.metrics["lens_rank"].tolist()
    top = pd.read_csv(out / "lens_top.csv")
    assert list(top.columns) == list(LENS_TOP_COLUMNS) and top["prediction_rank"].max() == 3
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == record["lens_stage"] == "attn_residual"
    assert (record["lens_target"], record["lens_masked"], record["lens_head"]) == ("own", True, "RobertaLMHead")
    refused = run_cli(
        "export", "--model", analysis.BUNDLED_MODEL, "--text", TEXT, "--lens", "--out", str(tmp_path / "b")
    )
    assert refused.returncode == 1 and not (tmp_path / "b").exists()
    why = analysis.capabilities(minilm).reason("lens")
    assert error_lines(refused) == [f"python -m analysis: error: {analysis.BUNDLED_MODEL} has no lens: {why}."]
    analysis.release_models()


def test_a_sweep_adds_the_lens_columns_each_text_as_alone(family_folder, tmp_path):
    """Batched and padded, every text's lens columns equal `lens` on it alone; a rerun on the finished folder
    computes nothing; a sweep without the lens cannot continue into it."""
    folder = family_folder("gpt2", head=True)
    corpus = tmp_path / "corpus.txt"
    texts = [TEXT, "Time flies like an arrow.", "We measured it."]
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "sweep"
    arguments = ["sweep", "--model", str(folder), "--input", str(corpus), "--out", str(out), "--lens",
                 "--stage", "layer_output", "--method", "cosine", "no_rogue"]  # fmt: skip
    assert run_cli(*arguments).returncode == 0
    rows = pd.read_parquet(out / "rows")
    assert list(rows.columns) == [*ROW_COLUMNS, *LENS_ROW_COLUMNS]
    lm = analysis.load_model(folder)
    for sentence, text in enumerate(texts):
        alone = lens(lm, text, stage="layer_output").metrics
        for method in ("cosine", "no_rogue"):
            mine = rows[(rows["sentence_id"] == sentence) & (rows["method"] == method)]
            assert mine["lens_rank"].tolist() == alone["lens_rank"].tolist()
            np.testing.assert_allclose(mine["lens_prob"], alone["lens_prob"], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(mine["kl_final"], alone["kl_final"], rtol=1e-4, atol=1e-6)
            assert mine["lens_commit_layer"].tolist() == alone["commit_layer"].tolist()
    record = json.loads((out / "provenance.json").read_text())
    columns = record["columns"][-len(LENS_ROW_COLUMNS) :]
    assert record["lens"] and record["lens_target"] == "next" and columns == list(LENS_ROW_COLUMNS)
    again = run_cli(*arguments)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    without = run_cli(*[argument for argument in arguments if argument != "--lens"])
    assert without.returncode == 1 and "lens: True there, False now" in without.stderr
    analysis.release_models()


def test_a_checkpoint_with_part_of_its_head_loads_without_a_lens_and_says_what_is_missing(family_folder, tmp_path):
    """A head missing one weight would be partly random: the base model loads, the lens is refused naming it."""
    shutil.copytree(family_folder("roberta", head=True), tmp_path, dirs_exist_ok=True)
    weights = load_file(tmp_path / WEIGHTS_FILE)
    save_file({k: v for k, v in weights.items() if k != "lm_head.dense.weight"}, tmp_path / WEIGHTS_FILE)
    lm = analysis.load_model(tmp_path)
    why = analysis.capabilities(lm).reason("lens")
    assert lm.unembed is None and "holds only part of its masked-LM head (it lacks lm_head.dense.weight)" in why
    assert analysis.analyze(lm, TEXT).metrics["rank"].notna().all()  # the base model is whole
    analysis.release_models()


def test_a_stopped_lens_sweep_continues_with_every_row_once(family_folder, tmp_path):
    """Killed after its first shard, the same sweep continues from the next: the lens columns are in every shard,
    every row is there once, and the dataset equals a sweep never stopped."""
    lm = analysis.load_model(family_folder("gpt2", head=True))
    settings = SweepSettings(reference="position", lens=True)
    path = texts_file(tmp_path, TEXTS)
    out = tmp_path / "stopped"

    def stop_after_first(shards, done):
        texts, ids = sweep.shard_texts(shards[0])
        write_shard(out, shards[0], batch_rows(lm, texts, ids, settings, 4096))
        done(shards[0], len(texts))
        raise KeyboardInterrupt

    sweep = open_sweep(out, path, model=lm.name, settings=settings, shard_size=3)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(lm, run_shards=stop_after_first)
    sweep.close()
    report = run_sweep(lm, path, out, settings, shard_size=3)
    assert report.written == [1, 2]
    whole = run_sweep(lm, path, tmp_path / "whole", settings, shard_size=3)
    assert whole.written == [0, 1, 2]
    rows = pd.read_parquet(out / "rows")
    assert not rows.duplicated(["sentence_id", "layer", "position", "method"]).any()
    pd.testing.assert_frame_equal(rows, pd.read_parquet(tmp_path / "whole" / "rows"))
    assert rows["lens_rank"].notna().any() and rows["entropy"].notna().all()
    analysis.release_models()


def test_a_head_in_a_form_the_model_class_does_not_read_is_named(family_folder, tmp_path):
    """A head stored under other names (as DeBERTa-v3 stores lm_predictions, or an ELECTRA discriminator its own
    head): the base model loads, and the lens is refused naming what the checkpoint holds instead."""
    shutil.copytree(family_folder("roberta", head=True), tmp_path, dirs_exist_ok=True)
    weights = load_file(tmp_path / WEIGHTS_FILE)
    renamed = {("lm_predictions." + k if k.startswith("lm_head.") else k): v for k, v in weights.items()}
    save_file(renamed, tmp_path / WEIGHTS_FILE)
    lm = analysis.load_model(tmp_path)
    why = analysis.capabilities(lm).reason("lens")
    assert lm.unembed is None
    assert "holds no masked-LM head that transformers' RobertaForMaskedLM reads (it holds lm_predictions." in why
    analysis.release_models()

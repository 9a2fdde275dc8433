"""The pages on decoders and on models that lack a stage or reference: tiny random checkpoints loaded from their
folders like a user's, through Streamlit's AppTest."""

import re

import numpy as np
import pytest
import torch

import analysis
from analysis.capture.heads import attribute_heads
from analysis.corpus.texts import texts_from_upload
from analysis.data import corpus_sentences
from analysis.definitions import SEED_SENTENCE
from analysis.tables import layer_report
from analysis.wordclass import word_classes
from tests.test_app import (
    COMPARE,
    DEEP_DIVE,
    RANKS,
    TRAJECTORIES,
    assert_clean,
    chart_holding,
    chart_rows,
    open_app,
)


def notices(app) -> str:
    return " ".join(info.value for info in app.info).replace("\\", "")


def test_a_link_to_a_missing_stage_opens_with_a_notice_and_the_choice_disabled(family_folder):
    folder = str(family_folder("gpt_neox"))
    app = open_app(model=folder, stage="attn_output", reference="position")
    assert_clean(app)
    said = notices(app)
    assert "has no stage attn_output: GPT-NeoX / Pythia" in said and "Showing stage attn_residual instead" in said
    assert "has no reference position" in said and "Showing reference embedding instead" in said
    view = app.session_state["view"]
    assert (view.settings.stage, view.settings.reference) == ("attn_residual", "embedding")
    stage, missing_stage, reference, missing_reference = app.sidebar.radio[:4]
    assert stage.options == ["layer_input", "attn_residual", "layer_output"]
    assert missing_stage.options == ["attn_output"] and missing_stage.disabled
    assert reference.options == ["raw", "embedding"]
    assert missing_reference.options == ["position"] and missing_reference.disabled
    assert "GPT-NeoX / Pythia" in " ".join(caption.value for caption in app.sidebar.caption).replace("\\", "")
    assert "runs attention and MLP side by side" in missing_stage.proto.captions[0]


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "albert", "gemma2", "opt", "bloom", "olmo2"])
@pytest.mark.parametrize("page", [TRAJECTORIES, RANKS, DEEP_DIVE])
def test_every_page_draws_other_families(family_folder, family, page):
    """Each page charts that model's own numbers: the ranks and cosines `analyze` gives, and on the deep dive the
    attention weights `decompose_heads` reads at the layer shown."""
    app = open_app(page, model=str(family_folder(family)))
    assert_clean(app)
    view = app.session_state["view"]
    assert view.model == str(family_folder(family))
    lm = analysis.load_model(view.model)
    if page == DEEP_DIVE:
        layer = int(app.subheader[0].value.removeprefix("Layer "))
        attention = chart_rows(app, chart_holding(app, '"field": "attention"'))
        expected = analysis.decompose_heads(lm, view.text, layer).attention[view.head]
        shown = attention.pivot_table(index="query", columns="key", values="attention", sort=False).to_numpy()
        np.testing.assert_allclose(shown, expected, rtol=0, atol=1e-6)
        return
    result = analysis.analyze(
        lm, view.text, stage=view.settings.stage, reference=view.settings.reference, top_k=1, overlap_n=1
    )
    rows = chart_rows(app, chart_holding(app, '"field": "rank"'))
    rows = rows[rows["rank"].notna()].sort_values(["layer", "position"])  # not the dashed baseline's rows
    expected = result.metrics.sort_values(["layer", "position"])
    assert rows["rank"].tolist() == expected["rank"].tolist()
    np.testing.assert_allclose(rows["cosine"], expected["cosine"], rtol=0, atol=1e-6)


def test_the_deep_dive_explains_what_a_parallel_decoder_lacks(family_folder):
    app = open_app(DEEP_DIVE, model=str(family_folder("gpt_neox")), stage="layer_output", reference="raw")
    assert_clean(app)
    said = notices(app)
    assert "Not shown: the original demo's computation is defined for post-LayerNorm encoders" in said
    assert "No table of the norm after the attention: GPT-NeoX / Pythia (parallel attention and MLP, rotary " in said
    assert len(app.get("vega_lite_chart")) == 4  # attribution, pattern, sinks, norms


def test_a_pre_ln_decoder_shows_its_mlp_norm_and_the_first_token_sink(family_folder):
    app = open_app(DEEP_DIVE, model=str(family_folder("gpt2")), stage="attn_residual", reference="position")
    assert_clean(app)
    assert not app.info or "has no" not in notices(app)
    assert any("MLP's input norm" in caption.value.replace("\\", "") for caption in app.caption)
    sinks = chart_rows(app, chart_holding(app, '"field": "keys"'))
    assert "first token" in set(sinks["keys"]) and "special" not in set(sinks["keys"])


def test_sink_shares_name_the_first_token_of_a_decoder_without_bos(family_folder):
    gpt2 = analysis.load_model(family_folder("gpt2"))
    result = analysis.analyze(gpt2, SEED_SENTENCE, reference="position")
    parts = analysis.decompose_heads(gpt2, SEED_SENTENCE, 1)
    report = layer_report(result, word_classes(result.tokens), parts, attribute_heads(parts, result.own_references))
    shares = report.sink_shares
    assert "first token" in set(shares["keys"]) and "special" not in set(shares["keys"])
    # each head's shares still add up to 1 over the key groups
    assert shares.groupby("head")["share"].sum().round(6).eq(1).all()


def test_base_vs_large_compares_an_encoder_with_a_decoder_on_relative_depth(family_folder):
    decoder = str(family_folder("gpt_neox"))
    app = open_app(COMPARE, model_a=analysis.BUNDLED_MODEL, model_b=decoder, stage="attn_output")
    assert_clean(app)
    assert f"{decoder} has no stage attn_output" in notices(app)
    summary = app.dataframe[0].value
    assert summary["layers"].tolist() == [6, 3]
    assert any("relative depth" in chart.proto.spec for chart in app.get("vega_lite_chart"))


def test_presets_show_family_and_size_and_mark_those_over_the_limit(monkeypatch):
    monkeypatch.setenv("TOKEN_TRAILS_MAX_MODEL_GB", "0.6")
    app = open_app()
    assert_clean(app)
    options = app.sidebar.selectbox[0].options
    for expected in (
        "gpt2 · GPT-2 decoder · 124M (hub)",
        "EleutherAI/pythia-160m · Pythia (GPT-NeoX) decoder · 162M (hub) · over this deployment's size limit",
        "HuggingFaceTB/SmolLM2-135M · SmolLM2 (Llama-style) decoder · 135M (hub)",
        "microsoft/deberta-v3-base · DeBERTa-v3 encoder · 184M (hub) · over this deployment's size limit",
        "answerdotai/ModernBERT-base · ModernBERT encoder · 149M (hub)",
        "bert-base-uncased · BERT encoder · 110M (hub)",
        "distilroberta-base · RoBERTa encoder, 6 layers · 82M (hub)",
    ):
        assert expected in options


def test_the_device_setting_places_the_model_and_refuses_one_torch_lacks(monkeypatch):
    monkeypatch.setenv("TOKEN_TRAILS_DEVICE", "cpu")
    app = open_app()
    assert_clean(app)
    assert analysis.load_model(analysis.BUNDLED_MODEL).device.type == "cpu"
    if not torch.cuda.is_available():
        monkeypatch.setenv("TOKEN_TRAILS_DEVICE", "cuda")
        app = open_app()
        assert "torch sees no cuda device" in app.error[0].value


def test_the_deep_dive_offers_an_upload_and_uploads_are_capped(tmp_path):
    app = open_app(DEEP_DIVE)
    assert_clean(app)
    label = rf"Run the corpus check: {len(corpus_sentences())} texts, about (\d+ to )?\d+ s here"
    assert re.fullmatch(label, app.button(key="run_corpus").label)
    (uploader,) = app.get("file_uploader")
    assert "up to 20,000 characters in all" in uploader.proto.label
    texts = texts_from_upload("mine.txt", b"One text.\n\nTwo texts here.\n", max_chars=100)
    assert texts.texts == ["One text.", "Two texts here."] and texts.skipped_empty == 1
    assert texts.described("mine.txt") == "2 texts of mine.txt (1 empty text skipped)"
    one = texts_from_upload("one.txt", b"Just one.\n\n\n\n", max_chars=100)
    assert one.described("one.txt") == "1 text of one.txt (3 empty texts skipped)"
    with pytest.raises(ValueError, match=re.escape("over this app's limit of 10 (max_text_chars)")) as refused:
        texts_from_upload("mine.csv", b"text\nA rather long text.\n", max_chars=10)
    assert "python -m analysis sweep" in str(refused.value)
    with pytest.raises(ValueError, match="holds no text"):
        texts_from_upload("empty.jsonl", b"\n\n", max_chars=100)


def test_a_link_asking_for_more_neighbours_than_the_vocabulary_holds_is_cut_with_a_notice(family_folder):
    folder = str(family_folder("roberta"))  # a vocabulary of 400 items
    app = open_app(model=folder, overlap_n="1000")  # the link opens on the home page, which says so
    assert_clean(app)
    assert "k and N are cut to this model's vocabulary of 400 items" in notices(app)
    assert app.session_state["view"].settings.overlap_n == 400
    app.switch_page(RANKS).run()
    assert_clean(app)
    assert max(app.select_slider[0].options, key=int) == "400" and chart_holding(app, "of top 400")

"""Hostile and odd input through the widgets and the query string, the model allowlist and the size limit."""

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import analysis
from analysis.definitions import SEED_SENTENCE
from analysis.model import loading
from tests.test_app import COMPARE, DEEP_DIVE, RANKS, TRAJECTORIES, assert_clean, open_app

ODD_TEXTS = {
    "unicode": "👩‍🔬 naïve café — مرحبا שלום 你好 e\u0301 \u200b\u200dzero width",
    "control": "bell\x07 escape\x1b[31m red \x00 null\tTab\r\nnewline",
    "markup": "<script>alert(1)</script> <b>bold</b> **star** [link](javascript:alert(1)) :red[x] $x^2$",
    "lone surrogate-free oddities": "\ufeffBOM \u202eRTL override\u202c ﬁ ligature ½ ①",
}


def unescaped(text: str, markup: str) -> bool:
    """Whether `markup` occurs in Markdown `text` without a backslash escape in front of it."""
    return re.search(r"(?<!\\)" + re.escape(markup), text) is not None


def markdown_bodies(app: AppTest) -> str:
    elements = [*app.markdown, *app.caption, *app.info, *app.warning, *app.error, *app.title, *app.header]
    return " ".join(element.value for element in elements)


@pytest.mark.parametrize("page", ["streamlit_app.py", TRAJECTORIES, RANKS, DEEP_DIVE, COMPARE])
@pytest.mark.parametrize("name", list(ODD_TEXTS))
def test_odd_text_is_analysed_or_answered_never_rendered(page, name):
    app = open_app()
    app.sidebar.text_area[0].input(ODD_TEXTS[name]).run()
    app.switch_page(page).run()
    assert_clean(app)
    assert app.get("vega_lite_chart") or page == "streamlit_app.py"
    bodies = markdown_bodies(app)
    assert not any(unescaped(bodies, markup) for markup in ("<script>", "<b>", "](javascript", "**star"))


def test_text_over_the_limit_is_refused_in_the_page_and_in_a_link(monkeypatch):
    monkeypatch.setenv("TOKEN_TRAILS_MAX_TEXT_CHARS", "100")
    app = open_app(TRAJECTORIES)
    assert app.sidebar.text_area[0].proto.max_chars == 100  # the browser stops typing at the limit
    linked = open_app(text="x" * 101)
    assert_clean(linked)
    assert "limit is 100" in " ".join(info.value for info in linked.info)
    assert linked.session_state["view"].text == SEED_SENTENCE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "../../etc/passwd"),
        ("model", "x" * 5000),
        ("model", "roberta\x00base"),
        ("model", "<img src=x onerror=alert(1)>"),
        ("top_k", "-3"),
        ("top_k", "9" * 40),
        ("overlap_n", "NaN"),
        ("highlight", "1;DROP TABLE"),
        ("layer", "1e9"),
        ("head", "🙂"),
        ("classes", "function,<b>"),
        ("stage", "layer_input\nreference=raw"),
    ],
)
def test_hostile_link_values_open_with_defaults_and_a_notice(name, value):
    app = open_app(**{name: value})
    assert_clean(app)
    notices = " ".join(info.value for info in app.info).replace("\\", "")
    assert f"The link's {name} was not usable" in notices
    assert not unescaped(markdown_bodies(app), "<img") and not unescaped(markdown_bodies(app), "<b>")
    app.switch_page(RANKS).run()
    assert_clean(app)
    assert len(app.get("vega_lite_chart")) == 2


def test_a_long_repeated_highlight_list_is_deduplicated():
    app = open_app(TRAJECTORIES, highlight=",".join(["1"] * 5000))
    assert_clean(app)
    assert app.session_state["view"].highlight == (1,)


def test_model_names_with_control_characters_or_huge_length_are_refused():
    for name in ("roberta\x00base", "a" * 2000, "bad\nname"):
        with pytest.raises(analysis.ModelLoadError, match="printable hub id or folder path"):
            analysis.load_model(name)


def test_the_allowlist_is_on_by_default_on_community_cloud(monkeypatch, family_folder):
    monkeypatch.setenv("TOKEN_TRAILS_DEPLOYMENT", "cloud")
    app = open_app(model=str(family_folder("roberta")))
    assert_clean(app)
    assert "this deployment serves only roberta\\-base" in " ".join(info.value for info in app.info)
    assert app.session_state["view"].model == analysis.BUNDLED_MODEL
    picker = app.sidebar.selectbox[0]
    assert picker.options == [
        "roberta-base · RoBERTa encoder · 125M (hub)",
        "roberta-large · RoBERTa encoder · 355M (hub)",
        "all-MiniLM-L6-v2 · BERT encoder · 23M (bundled, offline)",
    ]
    assert not app.sidebar.text_input  # no free-form model field
    compare = open_app(model_b=str(family_folder("roberta")))
    assert "model\\_b" in " ".join(info.value for info in compare.info)
    compare.switch_page(COMPARE).run()
    assert_clean(compare)
    assert not compare.selectbox(key="w_model_b").proto.accept_new_options


def test_an_explicit_allowlist_refuses_other_models_locally(monkeypatch):
    monkeypatch.setenv("TOKEN_TRAILS_ALLOWED_MODELS", "roberta-base")
    app = open_app()
    assert not app.exception
    assert "serves only roberta\\-base" in app.error[0].value
    assert not app.button  # no offer of the bundled model, which is not allowed here


def test_models_over_the_size_limit_are_refused_with_their_size(monkeypatch):
    monkeypatch.setenv("TOKEN_TRAILS_MAX_MODEL_GB", "0.05")
    app = open_app()
    assert not app.exception
    message = app.error[0].value.replace("\\", "")
    assert "about 0.1 GB in float32, over this deployment's limit of 0.1 GB" not in message  # precise, not rounded
    assert "sentence-transformers/all-MiniLM-L6-v2 is about 0.08 GB in float32" in message
    assert "limit of 0.05 GB (max_model_gb)" in message


def test_check_model_size_reads_only_the_config(tmp_path, family_folder):
    (tmp_path / "config.json").write_bytes((family_folder("roberta") / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the size comes from the config
    loading.check_model_size(str(tmp_path), 10**9)
    with pytest.raises(analysis.ModelLoadError, match="over this deployment's limit"):
        loading.check_model_size(str(tmp_path), 1000)
    with pytest.raises(analysis.ModelLoadError, match="switched off"):
        loading.check_model_size("roberta-large", 10**12)  # offline: the config cannot be fetched either


def test_settings_come_from_streamlit_secrets_too():
    st.cache_data.clear()
    st.cache_resource.clear()
    app = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=120)
    app.secrets["allowed_models"] = "roberta-large"
    app.secrets["max_text_chars"] = 60
    app.run()
    assert not app.exception
    assert "serves only roberta\\-large" in app.error[0].value
    assert app.sidebar.text_area[0].proto.max_chars == 60


def test_the_model_cache_bound_is_a_setting_like_the_others(family_folder, monkeypatch):
    """max_models, from Secrets or TOKEN_TRAILS_MAX_MODELS, bounds the package's one model cache."""
    tmp_path = family_folder("roberta")
    try:
        app = open_app(TRAJECTORIES)  # the bundled model, with the default bound of one model
        app.secrets["max_models"] = 2
        app.sidebar.selectbox[0].select("other").run()
        app.sidebar.text_input[0].input(str(tmp_path)).run()
        assert_clean(app)
        assert analysis.resident_models() == [analysis.BUNDLED_MODEL, str(tmp_path)]
        monkeypatch.setenv("TOKEN_TRAILS_MAX_MODELS", "1")
        del app.secrets["max_models"]
        app.sidebar.selectbox[0].select(analysis.BUNDLED_MODEL).run()
        assert_clean(app)
        assert analysis.resident_models() == [analysis.BUNDLED_MODEL]
    finally:
        analysis.configure_model_cache(max_models=1)

"""Every page through Streamlit's AppTest, offline on the bundled model: charts, state, links, bad input."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import analysis
from analysis.corpus.verdict import verdict_summary
from analysis.data import corpus_sentences
from analysis.definitions import METHODS, SEED_SENTENCE
from analysis.tables import opening_layer
from tests.hooks import forward_passes

ROOT = Path(__file__).resolve().parent.parent
HOME = str(ROOT / "streamlit_app.py")
TRAJECTORIES = "pages/1_Layer_trajectories.py"
RANKS = "pages/2_Rank_plots.py"
DEEP_DIVE = "pages/3_Layer_deep_dive.py"
COMPARE = "pages/4_Base_vs_large.py"


def open_app(page: str | None = None, *, fresh: bool = True, **query: str) -> AppTest:
    """A new session on `page` (default: home) with the link's `query`, once any long work it started has ended.
    `fresh`: with every Streamlit cache cleared first (else the server's caches and jobs stay, as for a second
    visitor)."""
    if fresh:
        st.cache_data.clear()
        st.cache_resource.clear()
    app = AppTest.from_file(HOME, default_timeout=120)
    for name, value in query.items():
        app.query_params[name] = value
    app.run()
    if page:
        app.switch_page(page).run()
    return settle(app)


def settle(app: AppTest, timeout: float = 300) -> AppTest:
    """Rerun the page while it shows long work in progress (in a browser its progress fragment reruns it)."""
    deadline = time.monotonic() + timeout
    while app.get("progress"):
        assert time.monotonic() < deadline, "long work did not finish in time"
        time.sleep(0.2)
        app.run()
    return app


def chart_holding(app: AppTest, fragment: str) -> int:
    """The index of the one chart whose spec holds `fragment` (a field or title only that chart has)."""
    (index,) = [i for i, spec in enumerate(specs(app)) if fragment in spec]
    return index


def specs(app: AppTest) -> list[str]:
    return [chart.proto.spec for chart in app.get("vega_lite_chart")]


def chart_rows(app: AppTest, index: int) -> pd.DataFrame:
    """All data rows of chart `index` (Streamlit ships datasets beside the spec, as Arrow)."""
    datasets = app.get("vega_lite_chart")[index].proto.datasets
    return pd.concat([pa.ipc.open_stream(named.data.data).read_pandas() for named in datasets], ignore_index=True)


def assert_clean(app: AppTest) -> None:
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]


def test_home_opens_offline_with_tokens_facts_and_links():
    app = open_app()
    assert_clean(app)
    assert "roberta\\-base is not in the local Hugging Face cache" in app.info[0].value
    assert "bundled all\\-MiniLM\\-L6\\-v2" in app.info[0].value
    chips = app.get("button_group")[0]
    assert "flies" in " ".join(chips.proto.options[i].content for i in range(len(chips.proto.options)))
    assert [m.label for m in app.get("metric")] == [
        "layers",
        "hidden size",
        "attention heads",
        "vocabulary size",
        "max tokens",
    ]
    assert app.get("metric")[0].value == "6"
    assert len(app.main.get("page_link")) == len(app.sidebar.get("page_link")) == 5
    sizes = [caption.value for caption in app.sidebar.caption if "layers ·" in caption.value]
    shown = sizes[0].replace("\\", "")  # Markdown escapes
    assert "self-check passed: agrees with the model's own forward pass to 0" in shown, shown


@pytest.mark.parametrize(("page", "charts"), [(TRAJECTORIES, 1), (RANKS, 2), (DEEP_DIVE, 5), (COMPARE, 5)])
def test_each_page_opens_offline_and_draws_its_charts(page, charts):
    app = open_app(page)
    assert_clean(app)
    assert len(app.get("vega_lite_chart")) == charts
    frames = [chart_rows(app, index) for index in range(charts)]
    assert all(len(frame) for frame in frames)  # every chart has data
    text = " ".join(str(value) for frame in frames for column in frame
                    if pd.api.types.is_string_dtype(frame[column]) for value in frame[column])  # fmt: skip
    assert "flies" in text
    labels = [button.proto.label for button in app.get("download_button")]
    assert labels.count("Download PNG") == charts and labels.count("Download SVG") == charts
    assert "Download CSV" in labels
    assert any("Model sentence\\-transformers/all\\-MiniLM\\-L6\\-v2" in caption.value for caption in app.caption)


def test_typing_new_text_updates_the_charts():
    app = open_app(TRAJECTORIES)
    app.sidebar.text_area[0].input("The cat sat on the mat.").run()
    assert_clean(app)
    labels = " ".join(chart_rows(app, 0)["label"])
    assert "· cat" in labels and "flies" not in labels
    assert "cat" in set(app.dataframe[0].value["token"])


def test_switching_pages_keeps_the_sidebar_values():
    app = open_app()
    app.sidebar.text_area[0].input("Why layer five?").run()
    app.sidebar.radio[0].set_value("layer_output").run()
    app.sidebar.radio[1].set_value("raw").run()
    for page in (TRAJECTORIES, RANKS, "streamlit_app.py"):
        app.switch_page(page).run()
        assert_clean(app)
        assert app.sidebar.text_area[0].value == "Why layer five?"
        assert app.sidebar.radio[0].value == "layer_output"
        assert app.sidebar.radio[1].value == "raw"
    assert app.query_params["stage"] == "layer_output"


def test_highlighting_a_token_marks_it_on_every_chart():
    app = open_app(RANKS)
    app.sidebar.multiselect[0].select(2).run()
    assert_clean(app)
    assert app.session_state["view"].highlight == (2,)
    rows = chart_rows(app, 0)
    assert set(rows.loc[rows["highlighted"], "position"]) == {2}
    assert app.selectbox[0].value == 2  # the neighbour table follows the first highlighted token
    app.switch_page(TRAJECTORIES).run()
    assert app.sidebar.multiselect[0].value == [2]


def click_chart(app: AppTest, index: int, position: int) -> None:
    """What the browser sends when a line is clicked: the chart's selection state. AppTest has no public call
    for chart selections, so this goes through its widget-state run (private API, pinned streamlit)."""
    states = app._tree.get_widget_states()
    state = states.widgets.add()
    state.id = app.get("vega_lite_chart")[index].proto.id
    state.string_value = json.dumps({"selection": {"pick": [{"position": position}]}})
    app._run(states)


@pytest.mark.parametrize("page", [TRAJECTORIES, RANKS])
def test_clicking_a_line_highlights_its_token(page):
    app = open_app(page)
    click_chart(app, 0, 5)
    assert_clean(app)
    assert app.session_state["view"].highlight == (5,)
    rows = chart_rows(app, 0)
    assert set(rows.loc[rows["highlighted"], "position"]) == {5}
    assert app.sidebar.multiselect[0].value == [5]


def test_highlighting_a_word_class_marks_all_its_tokens():
    app = open_app(TRAJECTORIES)
    app.sidebar.get("button_group")[0].set_value(["punctuation"]).run()
    assert_clean(app)
    rows = chart_rows(app, 0)
    assert set(rows.loc[rows["highlighted"], "label"]) == {"6 · .", "12 · ."}


def test_home_chips_highlight_tokens():
    app = open_app()
    app.get("button_group")[0].set_value([3, 5]).run()
    assert_clean(app)
    assert app.session_state["view"].highlight == (3, 5)
    app.switch_page(TRAJECTORIES).run()
    assert app.sidebar.multiselect[0].value == [3, 5]


def test_query_string_round_trip():
    query = {"text": "A period. A comma.", "stage": "layer_output", "reference": "embedding", "highlight": "2,3",
             "classes": "function", "top_k": "7", "overlap_n": "25", "model": "all-MiniLM-L6-v2"}  # fmt: skip
    app = open_app(RANKS, **query)
    assert_clean(app)
    assert not app.info
    view = app.session_state["view"]
    assert (view.text, view.settings.stage, view.settings.reference, view.highlight, view.classes) == (
        "A period. A comma.", "layer_output", "embedding", (2, 3), ("function",)
    )  # fmt: skip
    assert (view.settings.top_k, view.settings.overlap_n) == (7, 25)
    assert len(app.dataframe[0].value) == 7  # k neighbour rows
    written = {name: app.query_params[name] for name in query}
    assert written == query


def test_bad_and_stale_link_values_open_with_defaults_and_a_notice():
    app = open_app(stage="middle", top_k="0", highlight="99", color="red", model="https://x.org/m")
    assert_clean(app)
    notices = " ".join(info.value for info in app.info)
    for fragment in ("stage", "top\\_k", "color", "model", "Dropped highlighted positions \\[99\\]"):
        assert fragment in notices
    view = app.session_state["view"]
    assert (view.settings.stage, view.settings.top_k, view.highlight) == ("attn_residual", 15, ())


@pytest.mark.parametrize(
    ("text", "message"), [("   ", "text is empty"), ("\x00\x01\x02\x1b", "no tokens the model can read")]
)
def test_unreadable_text_gives_a_message_and_the_app_keeps_working(text, message):
    app = open_app(TRAJECTORIES)
    app.sidebar.text_area[0].input(text).run()
    assert not app.exception
    assert message in app.error[0].value
    app.sidebar.text_area[0].input("Back again.").run()
    assert_clean(app)
    assert len(app.get("vega_lite_chart")) == 1


def test_long_text_says_it_was_truncated_and_where():
    app = open_app(TRAJECTORIES)
    app.sidebar.text_area[0].input("word " * 600).run()
    assert_clean(app)
    warning = app.warning[0].value.replace("\\", "")
    minilm = analysis.load_model(analysis.BUNDLED_MODEL)
    in_text = len(minilm.tokenizer("word " * 600)["input_ids"])
    kept_words = minilm.max_tokens - minilm.tokenizer.num_special_tokens_to_add()
    assert f"cut to the model's {minilm.max_tokens} tokens (of {in_text}; the length its positions allow)" in warning
    assert f"character {len('word ' * kept_words) - 1}" in warning


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no/such-model-xyz", "not in the local Hugging Face cache"),
        ("/no/such/folder", "No folder at"),
        ("<script>alert(1)</script>", "neither an existing folder nor a hub id"),
    ],
)
def test_a_bad_model_gives_a_message_and_a_way_back(name, message):
    app = open_app()
    app.sidebar.selectbox[0].select("other").run()
    app.sidebar.text_input[0].input(name).run()
    assert not app.exception
    assert message in app.error[0].value.replace("\\", "")
    assert "<script>" not in app.error[0].value
    app.button[0].click().run()
    assert_clean(app)
    assert app.session_state["view"].model == "sentence-transformers/all-MiniLM-L6-v2"


def test_an_unreachable_hub_model_gives_a_message():
    app = open_app()
    app.sidebar.selectbox[0].select("roberta-base").run()
    assert not app.exception
    assert "roberta\\-base" in app.error[0].value and "bundled model" in app.error[0].value


def test_markup_in_the_text_is_shown_as_text():
    app = open_app()
    app.sidebar.text_area[0].input("<b>bold</b> **star** [link](x)").run()
    assert_clean(app)
    chips = app.get("button_group")[0].proto.options
    joined = " ".join(option.content for option in chips)
    assert "\\*" in joined and "\\<" in joined
    assert re.search(r"(?<!\\)[*<\[]", joined) is None  # every markup character arrives escaped
    assert not any("<b>" in markdown.value for markdown in app.markdown)


def test_changing_n_and_k_on_the_rank_page():
    app = open_app(RANKS)
    app.slider[0].set_value(4).run()
    app.select_slider[0].set_value(25).run()
    assert_clean(app)
    assert len(app.dataframe[0].value) == 4
    assert '"shared neighbours (of top 25)"' in specs(app)[1]
    assert app.query_params["overlap_n"] == "25"


def test_deep_dive_follows_layer_text_and_head_changes():
    app = open_app(DEEP_DIVE)
    # The bundled model has no spikes: the page opens on the layer where ranks move most, and says so once.
    expected, why = opening_layer(analysis.analyze(analysis.load_model(analysis.BUNDLED_MODEL), SEED_SENTENCE).metrics)
    assert app.subheader[0].value == f"Layer {expected}"
    said = [info.value.replace("\\", "") for info in app.info]
    assert why in said and not any("every layer's spike share is 0" in notice for notice in said)
    app.selectbox(key="w_layer").set_value(3).run()
    assert_clean(app)
    assert app.subheader[0].value == "Layer 3"
    assert app.query_params["layer"] == "3"
    assert any("No token spikes in this text" in info.value for info in app.info)  # now the picked layer's page
    app.selectbox(key="w_head").set_value(7).run()
    pattern = chart_rows(app, chart_holding(app, '"attention weight"'))
    assert pattern["attention"].sum() == pytest.approx(len(set(pattern["query"])), abs=1e-4)  # rows sum to 1
    app.sidebar.text_area[0].input("The cat sat on the mat.").run()
    assert_clean(app)
    assert "cat" in " ".join(chart_rows(app, chart_holding(app, '"change in cosine"'))["token"])
    assert len(app.get("vega_lite_chart")) == 5


def test_the_deep_dive_folds_its_sections_and_says_what_the_choices_mean():
    app = open_app(DEEP_DIVE, layer="5")
    assert [expander.label for expander in app.get("expander")] == [
        "Is the spike real? Every method over the shipped corpus",
        "Which tokens leap at layer 5",
        "Why: the heads of the attention sublayer",
        "Against the anisotropy baseline, and the rogue dimensions",
        "The original demo beside the exact computation",
        "Corpus check: does it happen regardless of the text?",
    ]
    (popover,) = app.get("popover")
    explained = " ".join(markdown.value for markdown in popover.markdown)
    assert all(name in explained for name in (*analysis.STAGES, *analysis.REFERENCES, *analysis.GEOMETRIES))
    captions = " ".join(caption.value for caption in app.caption)
    assert analysis.STAGES["attn_residual"] not in captions.replace("\\", "")  # said once, in the popover
    shown = [*app.caption, *app.info, *app.markdown, *app.error, *app.warning]
    assert not [element.value for element in shown if "`" in element.value]  # no literal backticks
    (leaps,) = [table.value for table in app.dataframe if "spike" in table.value.columns]
    assert "rank at layer 6" not in leaps.columns  # layer 5 is the last: nothing follows it
    assert list(leaps.columns[-3:]) == ["rank at layer 4", "rank at layer 5", "spike"]


def test_the_corpus_check_runs_on_request_and_a_new_session_sees_its_result(monkeypatch):
    monkeypatch.setattr("analysis.data.corpus_sentences", lambda: corpus_sentences()[:3])
    app = open_app(DEEP_DIVE)
    button = app.button(key="run_corpus")
    assert re.fullmatch(r"Run the corpus check: 3 texts, about (\d+ to )?\d+ s here", button.label)
    button.click().run()
    settle(app)
    assert_clean(app)
    corpus = chart_rows(app, chart_holding(app, '"area"'))
    assert set(corpus["word_class"]) >= {"function", "content"}
    n_tokens = sum(len(analysis.analyze(analysis.load_model(analysis.BUNDLED_MODEL), text).tokens)
                   for text in corpus_sentences()[:3])  # fmt: skip
    assert (corpus.groupby("layer")["tokens"].sum() == n_tokens).all()
    assert any(button.proto.id.endswith("corpus_table_csv") for button in app.get("download_button"))
    again = open_app(DEEP_DIVE, fresh=False)  # another visitor: the server's result, no button, no error
    assert_clean(again)
    assert not [button for button in again.button if button.proto.id.endswith("run_corpus")]
    pd.testing.assert_frame_equal(chart_rows(again, chart_holding(again, '"area"')), corpus)


def test_a_link_to_a_layer_the_model_lacks_opens_on_the_default():
    app = open_app(DEEP_DIVE, layer="40", head="99")
    assert_clean(app)
    assert any("does not exist in this model" in info.value for info in app.info)
    assert app.session_state["view"].layer == -1  # back to the opening layer


def test_base_vs_large_offline_compares_the_bundled_model_and_says_why():
    app = open_app(COMPARE)
    assert_clean(app)
    assert "cannot be loaded here" in " ".join(info.value for info in app.info).replace("\\", "")
    cka = chart_rows(app, 4)
    diagonal = cka[cka["first model layer"] == cka["second model layer"]]
    assert diagonal["CKA"].to_numpy() == pytest.approx(1.0)
    summary = app.dataframe[0].value  # one model, picked twice: one row, one set of lines, said once
    assert list(summary["layers"]) == [6] and list(summary["model"]) == ["1: all-MiniLM-L6-v2"]  # short
    assert all(len(column) <= 20 for column in summary.columns)  # headers that fit their columns
    captions = " ".join(caption.value.replace("\\", "") for caption in app.caption)
    assert "1: all-MiniLM-L6-v2 = sentence-transformers/all-MiniLM-L6-v2" in captions and "2: " not in captions
    assert "both models" not in captions and captions.count("all-MiniLM-L6-v2 0.08 GB") == 1
    assert set(chart_rows(app, 0)["model"]) == {"1: all-MiniLM-L6-v2"}


def test_base_vs_large_with_a_second_model_and_a_tight_memory_budget(family_folder, monkeypatch):
    tmp_path = family_folder("roberta")
    monkeypatch.setenv("TOKEN_TRAILS_MEMORY_BUDGET_GB", "0.05")  # the bundled model alone is ~0.09 GB
    app = open_app(COMPARE, model_b=str(tmp_path))
    assert_clean(app)
    assert analysis.resident_models() == [str(tmp_path)]  # the bundled model was released before the second loaded
    assert app.dataframe[0].value["layers"].tolist() == [6, 3]
    assert len(app.get("vega_lite_chart")) == 5


@pytest.mark.parametrize("field", ["model_a", "model_b"])
def test_base_vs_large_with_a_model_that_cannot_load_falls_back_and_says_so(field):
    app = open_app(COMPARE, **{field: "no/such-model"})
    assert_clean(app)
    said = " ".join(info.value for info in app.info).replace("\\", "")
    assert "no/such-model cannot be compared" in said and "Showing sentence-transformers/all-MiniLM-L6-v2" in said
    assert len(app.get("vega_lite_chart")) == 5
    assert app.session_state["view"].__getattribute__(field) == ""  # and the link no longer asks for it


def test_base_vs_large_of_a_model_with_itself_draws_one_set_of_lines(family_folder):
    folder = str(family_folder("roberta"))
    app = open_app(COMPARE, model_a=folder, model_b=folder)
    assert_clean(app)
    assert "a model compared with itself draws one set of lines" in " ".join(i.value for i in app.info).replace(
        "\\", "")  # fmt: skip
    rows = chart_rows(app, 0)
    assert set(rows["model"]) == {"1: " + Path(folder).name}


def test_deep_dive_attention_pattern_is_capped_for_long_text_and_says_so():
    app = open_app(DEEP_DIVE)
    app.sidebar.text_area[0].input("word " * 150).run()
    assert_clean(app)
    pattern = chart_rows(app, chart_holding(app, '"attention weight"'))
    assert len(pattern) == 96 * 96
    assert any("first 96 of 152 tokens" in caption.value for caption in app.caption)


def test_the_geometry_comes_from_the_sidebar_and_the_link():
    app = open_app(TRAJECTORIES, geometry="no_rogue", rogue_k="2")
    assert_clean(app)
    assert app.sidebar.radio[2].value == "no_rogue" and app.sidebar.number_input[0].value == 2
    assert any("no\\_rogue, 2 dimensions removed" in caption.value for caption in app.caption)
    plain = analysis.analyze(analysis.load_model(analysis.BUNDLED_MODEL), SEED_SENTENCE, geometry="no_rogue", rogue_k=2)
    rows = chart_rows(app, 0)
    tokens = rows[rows["position"] >= 0].sort_values(["layer", "position"])
    np.testing.assert_allclose(tokens["cosine"], plain.metrics["cosine"])
    app.sidebar.radio[2].set_value("centered").run()
    assert_clean(app)
    assert app.query_params["geometry"] == "centered"
    assert not app.sidebar.number_input  # rogue_k only where it applies
    assert not (chart_rows(app, 0)["position"] < 0).any()  # the anisotropy baseline is drawn under plain cosine


def test_trajectories_draw_the_anisotropy_baseline_and_colour_by_word_class():
    app = open_app(TRAJECTORIES)
    assert_clean(app)
    rows = chart_rows(app, 0)
    baseline = rows[rows["position"] < 0].sort_values("layer")
    background = analysis.background(analysis.load_model(analysis.BUNDLED_MODEL), "attn_residual", "position")
    np.testing.assert_allclose(baseline["cosine"], background.vectors.anisotropy)
    tokens = rows[rows["position"] >= 0]
    assert set(tokens["word_class"]) == {"function", "content", "punctuation", "special"}
    assert '"word class"' in specs(app)[0]  # a legend for the colours
    app.sidebar.multiselect[0].select(2).run()
    highlighted = chart_rows(app, 0)
    assert "word_class" not in highlighted.columns or highlighted["word_class"].isna().all()


def test_the_verdict_runs_on_request_and_reopens_in_any_session(monkeypatch):
    """Issue 16: the verdict's progress bar was drawn from inside a cached function, so every later visit to the
    page replayed it and failed. It runs as a job now: a new session after it finished sees the result at once."""
    monkeypatch.setattr("analysis.corpus.verdict.corpus_sentences", lambda: corpus_sentences()[:3])
    monkeypatch.setattr("analysis.data.corpus_sentences", lambda: corpus_sentences()[:3])
    app = open_app(DEEP_DIVE)
    button = app.button(key="run_verdict")
    assert re.fullmatch(r"Run the verdict: 3 sentences x 5 methods, about (\d+ to )?\d+ s here", button.label)
    button.click().run()
    settle(app)
    assert_clean(app)
    verdict = chart_rows(app, chart_holding(app, '"field": "method"'))
    assert list(dict.fromkeys(verdict["method"])) == list(METHODS)
    assert verdict_summary(verdict) in [info.value.replace("\\", "") for info in app.info]
    assert any(button.proto.id.endswith("verdict_table_csv") for button in app.get("download_button"))
    for visit in range(2):  # two more visitors, each in a new session on the warm server
        again = open_app(DEEP_DIVE, fresh=False)
        assert_clean(again)
        assert not [button for button in again.button if button.proto.id.endswith("run_verdict")], visit
        pd.testing.assert_frame_equal(chart_rows(again, chart_holding(again, '"field": "method"')), verdict)


@pytest.mark.parametrize(("page", "passes"), [(RANKS, 1), (DEEP_DIVE, 2)])
def test_a_page_view_runs_the_model_once_over_its_text(page, passes):
    """Everything a page shows of its text (the analysis, the LayerNorm effect, the heads, the original demo) is
    read from one trace. Home then Rank plots share one; the deep dive's also records attention weights and head
    contexts, so home then deep dive is two. A rerun runs none."""
    minilm = analysis.load_model(analysis.BUNDLED_MODEL)  # the resident model, the one the app will use
    with forward_passes(minilm, SEED_SENTENCE) as calls:
        app = open_app(page, model=analysis.BUNDLED_MODEL)
        assert_clean(app)
        assert app.get("vega_lite_chart") and len(calls) == passes
        app.run()
        assert len(calls) == passes


def test_the_corpus_check_says_which_texts_it_skipped_as_unreadable(monkeypatch):
    """A text with no token the model reads (only zero-width spaces) is skipped by the counting engine; the page
    names it by its number instead of dropping it silently."""
    texts = [corpus_sentences()[0], "\u200b\u200b\u200b", corpus_sentences()[1]]
    monkeypatch.setattr("analysis.data.corpus_sentences", lambda: texts)
    app = open_app(DEEP_DIVE)
    app.button(key="run_corpus").click().run()
    settle(app)
    assert_clean(app)
    warnings = " ".join(warning.value for warning in app.warning).replace("\\", "")
    assert "1 text has no token the model reads (only spaces, control or zero-width characters) and was skipped " in (
        warnings
    )
    assert "(text 2)" in warnings
    corpus = chart_rows(app, chart_holding(app, '"area"'))
    minilm = analysis.load_model(analysis.BUNDLED_MODEL)
    n_tokens = sum(len(analysis.analyze(minilm, text).tokens) for text in (texts[0], texts[2]))
    assert (corpus.groupby("layer")["tokens"].sum() == n_tokens).all()


def fold(app: AppTest, name: str, opened: bool) -> AppTest:
    """What the browser sends when the reader opens or closes the section `name` (private API, pinned streamlit,
    as `click_chart`)."""
    states = app._tree.get_widget_states()
    state = states.widgets.add()
    (state.id,) = [e.proto.id for e in app.get("expander") if e.proto.id.endswith(f"section_{name}")]
    state.bool_value = opened
    app._run(states)
    return app


def sections(app: AppTest) -> dict[str, bool]:
    """Each foldable section's name and whether it is drawn open."""
    return {e.proto.id.rsplit("section_", 1)[1]: e.proto.expanded for e in app.get("expander")}


def test_the_deep_dive_stays_as_the_reader_left_it(monkeypatch):
    """Sections keep their state across a layer change, an upload, a finished job and a trip to another page."""
    monkeypatch.setattr("analysis.data.corpus_sentences", lambda: corpus_sentences()[:2])
    app = open_app(DEEP_DIVE)
    default = sections(app)
    assert default == {"verdict": True, "leaps": True, "heads": True, "baseline": False, "original_demo": False,
                       "corpus": False}  # fmt: skip
    fold(app, "heads", False)
    fold(app, "corpus", True)
    left = {**default, "heads": False, "corpus": True}
    assert sections(app) == left
    app.selectbox(key="w_layer").set_value(3).run()
    assert app.subheader[0].value == "Layer 3" and sections(app) == left
    app.file_uploader[0].set_value(("mine.txt", b"The cat sat.\nA dog ran.\n", "text/plain")).run()
    assert_clean(app)
    assert sections(app) == left
    app.button(key="run_corpus").click().run()
    settle(app)
    assert_clean(app)
    assert any("corpus_table_csv" in button.proto.id for button in app.get("download_button"))
    assert sections(app) == left
    app.switch_page(RANKS).run()
    app.switch_page(DEEP_DIVE).run()
    assert sections(app) == left


def test_downloads_are_named_after_the_model_the_page_and_the_chart(monkeypatch):
    """Files downloaded from different pages and models never collide: each is named model_page_what."""
    from streamlit.delta_generator import DeltaGenerator

    names: list[str] = []
    offered = DeltaGenerator.download_button

    def recording(self, label, data, file_name=None, **kwargs):
        names.append(file_name)
        return offered(self, label, data, file_name=file_name, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    app = open_app(RANKS)
    for page in (TRAJECTORIES, DEEP_DIVE, COMPARE):
        app.switch_page(page).run()
    assert len(names) > 20 and len(set(names)) == len(names)  # no two the same
    assert all(name.startswith("all-minilm-l6-v2_") for name in names)
    assert {name.split("_")[1] for name in names} == {"rank-plots", "layer-trajectories", "layer-deep-dive",
                                                      "base-vs-large"}  # fmt: skip
    assert "all-minilm-l6-v2_rank-plots_rank_trajectories.png" in names

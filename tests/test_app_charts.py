"""Every chart every page draws, from every view a reader can leave the previous page in, checked for what an
honest chart must satisfy (tests/chart_checks.py): symmetric diverging scales, fixed colour domains whose legend
says the range, no repeated tick labels, no empty legend, no squashed chart, colours that belong to tokens."""

import altair as alt
import pandas as pd
import pytest

from tests.chart_checks import app_chart, chart_faults, key_colours
from tests.test_app import COMPARE, DEEP_DIVE, HOME, RANKS, TRAJECTORIES, assert_clean, open_app, settle

PAGES = [TRAJECTORIES, RANKS, DEEP_DIVE, COMPARE, HOME]

STATES = {
    "defaults": {},
    "highlighted": {"highlight": "2,6", "classes": "punctuation"},
    "centered": {"geometry": "centered"},
    "standardized": {"geometry": "standardized", "stage": "layer_output"},
    "no_rogue": {"geometry": "no_rogue", "rogue_k": "2"},
    "lens": {"head": "roberta", "lens": "true", "highlight": "3"},
    "lens, masked": {"head": "roberta", "lens": "true", "masked": "true"},
    "lens, decoder, another stage": {"head": "gpt2", "lens": "true", "lens_stage": "attn_residual"},
    "lens, fitted": {"head": "gpt2", "lens": "true", "lens_reading": "tuned", "fitted": "linear,tuned"},
}


def walk(app, pages=PAGES):
    """Switch through `pages` in one session, as a reader clicks the sidebar's links; yield each settled page."""
    for page in pages:
        app.switch_page(page if page != HOME else "streamlit_app.py").run()
        yield page, settle(app)


def fit_for_the_app(folder: str, kinds: list[str], fitted_folder, monkeypatch) -> None:
    """Lenses of `kinds` fitted for the model in `folder` (block outputs) where the app keeps them, in
    `fitted_folder`."""
    import analysis
    from analysis.data import corpus_sentences
    from analysis.fitted.fit import fit_lens
    from dashboard.cache import fitted_path

    monkeypatch.setenv("TOKEN_TRAILS_FITTED_FOLDER", str(fitted_folder))
    lm = analysis.load_model(folder)
    for kind in kinds:
        fit_lens(lm, corpus_sentences(), kind=kind, tuned_tokens=1024).save(fitted_path(lm, "layer_output", kind))


@pytest.mark.parametrize("state", list(STATES))
def test_every_chart_of_every_page_is_honest_from_every_view(family_folder, state, tmp_path, monkeypatch):
    query = dict(STATES[state])
    if "head" in query:
        query["model"] = str(family_folder(query.pop("head"), head=True))
    if "fitted" in query:
        fit_for_the_app(query["model"], query.pop("fitted").split(","), tmp_path / "fitted", monkeypatch)
    app = open_app(**query)
    assert_clean(app)
    drawn = 0
    for page, shown in walk(app):
        assert_clean(shown)
        for index, element in enumerate(shown.get("vega_lite_chart")):
            spec, rows = app_chart(element)
            assert chart_faults(spec, rows) == [], (state, page, index)
            drawn += 1
        if query.get("lens") and page in (TRAJECTORIES, RANKS):
            assert shown.session_state["view"].lens, page  # the reader's lens stays on as they move
        if "fitted" in STATES[state] and page in (TRAJECTORIES, RANKS):  # the held-out scores were drawn and checked
            assert any("in hidden space" in element.proto.spec for element in shown.get("vega_lite_chart")), page
    assert drawn >= 12


def test_a_tokens_colour_depends_on_the_token_never_on_what_else_is_highlighted():
    """Every chart that keys highlighted tokens by colour, on every page: the tokens {4, 10}, then {3, 4, 9, 10};
    4 and 10 keep their colours, and four tokens have four colours."""
    app = open_app(highlight="4,10")
    keyed = 0
    for page, shown in walk(app, PAGES[:-1]):
        few = [key_colours(app_chart(element)[0]) for element in shown.get("vega_lite_chart")]
        shown.sidebar.multiselect[0].set_value([3, 4, 9, 10]).run()
        more = [key_colours(app_chart(element)[0]) for element in settle(shown).get("vega_lite_chart")]
        assert_clean(shown)
        assert len(few) == len(more), page
        for before, after in zip(few, more, strict=True):
            for label, colour in before.items():
                assert after[label] == colour, (page, label)
            assert len(set(after.values())) == len(after), page
            keyed += bool(before)
        shown.sidebar.multiselect[0].set_value([4, 10]).run()
    assert keyed >= 3


def _chart(values: list[dict], **encodings) -> dict:
    """A small layered-free Vega-Lite spec over `values` (rect marks), with the given encodings."""
    base = alt.Chart(alt.Data(values=values)).mark_rect().encode(x="x:N", y="y:N", **encodings)
    return base.properties(width=300, height=300).to_dict()


CELLS = [{"x": "a", "y": "p", "v": 0.03}, {"x": "b", "y": "p", "v": -0.21}, {"x": "a", "y": "q", "v": 0.01}]


@pytest.mark.parametrize(
    ("scale", "title", "fault"),
    [
        (alt.Scale(scheme="redblue", domainMid=0), "v (here -0.21 to 0.03)", "no fixed domain"),
        (alt.Scale(scheme="redblue", domain=[-0.21, 0.03]), "v (here -0.21 to 0.03)", "not symmetric"),
        (alt.Scale(scheme="blues", domain=[0, 0.02]), "v (here -0.21 to 0.03)", "does not hold"),
        (alt.Scale(scheme="redblue", domain=[-0.21, 0.21]), "v", "does not say the range"),
        (alt.Scale(scheme="redblue", domain=[-0.21, 0.21]), "v (here -0.5 to 0.03)", "the values are"),
    ],
)
def test_the_check_fails_on_a_dishonest_colour_scale(scale, title, fault):
    spec = _chart(CELLS, color=alt.Color("v:Q", scale=scale, title=title))
    faults = chart_faults(spec, pd.DataFrame(CELLS))
    assert any(fault in message for message in faults), faults
    honest = _chart(CELLS, color=alt.Color("v:Q", scale=alt.Scale(scheme="redblue", domain=[-0.21, 0.21]),
                                           title="v (here -0.21 to 0.03; symmetric)"))  # fmt: skip
    assert chart_faults(honest, pd.DataFrame(CELLS)) == []


def test_the_check_fails_on_bad_ticks_an_empty_legend_and_a_squashed_chart():
    rows = [{"layer": layer, "p": p} for layer, p in enumerate([0.001, 0.002, 0.004])]
    line = alt.Chart(alt.Data(values=rows)).mark_line()
    repeated = line.encode(x="layer:Q", y=alt.Y("p:Q", axis=alt.Axis(format=".0%"))).properties(height=300)
    assert any("repeats tick labels ['0%']" in fault for fault in chart_faults(repeated.to_dict(), pd.DataFrame(rows)))
    empty = line.encode(
        x="layer:Q", y="p:Q", color=alt.Color("label:N", scale=alt.Scale(domain=[], range=[]), title="tokens")
    ).properties(height=300)
    assert any("an empty legend" in fault for fault in chart_faults(empty.to_dict(), pd.DataFrame(rows)))
    collapsed = line.encode(x="layer:Q", y=alt.Y("p:Q", scale=alt.Scale(domain=[1, 1.0000000002])))
    assert any("unreadable tick labels" in fault
               for fault in chart_faults(collapsed.properties(height=300).to_dict(), pd.DataFrame(rows)))  # fmt: skip
    squashed = line.encode(x="layer:Q", y="p:Q").properties(height=80)
    assert any("px tall" in fault for fault in chart_faults(squashed.to_dict(), pd.DataFrame(rows)))

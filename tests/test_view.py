"""The view's round trip through the query string, and what bad or unknown link values do."""

import pytest

from analysis.settings import AnalysisSettings
from dashboard.view import View, view_from_query, view_to_query


def test_every_field_round_trips():
    settings = AnalysisSettings(
        stage="layer_input", reference="raw", geometry="no_rogue", rogue_k=5, top_k=3, overlap_n=40
    )
    view = View(
        text="A, b & c?",
        model="roberta-large",
        settings=settings,
        highlight=(4, 1),
        classes=("special", "function"),
        layer=5,
        head=2,
        model_a="roberta-base",
        model_b="all-MiniLM-L6-v2",
    )
    loaded, notices = view_from_query(view_to_query(view), View())
    assert loaded == view and notices == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("text", ""),
        ("text", "x" * 20_001),  # the default max_text_chars
        ("model", "https://example.org/model"),
        ("model", "../../etc"),
        ("stage", "attention"),
        ("reference", "<b>"),
        ("geometry", "whitened"),
        ("rogue_k", "-1"),
        ("rogue_k", "65"),
        ("highlight", "1,two"),
        ("highlight", "-1"),
        ("classes", "nouns"),
        ("top_k", "0"),
        ("top_k", "51"),
        ("overlap_n", "1e3"),
        ("layer", "-2"),
        ("head", "h1"),
        ("model_b", "http://x"),
    ],
)
def test_a_bad_value_keeps_the_default_and_says_so(name, value):
    defaults = View()
    loaded, notices = view_from_query({name: value}, defaults)
    assert loaded == defaults
    assert len(notices) == 1 and name in notices[0] and "default" in notices[0]


def test_unknown_parameters_are_ignored_with_a_notice_and_lists_take_the_last_value():
    loaded, notices = view_from_query({"utm_source": "x", "stage": ["raw", "layer_output"]}, View())
    assert loaded.settings.stage == "layer_output"
    assert notices == ["Ignored the unknown link parameter 'utm_source'."]

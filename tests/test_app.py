"""The home page, driven with Streamlit's AppTest, offline on the bundled model."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.analyze import METRICS_COLUMNS

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


@pytest.fixture
def app() -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    return AppTest.from_file(APP, default_timeout=120).run()


def test_home_page_opens_offline_with_the_metrics_table(app):
    assert not app.exception
    assert not app.error
    frame = app.dataframe[0].value
    assert list(frame.columns) == list(METRICS_COLUMNS)
    assert frame["layer"].max() == 5  # the bundled model has 6 layers
    assert "flies" in set(frame["token"])


def test_typing_new_text_updates_the_table(app):
    app.sidebar.text_area[0].input("The cat sat on the mat.").run()
    frame = app.dataframe[0].value
    assert "cat" in set(frame["token"]) and "flies" not in set(frame["token"])


def test_empty_text_gives_a_message_not_a_traceback(app):
    app.sidebar.text_area[0].input("   ").run()
    assert not app.exception
    assert "text is empty" in app.error[0].value


def test_an_unreachable_model_gives_a_message(app):
    app.sidebar.selectbox[0].select("roberta-base (Hugging Face hub)").run()
    assert not app.exception
    assert "roberta-base" in app.error[0].value and "bundled model" in app.error[0].value

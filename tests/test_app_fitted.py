"""Fitted lenses in the app: fitting one as a job from the Lens view, every later session reading through it, the
held-out scores drawn, a link to a lens not fitted falling back with a notice, masked mode through a fitted lens,
and where each token commits on Rank plots."""

import numpy as np
import pytest

import analysis
from analysis.charts import FITTED_SCORES
from analysis.definitions import SEED_SENTENCE
from analysis.fitted.lens import load_fitted
from tests.test_app import RANKS, TRAJECTORIES, assert_clean, chart_holding, chart_rows, open_app, settle
from tests.test_app_lens import lens_chart


@pytest.fixture
def fitted_folder(tmp_path, monkeypatch):
    """The folder the app keeps fitted lenses in, empty, for this test alone (the setting fitted_folder)."""
    folder = tmp_path / "fitted"
    monkeypatch.setenv("TOKEN_TRAILS_FITTED_FOLDER", str(folder))
    return folder


def test_a_lens_fitted_in_the_app_is_read_by_every_later_session(family_folder, fitted_folder):
    folder = str(family_folder("gpt2", head=True))
    app = open_app(RANKS, model=folder, lens="true")
    assert_clean(app)
    assert app.radio(key="w_lens_reading").options == ["as the model's head reads it"]
    missing = app.radio(key="w_missing_lens_reading")
    assert missing.disabled and missing.options == ["linear", "tuned"]
    assert all("not fitted for" in caption.replace("\\", "") for caption in missing.proto.captions)
    assert any("No lens is fitted" in caption.value for caption in app.caption)
    app.button(key="run_fit").click().run()
    app = settle(app)
    assert_clean(app)
    second = open_app(RANKS, fresh=False, model=folder, lens="true", lens_reading="linear")  # another visitor
    assert_clean(second)
    assert second.radio(key="w_lens_reading").value == "linear"
    (record,) = fitted_folder.glob("*-linear.json")
    fitted = load_fitted(record)
    expected = analysis.lens(analysis.load_model(folder), SEED_SENTENCE, fitted=fitted).metrics
    rows = chart_rows(second, lens_chart(second, "lens_rank")).sort_values(["layer", "position"])
    assert rows["lens_rank"].tolist() == expected.sort_values(["layer", "position"])["lens_rank"].tolist()
    scores = chart_rows(second, chart_holding(second, FITTED_SCORES["r2"].removeprefix("r² ")))
    r2 = scores[scores["score"] == "r2"].set_index(["lens", "layer"])["value"]
    table = fitted.scores.set_index(["lens", "layer"])["r2"]
    np.testing.assert_allclose(r2.sort_index(), table.sort_index(), rtol=1e-12)
    commits = chart_rows(second, chart_holding(second, "commits at layer")).sort_values("position")
    first_layer = expected[expected["layer"] == 0].sort_values("position")
    assert commits["commit"].tolist() == ["never" if np.isnan(c) else str(int(c)) for c in
                                          first_layer["commit_layer"].astype(float)]  # fmt: skip


def test_a_link_to_a_lens_not_fitted_falls_back_to_the_plain_lens_and_says_so(family_folder, fitted_folder):
    folder = str(family_folder("gpt2", head=True))
    app = open_app(TRAJECTORIES, model=folder, lens="true", lens_reading="tuned")
    assert_clean(app)
    assert app.session_state["view"].lens_reading == "plain"
    assert any("The tuned lens is not fitted" in info.value for info in app.info)


def test_masked_mode_reads_through_a_fitted_lens(family_folder, fitted_folder):
    folder = str(family_folder("roberta", head=True))
    app = open_app(TRAJECTORIES, model=folder, lens="true")
    app.button(key="run_fit").click().run()
    app = settle(app)
    app.radio(key="w_lens_reading").set_value("linear").run()
    app.toggle(key="w_masked").set_value(True).run()
    app = settle(app)
    assert_clean(app)
    (record,) = fitted_folder.glob("*-linear.json")
    lm = analysis.load_model(folder)
    expected = analysis.lens(lm, SEED_SENTENCE, masked=True, fitted=load_fitted(record)).metrics
    rows = chart_rows(app, lens_chart(app, "lens_prob")).sort_values(["layer", "position"])
    np.testing.assert_allclose(
        rows["lens_prob"], expected.sort_values(["layer", "position"])["lens_prob"], rtol=1e-5, atol=1e-9
    )


@pytest.mark.parametrize("page", ["pages/3_Layer_deep_dive.py", "pages/4_Base_vs_large.py"])
def test_every_other_page_opens_from_a_fitted_lens_view(family_folder, fitted_folder, page):
    """Left on the Lens view reading through a fitted lens, the deep dive (whose lens columns read the view's stage
    as it is, with each token's commitment layer) and Base vs large (each model's head as it is) open cleanly."""
    folder = str(family_folder("gpt2", head=True))
    app = open_app(RANKS, model=folder, lens="true")
    app.button(key="run_fit").click().run()
    app = settle(app)
    app.radio(key="w_lens_reading").set_value("linear").run()
    assert_clean(app)
    app.switch_page(page).run()
    app = settle(app)
    assert_clean(app)
    if "deep_dive" in page:
        assert any("commits at layer" in frame.value.columns for frame in app.dataframe)

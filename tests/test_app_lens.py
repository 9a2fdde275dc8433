"""The lens in the app: tiny random checkpoints saved with their heads, opened through Streamlit's AppTest like a
user's folder; every chart's rows are `analysis.lens`'s, read from the page's one trace."""

import numpy as np
import pytest

import analysis
from analysis.charts import LENS_MEASURES
from analysis.definitions import SEED_SENTENCE
from dashboard.view import View, view_from_query, view_to_query
from tests.hooks import forward_passes
from tests.test_app import (
    COMPARE,
    DEEP_DIVE,
    RANKS,
    TRAJECTORIES,
    assert_clean,
    chart_holding,
    chart_rows,
    open_app,
    settle,
)
from tests.test_app_families import notices


def lens_chart(app, measure: str) -> int:
    """The index of the chart whose y axis is `measure` (every lens chart's tooltip names every measure)."""
    return chart_holding(app, f'"title": "{LENS_MEASURES[measure]}"')


@pytest.mark.parametrize(
    ("page", "measures"), [(TRAJECTORIES, ["lens_prob", "entropy"]), (RANKS, ["lens_rank", "kl_final"])]
)
def test_the_lens_view_charts_the_models_own_predictions(family_folder, page, measures):
    folder = str(family_folder("roberta", head=True))
    app = open_app(page, model=folder, lens="true", stage="layer_output")
    assert_clean(app)
    expected = analysis.lens(analysis.load_model(folder), SEED_SENTENCE, stage="layer_output").metrics
    for measure in measures:
        rows = chart_rows(app, lens_chart(app, measure)).sort_values(["layer", "position"])
        np.testing.assert_allclose(rows[measure], expected[measure], rtol=1e-6, atol=1e-9)
        assert rows["target"].tolist() == expected.sort_values(["layer", "position"])["target"].tolist()
    show = app.radio(key="w_lens")
    assert show.value is True and not show.disabled


def test_rank_plots_mark_the_target_among_each_layers_predictions(family_folder):
    folder = str(family_folder("gpt2", head=True))
    app = open_app(RANKS, model=folder, lens="true", highlight="1", top_k="5")
    assert_clean(app)
    lens = analysis.lens(analysis.load_model(folder), SEED_SENTENCE, top_k=5)
    assert lens.target == "next"
    grid = app.dataframe[0].value
    assert list(grid.columns) == [f"layer {layer}" for layer in range(3)]
    top = lens.top[(lens.top["position"] == 1) & (lens.top["layer"] == 0)]
    assert grid["layer 0"].iloc[0].startswith(top["prediction"].iloc[0].replace("Ġ", "Ġ"))
    marked = " ".join(grid.to_numpy().ravel())
    target = lens.metrics[lens.metrics["position"] == 1]["target"].iloc[0]
    assert f"▶{target}◀" in marked
    assert any(f"the target is {target}" in caption.value.replace("\\", "") for caption in app.caption)
    masked = app.toggle(key="w_masked")
    assert masked.disabled and "never sees a mask token" in masked.proto.help
    targets = app.selectbox(key="w_lens_target")
    assert targets.options == ["next (the model's default)", "own"]  # the default once, not twice
    assert app.selectbox(key="w_lens_stage").value == "layer_output"  # the classic logit lens unless asked
    targets.select("own").run()
    assert_clean(app)
    assert app.session_state["view"].lens_target == "own"


def test_masked_mode_runs_as_a_job_equals_the_api_and_reopens_at_once(family_folder):
    """Masked mode runs the model once per token: a job on the server, its progress shown meanwhile; its lens is
    `analysis.lens(masked=True)`, and a new session with the same link sees it at once."""
    folder = str(family_folder("roberta", head=True))
    app = open_app(TRAJECTORIES, model=folder, lens="true")
    app.toggle(key="w_masked").set_value(True).run()
    app = settle(app)
    assert_clean(app)
    expected = analysis.lens(analysis.load_model(folder), SEED_SENTENCE, stage=View().lens_stage, masked=True).metrics
    rows = chart_rows(app, lens_chart(app, "lens_prob")).sort_values(["layer", "position"])
    assert rows["position"].unique().tolist() == expected["position"].unique().tolist()
    np.testing.assert_allclose(rows["lens_prob"], expected["lens_prob"], rtol=1e-6, atol=1e-9)
    again = open_app(TRAJECTORIES, fresh=False, model=folder, lens="true", masked="true")
    assert_clean(again)
    assert not again.get("progress") and len(again.get("vega_lite_chart")) == 2
    assert app.selectbox(key="w_lens_target").disabled


def test_a_model_without_a_head_shows_the_choice_disabled_with_why():
    app = open_app(model=analysis.BUNDLED_MODEL, lens="true", masked="true")  # the link opens on the home page
    assert_clean(app)
    assert "has no lens: its checkpoint holds no masked-LM head" in notices(app)
    view = app.session_state["view"]
    assert (view.lens, view.masked) == (False, False)
    app.switch_page(TRAJECTORIES).run()
    show = app.radio(key="w_lens")
    assert show.disabled
    assert any("No lens for" in caption.value and "BertModel" in caption.value for caption in app.caption)
    assert chart_holding(app, '"field": "cosine"') == 0  # the vocabulary view instead


@pytest.mark.parametrize("stage", ["layer_output", "attn_residual"])
def test_the_deep_dive_puts_the_lens_rank_beside_the_embedding_rank(family_folder, stage):
    """The lens columns read the very vectors the rank columns rank (the sidebar's stage), whatever stage the
    lens view reads (here the default, layer_output)."""
    folder = str(family_folder("roberta", head=True))
    app = open_app(DEEP_DIVE, model=folder, layer="1", stage=stage)
    assert_clean(app)
    table = app.dataframe[0].value
    lens = analysis.lens(analysis.load_model(folder), SEED_SENTENCE, stage=stage).metrics
    at_layer = lens[lens["layer"] == 1].set_index("position")
    shown = table.set_index("position")
    assert "rank at layer 1" in shown.columns
    assert shown["lens rank at layer 1 (own)"].tolist() == at_layer.loc[shown.index, "lens_rank"].tolist()


def test_base_vs_large_compares_lens_curves_on_relative_depth(family_folder):
    encoder, decoder = str(family_folder("roberta", head=True)), str(family_folder("llama", head=True))
    app = open_app(COMPARE, model_a=encoder, model_b=decoder, stage="layer_output")
    assert_clean(app)
    rows = chart_rows(app, lens_chart(app, "lens_rank"))
    assert set(rows["model_name"]) == {encoder, decoder}
    assert rows.groupby("model_name")["depth"].max().tolist() == [1.0, 1.0]
    without = open_app(COMPARE, model_a=analysis.BUNDLED_MODEL, model_b=encoder)
    assert_clean(without)  # the model with a head is drawn, and why the other has none is said once
    said = notices(without)
    assert said.count(f"No lens for {analysis.BUNDLED_MODEL}") == 1 and "BertModel" in said
    assert set(chart_rows(without, lens_chart(without, "lens_rank"))["model_name"]) == {encoder}


def test_the_lens_settings_travel_in_the_link():
    view = View(lens=True, lens_target="next", masked=True)
    loaded, said = view_from_query(view_to_query(view), View())
    assert loaded == view and not said
    loaded, said = view_from_query({"lens": "maybe", "lens_target": "previous"}, View())
    assert (loaded.lens, loaded.lens_target) == (False, "") and len(said) == 2


@pytest.mark.parametrize(("page", "passes"), [(TRAJECTORIES, 1), (RANKS, 1), (DEEP_DIVE, 2)])
def test_the_lens_reads_the_pages_one_trace(family_folder, page, passes):
    """The vocabulary view and the lens read one forward pass over the text (the deep dive's trace also records
    attention, as without the lens); a rerun runs none."""
    folder = str(family_folder("roberta", head=True))
    with forward_passes(analysis.load_model(folder), SEED_SENTENCE) as calls:
        app = open_app(page, model=folder, lens="true")
        assert_clean(app)
        assert len(calls) == passes
        app.run()
        assert len(calls) == passes

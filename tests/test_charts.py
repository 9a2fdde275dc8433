"""Chart and table builders: data, scales, highlighting, own-token marks, and PNG/SVG export."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.charts import (
    DATA,
    FAINT,
    HIGHLIGHT_KEY,
    LABEL_GAP,
    PALETTE,
    comparison_chart,
    neighbor_grid,
    overlap_chart,
    spread_labels,
    trajectory_chart,
    verdict_chart,
)
from analysis.definitions import GEOMETRIES, METHODS, SEED_SENTENCE, WORD_CLASSES
from analysis.tables import token_label
from analysis.wordclass import word_classes


@pytest.fixture(scope="module")
def result(request):
    return analysis.analyze(request.getfixturevalue("minilm"), SEED_SENTENCE)


def test_rank_chart_is_log_scaled_with_rank_one_on_top(result):
    spec = trajectory_chart(result.metrics, "rank", [2]).spec
    y = spec["layer"][0]["encoding"]["y"]
    assert y["field"] == "rank" and y["scale"]["type"] == "log" and y["scale"]["reverse"] is True
    assert "log scale" in y["title"]


def test_highlighted_tokens_are_flagged_keyed_and_labelled(result):
    figure = trajectory_chart(result.metrics, "cosine", [6, 2])
    rows = figure.data
    assert set(rows.loc[rows["highlighted"], "position"]) == {2, 6}
    assert len(rows) == len(result.metrics)
    assert set(rows.loc[rows["highlighted"], "label"]) == {token_label(2, "flies"), token_label(6, ".")}
    assert set(rows.loc[~rows["highlighted"], "color"]) == {FAINT}
    # Colours belong to positions, whatever order they were picked in and whatever else is highlighted.
    assert figure.key == ((token_label(2, "flies"), token_label(6, ".")), (PALETTE[2], PALETTE[6]))
    assert trajectory_chart(result.metrics, "cosine", [2, 6]).key == figure.key
    _, _, labels = figure.spec["layer"]
    assert labels["mark"]["type"] == "text"  # drawn for highlighted rows at the last layer only
    assert "datum.highlighted" in labels["transform"][0]["filter"] and "=== 5" in labels["transform"][0]["filter"]
    drawn = figure.vega_lite()["layer"][1]["encoding"]["color"]
    assert drawn["title"] == "highlighted tokens" and drawn["scale"] == {
        "domain": list(figure.key[0]),
        "range": list(figure.key[1]),
    }


def test_end_labels_that_share_a_point_are_spread_apart():
    values = np.array([0.50, 0.50, 0.51, 0.9, 0.2])
    placed = spread_labels(values, "cosine", 0.0, 1.0)
    order = np.sort(placed)
    assert (np.diff(order) >= LABEL_GAP - 1e-12).all()  # no two closer than a line of text
    assert np.abs(placed - values).max() <= 2 * LABEL_GAP  # each stays near its line's end
    ranks = spread_labels(np.array([1.0, 1.0, 1.0]), "rank", 1.0, 30_000.0)
    screen = 1 - np.log10(ranks) / np.log10(30_000)
    assert (ranks >= 1).all() and (np.diff(np.sort(screen)) >= LABEL_GAP - 1e-12).all()


def test_a_highlight_changes_the_rows_and_the_key_never_the_cached_spec(result):
    one = trajectory_chart(result.metrics, "cosine", [3])
    two = trajectory_chart(result.metrics, "cosine", [2, 6])
    assert one.spec is two.spec  # built and validated once per shape
    assert one.data["highlighted"].sum() == 6 and one.key != two.key
    spec = one.vega_lite()
    assert spec["data"] == {"name": DATA} and spec["datasets"][DATA] is one.data
    spec["layer"].clear()  # the figure hands out copies: its cached spec stays whole
    assert len(one.spec["layer"]) == 3
    assert HIGHLIGHT_KEY in json.dumps(one.spec)  # the placeholder stays in the cached spec


@pytest.mark.parametrize(
    ("geometry", "cosine_title", "rank_title"),
    [
        ("cosine", "cosine similarity to original embedding", "rank of own embedding (1 = nearest"),
        ("centered", "cosine to original embedding, after centering", "rank of own embedding, after centering"),
        ("standardized", "after standardizing", "rank of own embedding, after standardizing"),
        ("no_rogue", "rogue dimensions removed", "rank of own embedding, rogue dimensions removed"),
    ],
)
def test_axis_titles_follow_the_geometry(result, geometry, cosine_title, rank_title):
    for measure, title in (("cosine", cosine_title), ("rank", rank_title)):
        y = trajectory_chart(result.metrics, measure, [], geometry=geometry).spec["layer"][0]["encoding"]["y"]
        assert title in y["title"]


def test_every_geometry_has_axis_titles_of_its_own_and_an_unknown_one_is_refused(result):
    titles = {
        geometry: tuple(
            trajectory_chart(result.metrics, measure, [], geometry=geometry).spec["layer"][0]["encoding"]["y"]["title"]
            for measure in ("cosine", "rank")
        )
        for geometry in GEOMETRIES
    }
    assert len(set(titles.values())) == len(GEOMETRIES)
    with pytest.raises(ValueError, match="Unknown geometry 'whitened'"):
        trajectory_chart(result.metrics, "cosine", [], geometry="whitened")


def test_word_classes_and_the_baseline_are_in_the_legend(result):
    """With nothing highlighted, each line has its token's word-class colour and the legend names every class
    once, in a colour of its own; the highlight layers add no legend; the baseline is keyed as a dashed line."""
    classes = word_classes(result.tokens)
    figure = trajectory_chart(result.metrics, "cosine", [], classes=classes, baseline=np.linspace(0.1, 0.2, 6))
    faint, bold, labels, baseline = figure.spec["layer"]
    colour = faint["encoding"]["color"]
    assert colour["field"] == "word_class" and colour["title"] == "word class" and colour["legend"] is not None
    assert colour["scale"]["domain"] == list(WORD_CLASSES)
    assert len({str(shade) for shade in colour["scale"]["range"]}) == len(WORD_CLASSES)
    lines = figure.data[figure.data["position"] >= 0]  # the baseline's rows have no token
    by_position = lines.groupby("position")["word_class"].agg(set)
    assert by_position.tolist() == [{word_class} for word_class in classes.sort_index()]
    assert bold["encoding"]["color"]["legend"] is None and labels["encoding"]["color"]["legend"] is None
    dash = baseline["encoding"]["strokeDash"]
    assert dash["scale"]["domain"] == ["anisotropy baseline"] and dash["legend"] is not None


def test_exports_carry_a_title_and_room_at_the_edges(result):
    figure = trajectory_chart(result.metrics, "rank", [2]).titled("rank trajectories", "model · stage attn_residual")
    spec = figure.to_json()
    assert spec["title"] == {"text": "rank trajectories", "subtitle": ["model · stage attn_residual"],
                             "anchor": "start"}  # fmt: skip
    assert min(spec["padding"].values()) >= 10
    assert "title" not in figure.vega_lite()  # the app's page has its own headings


def test_the_verdict_chart_wraps_its_panels_and_titles_its_axis_once():
    verdict = pd.DataFrame(
        [{"method": m, "layer": 0, "word_class": "function", "spikes": 1, "tokens": 2, "share": 0.5, "low": 0.1,
          "high": 0.9} for m in METHODS]
    )  # fmt: skip
    spec = verdict_chart(verdict).spec
    assert spec["columns"] == 3 and spec["spec"]["width"] * 3 < 720
    titles = {layer["encoding"]["y"]["title"] for layer in spec["spec"]["layer"]}
    assert titles == {"share of tokens that spike"}
    assert spec["spec"]["layer"][0]["encoding"]["color"]["legend"]["orient"] == "top"


def test_comparisons_name_models_shortly_and_keep_their_order(result):
    other = dataclasses.replace(result, model="/home/someone/models/a-very-long-folder-name/roberta-tiny")
    figure = comparison_chart([other, result], "rank", [2], relative=False)
    assert list(dict.fromkeys(figure.data["model"])) == ["1: roberta-tiny", "2: all-MiniLM-L6-v2"]
    assert set(figure.data["model_name"]) == {other.model, result.model}  # the full name, for the tooltip
    assert figure.spec["facet"]["column"]["sort"] == ["1: roberta-tiny", "2: all-MiniLM-L6-v2"]
    ends = figure.data.dropna(subset=["label_y"])
    assert sorted(ends["model"]) == ["1: roberta-tiny", "2: all-MiniLM-L6-v2"]  # one label per highlighted line


def test_overlap_chart_has_both_comparisons_and_drops_layer_zeros_missing_previous(result):
    figure = overlap_chart(result, [2])
    frame = figure.data
    assert figure.key == ((token_label(2, "flies"),), (PALETTE[2],))  # the highlighted line is keyed, by position
    assert set(frame["against"]) == {"previous layer (l-1)", "original neighbourhood"}
    previous = frame[frame["against"] == "previous layer (l-1)"]
    assert previous["layer"].min() == 1
    assert frame["shared"].between(0, 100).all()


def test_neighbor_grid_marks_the_own_token_and_gives_its_rank_outside_the_top_k():
    lm = analysis.load_model(analysis.BUNDLED_MODEL)
    result = analysis.analyze(lm, SEED_SENTENCE, stage="layer_output", reference="raw", top_k=3)
    position = 6  # "."
    grid = neighbor_grid(result, position, 3)
    assert list(grid.columns) == [f"layer {layer}" for layer in range(6)]
    ranks = result.metrics[result.metrics["position"] == position].set_index("layer")["rank"]
    for layer, rank in ranks.items():
        column = grid[f"layer {layer}"]
        if rank <= 3:
            assert column.iloc[rank - 1] == "▶.◀"
        else:
            assert column["own token"] == f"▶.◀ rank {rank:,}"
    assert list(grid.index[:3]) == ["1", "2", "3"]


@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg")])
def test_charts_export_as_png_and_svg(result, fmt, magic):
    data = trajectory_chart(result.metrics, "cosine", [2]).to_bytes(fmt)
    assert data.startswith(magic)
    assert len(data) > 5_000


@pytest.mark.parametrize(("suffix", "start"), [("html", "<!DOCTYPE html>"), ("json", "{")])
def test_charts_save_as_html_and_json(result, tmp_path, suffix, start):
    path = tmp_path / f"chart.{suffix}"
    overlap_chart(result, [2]).save(path)
    assert path.read_text().lstrip().startswith(start)
    with pytest.raises(ValueError, match=r"use \.png, \.svg, \.html or \.json"):
        overlap_chart(result, [2]).save(tmp_path / "chart.gif")


def test_the_verdict_grid_draws_an_x_axis_under_each_panel_and_none_under_the_empty_cell():
    rows = [
        {"method": method, "layer": layer, "word_class": word_class, "spikes": 1, "tokens": 10, "share": 0.1,
         "low": 0.02, "high": 0.4}
        for method in METHODS for layer in range(3) for word_class in ("function", "content")
    ]  # fmt: skip
    svg = verdict_chart(pd.DataFrame(rows)).to_bytes("svg").decode()
    assert svg.count("aria-label=\"X-axis titled 'layer (block index l)'") == len(METHODS)  # five panels, five axes


def test_a_rank_axis_spans_at_least_a_decade_even_when_every_rank_is_1(result):
    """All ranks 1 gave the browser's Vega a collapsed log domain, ticked 1.00000000006, 1.00000000008, …"""
    ones = result.metrics.assign(rank=1)
    flat = dataclasses.replace(result, metrics=ones)
    for figure in (trajectory_chart(ones, "rank", [2]), comparison_chart([flat, flat], "rank", [2], True)):
        spec = json.dumps(figure.spec)
        assert '"domain": [1, 10.0]' in spec and '"reverse": true' in spec
    ranks = trajectory_chart(result.metrics.assign(rank=result.metrics["rank"] * 0 + 50_265), "rank", []).spec
    assert '"domain": [1, 100000.0]' in json.dumps(ranks)

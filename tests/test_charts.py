"""Chart and table builders: data, scales, highlighting, own-token marks, and PNG/SVG export."""

import pytest

import analysis
from analysis.charts import DATA, FAINT, PALETTE, neighbor_grid, overlap_chart, token_label, trajectory_chart
from analysis.synthetic import SEED_SENTENCE


@pytest.fixture(scope="module")
def result(request):
    return analysis.analyze(request.getfixturevalue("minilm"), SEED_SENTENCE)


def test_rank_chart_is_log_scaled_with_rank_one_on_top(result):
    spec = trajectory_chart(result.metrics, "rank", [2]).spec
    y = spec["layer"][0]["encoding"]["y"]
    assert y["field"] == "rank" and y["scale"]["type"] == "log" and y["scale"]["reverse"] is True
    assert "log scale" in y["title"]


def test_highlighted_tokens_are_flagged_and_labelled(result):
    figure = trajectory_chart(result.metrics, "cosine", [2, 6])
    rows = figure.data
    assert set(rows.loc[rows["highlighted"], "position"]) == {2, 6}
    assert len(rows) == len(result.metrics)
    assert set(rows.loc[rows["highlighted"], "label"]) == {token_label(2, "flies"), token_label(6, ".")}
    assert set(rows.loc[rows["highlighted"], "colour"]) == set(PALETTE[:2])
    assert set(rows.loc[~rows["highlighted"], "colour"]) == {FAINT}
    labels = figure.spec["layer"][1]
    assert labels["mark"]["type"] == "text"  # drawn for highlighted rows at the last layer only
    assert "datum.highlighted" in labels["transform"][0]["filter"] and "=== 5" in labels["transform"][0]["filter"]


def test_a_highlight_changes_the_rows_and_never_the_spec(result):
    plain = trajectory_chart(result.metrics, "cosine", [])
    picked = trajectory_chart(result.metrics, "cosine", [3])
    assert plain.spec == picked.spec
    assert not plain.data["highlighted"].any() and picked.data["highlighted"].sum() == 6
    spec = picked.vega_lite()
    assert spec["data"] == {"name": DATA} and spec["datasets"][DATA] is picked.data
    spec["layer"].clear()  # the figure hands out copies: its cached spec stays whole
    assert len(picked.spec["layer"]) == 2


def test_overlap_chart_has_both_comparisons_and_drops_layer_zeros_missing_previous(result):
    frame = overlap_chart(result, [2]).data
    assert set(frame["against"]) == {"previous layer (l-1)", "original neighbourhood"}
    previous = frame[frame["against"] == "previous layer (l-1)"]
    assert previous["layer"].min() == 1
    assert frame["shared"].between(0, 100).all()


def test_neighbor_grid_marks_the_own_token_and_gives_its_rank_outside_the_top_k():
    encoder = analysis.load_model(analysis.BUNDLED_MODEL)
    result = analysis.analyze(encoder, SEED_SENTENCE, stage="layer_output", reference="raw", top_k=3)
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

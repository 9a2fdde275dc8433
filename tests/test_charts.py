"""Chart and table builders: data, scales, highlighting, own-token marks, and PNG/SVG export."""

import pytest

import analysis
from analysis.charts import chart_bytes, neighbor_grid, overlap_chart, token_label, trajectory_chart
from analysis.synthetic import SEED_SENTENCE


@pytest.fixture(scope="module")
def result(request):
    return analysis.analyze(request.getfixturevalue("minilm"), SEED_SENTENCE)


def test_rank_chart_is_log_scaled_with_rank_one_on_top(result):
    spec = trajectory_chart(result.metrics, "rank", [2]).to_dict()
    y = spec["layer"][0]["encoding"]["y"]
    assert y["field"] == "rank" and y["scale"]["type"] == "log" and y["scale"]["reverse"] is True
    assert "log scale" in y["title"]


def test_highlighted_tokens_are_flagged_and_labelled(result):
    chart = trajectory_chart(result.metrics, "cosine", [2, 6])
    lines, labels = chart.layer
    assert set(lines.data.loc[lines.data["highlighted"], "position"]) == {2, 6}
    assert set(labels.data["label"]) == {token_label(2, "flies"), token_label(6, ".")}
    assert (labels.data["layer"] == 5).all()
    assert len(lines.data) == len(result.metrics)


def test_overlap_chart_has_both_comparisons_and_drops_layer_zeros_missing_previous(result):
    chart = overlap_chart(result, [2])
    frame = chart.data
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
    data = chart_bytes(trajectory_chart(result.metrics, "cosine", [2]), fmt)
    assert data.startswith(magic)
    assert len(data) > 5_000

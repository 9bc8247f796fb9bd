"""labkit.viz.contrastive_motion on smoke-budget results: every view builds, its controls show one
group per option, the numbers drawn are the tables' numbers, and the explorer trains one row."""
import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.data.moving_shapes import MOTIONS
from labkit.experiments import contrastive_motion as ex
from labkit.viz import contrastive_motion as views
from smoke import cached_smoke_run
from viz_checks import assert_one_group_each


@pytest.fixture(scope="module")
def results():  # the default cache: a rerun of the tests (or the explorer) trains nothing
    yield from cached_smoke_run(ex)


def _buttons(fig):
    return [b.label for b in fig.layout.updatemenus[0].buttons]


def test_clip_player_has_a_class_menu_and_a_frame_slider(results):
    fig = views.plot_clip_and_motion(results)
    levels = ex.entries(results, ex.SSL)[0]["levels"]
    frames = results["config"]["frames"]
    assert _buttons(fig) == list(MOTIONS)
    assert_one_group_each(fig, [1 + levels] * len(MOTIONS))  # the frame and one image per level
    assert all(isinstance(t, go.Image) and t.source.startswith("data:image/png") for t in fig.data)
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(t) for t in range(frames)]
    assert len(fig.frames) == frames and all(len(f.data) == len(fig.data) for f in fig.frames)
    assert fig.frames[1].data[0].source != fig.frames[2].data[0].source  # the frames do change


def test_pca_colours_lie_in_the_unit_cube():
    import torch

    rgb = views._pca_rgb(torch.randn(5, 8, 4, 4))
    assert rgb.shape == (5, 4, 4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_displacement_arrows_per_class_and_r2_in_the_title(results):
    fig = views.plot_displacement(results)
    assert _buttons(fig) == list(MOTIONS)
    assert_one_group_each(fig, [4] * len(MOTIONS))  # per panel: the frame and its arrows
    assert "test R² of m¹ → displacement" in fig.layout.title.text
    xs, ys = views._arrows(np.array([0.0, 5.0]), np.array([0.0, 0.0]), np.array([3.0, 0.1]), np.array([4.0, 0.0]))
    assert xs[:3] == [0.0, 3.0, None] and ys[:2] == [0.0, 4.0] and len(xs) == 7  # the short arrow is left out


def test_probe_bars_are_the_table_means(results):
    fig = views.plot_probe_bars(results)
    table = ex.probe_table(results)
    rows = list(dict.fromkeys(t["row"] for t in table))
    assert _buttons(fig) == rows and ex.SSL in rows
    assert_one_group_each(fig, [len(views.STAGES)] * len(rows))
    for index, row in enumerate(rows):
        found = [t for t in table if t["row"] == row]
        for bar, stage in zip(fig.data[3 * index:3 * index + 3], views.STAGES):
            np.testing.assert_allclose(np.asarray(bar.y, float), [t[f"{stage}_mean"] for t in found], atol=1e-4)
    assert fig.layout.shapes[0].y0 == pytest.approx(1 / 8)


def test_similarity_matrix_per_level(results):
    fig = views.plot_similarity_matrix(results)
    levels = ex.entries(results, ex.SSL)[0]["levels"]
    assert _buttons(fig) == [f"level {level}" for level in range(1, levels + 1)]
    assert_one_group_each(fig, [2] * levels)  # the heatmap and the best-target crosses
    for heatmap in fig.data[::2]:
        z = np.asarray(heatmap.z, float)
        assert z.shape == (views.SIMILARITY_ANCHORS, views.SIMILARITY_ANCHORS)
        assert np.all(np.abs(z) <= 1.001)
    assert "top-1" in fig.layout.title.text


def test_tsne_per_level_with_one_trace_per_class(results):
    fig = views.plot_tsne(results)
    levels = ex.entries(results, ex.SSL)[0]["levels"]
    assert _buttons(fig) == ["z⁰", "m¹", "m²"][:levels + 1]
    assert_one_group_each(fig, [len(MOTIONS)] * (levels + 1))
    assert [t.name for t in fig.data[:len(MOTIONS)]] == list(MOTIONS)
    tested = len(MOTIONS) * results["config"]["test_per_class"]
    assert sum(len(t.x) for t in fig.data[:len(MOTIONS)]) == tested


def test_budget_and_accuracy_bars_show_the_tables(results):
    fig = views.plot_budget(results)
    table = ex.budget_table(results)
    for trace in fig.data:
        found = [t for t in table if t["row"] == trace.name]
        assert list(trace.x) == [t["labeled_per_class"] for t in found]
        np.testing.assert_allclose(np.asarray(trace.y, float), [t["accuracy_mean"] for t in found], atol=1e-4)
    assert [t.name for t in fig.data] == [ex.CE_ONLY, ex.SSL, ex.APPEARANCE]
    assert list(fig.data[0].x) == sorted({2, *results["config"]["label_budgets"]})
    bars = views.plot_accuracy_bars(results)
    assert _buttons(bars) == ["overall", "out-and-back pair"]
    assert_one_group_each(bars, [1, 1])
    accuracy = ex.accuracy_table(results)
    assert list(bars.data[0].y) == [t["row"] for t in accuracy]
    np.testing.assert_allclose(np.asarray(bars.data[1].x, float), [t["out_and_back_mean"] for t in accuracy], atol=1e-4)


def test_a_row_without_motion_gives_a_message(results):
    assert "no motion pathway" in views.plot_clip_and_motion(results, ex.APPEARANCE).layout.annotations[0].text
    assert "No no such row run" in views.plot_tsne(results, "no such row").layout.annotations[0].text


def test_tables(results):
    assert "out-and-back pair accuracy" in repr(views.accuracy_result_table(results))
    text = repr(views.probe_result_table(results))
    assert "probe after Stage A" in text and "m¹" in text
    cost = repr(views.cost_result_table(results))
    assert "motion / appearance" in cost and "×" in cost


def test_explorer_trains_a_row_and_compares_it_with_the_chapter(results):
    explorer = views.train_explorer(results)
    assert explorer.messages() == []  # nothing trains until the button is pressed
    explorer.button.click()  # the defaults are the chapter's SSL row: straight from the cache
    lines = explorer.messages()[0].split("\n")
    assert lines[0].startswith("this run (2 labeled per class): test accuracy")
    assert lines[0].split(": ", 1)[1] == lines[2].split(": ", 1)[1] and lines[2].startswith(ex.SSL)
    assert lines[1].startswith(ex.CE_ONLY)
    explorer.controls["levels"].value = 1
    explorer.controls["ssl"].value = False
    explorer.button.click()
    text = explorer.messages()[0].split("\n")[0]
    assert "probes (random init → after training) z⁰" in text and "m²" not in text and "top-1" not in text

"""labkit.viz.slade on smoke-budget results: every view builds, its controls show one group per
option, and the explorer trains a student from the chapter's teacher."""
import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.experiments import slade as ex
from labkit.experiments import slade_student as student
from labkit.viz import plots
from labkit.viz import slade as views
from smoke import cached_smoke_run
from viz_checks import assert_one_group_each


@pytest.fixture(scope="module")
def results():  # the default cache: a rerun of the tests (or the explorer) trains nothing
    yield from cached_smoke_run(ex)


def test_histograms_slide_over_the_snapshots(results):
    fig = views.plot_similarity_histograms(results)
    snapshots = ex.first_seed(results, ex.SLADE)["snapshots"]
    labels = [s.label for s in fig.layout.sliders[0].steps]
    assert labels == [str(s["step"]) for s in snapshots]
    sizes = [4 + (2 if s["thresholds"] is not None else 0) for s in snapshots]  # 2 bars, 2 Gaussians, T1, T2
    assert_one_group_each(fig, sizes)
    for (label, indices), snap in zip(plots.control_visibility(fig), snapshots):
        bars = [fig.data[i] for i in indices if isinstance(fig.data[i], go.Bar)]
        width = float(np.diff(student.HISTOGRAM_BINS)[0])
        for bar in bars:  # densities integrate to 1
            assert float(np.sum(bar.y)) * width == pytest.approx(1.0, rel=1e-4)


def test_a_missing_row_gives_a_message(results):
    fig = views.plot_similarity_histograms(results, row="no such row")
    assert "No no such row run" in fig.layout.annotations[0].text


def test_delta_figure_has_a_step_per_delta_and_counts(results):
    fig = views.plot_delta_precision(results)
    assert fig.layout.sliders, "mining never started in the smoke run: no selection curve"
    assert [s.label for s in fig.layout.sliders[0].steps] == [f"{d:+.2f}" for d in student.DELTAS]
    assert fig.layout.sliders[0].active == student.DELTAS.index(0.0)


def test_recall_bars_have_one_bar_trace_per_metric(results):
    fig = views.plot_recall_bars(results)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["R@1", "R@2", "R@4", "R@8", "NMI"]
    assert_one_group_each(fig, [1] * 5)
    rows = ex.row_names(results)
    assert list(fig.data[0].y) == rows


def test_tables_tsne_gallery_pools_and_trace(results):
    assert "SLADE (basis selection)" in repr(views.recall_result_table(results))
    assert "AUC basis" in repr(views.pair_result_table(results))
    assert "chosen" in repr(views.sweep_result_table(results))
    tsne = views.plot_tsne(results)
    assert len(tsne.data) == 2 and len(tsne.data[0].x) == views.TSNE_CLASSES * 20
    gallery = views.plot_gallery(results)
    assert len(gallery.layout.sliders[0].steps) == views.GALLERY_QUERIES
    assert_one_group_each(gallery, [2] * views.GALLERY_QUERIES)  # teacher strip, student strip
    pools = views.plot_pools(ex.config_of(results))
    assert sum(isinstance(t, go.Image) for t in pools.data) == 4
    assert len(views.plot_statistics_trace(results).data) >= 4


def test_framed_strip_colours():
    strip = views._framed(np.zeros((3, 4, 4), np.uint8), [None, True, False], pad=1)
    assert strip.shape == (3, 6, 3 * 8)
    assert tuple(strip[:, 0, 0]) == (120, 120, 120)
    assert tuple(strip[:, 0, 8]) == (46, 160, 67) and tuple(strip[:, 0, 16]) == (214, 39, 40)


def test_explorer_trains_a_student_from_the_teacher(results):
    explorer = views.student_explorer(results)
    assert explorer.messages() == []  # nothing trains until the button is pressed
    explorer.controls["novel_classes"].value = views.NOVEL_FROM_TEST
    explorer.button.click()
    text = explorer.messages()[0]
    assert text.startswith("this student: test R@1") and "teacher (the chapter" in text

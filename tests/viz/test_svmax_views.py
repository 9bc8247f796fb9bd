"""labkit.viz.svmax on smoke-budget results: trace counts, control visibility, values, explorers."""
import copy
import math

import ipywidgets
import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.experiments import svmax as ex
from labkit.viz import plots
from labkit.viz import svmax as views
from labkit.viz.show import PLOTLY_MIME
from viz_checks import assert_one_group_each


@pytest.fixture(scope="module")
def results():
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_PROGRESS", "off")
    try:  # the default cache: a rerun of the tests (or the retrieval explorer) trains nothing
        yield ex.run(ex.from_budget("smoke", workers=1))
    finally:
        mp.undo()


def test_bounds_slider_over_d_and_markers_on_the_bounds():
    fig = views.plot_bounds()
    assert isinstance(fig, go.Figure)
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(d) for d in views.BOUND_DIMS]
    assert_one_group_each(fig, [6] * len(views.BOUND_DIMS))  # band, U, L, three batch kinds
    for (label, indices) in plots.control_visibility(fig):
        d = int(label)
        traces = {fig.data[i].name: fig.data[i] for i in indices}
        iso = traces["isotropic (stacked bases)"]
        b = np.asarray(iso.x)
        assert b.min() == d and b.max() <= 256 and np.all(b % d == 0)
        np.testing.assert_allclose(iso.y, np.sqrt(b / d), rtol=1e-6)  # s_μ = U for stacked bases
        np.testing.assert_allclose(traces["collapsed (rank 1)"].y, np.sqrt(b) / d, rtol=1e-6)  # = L
        random = np.asarray(traces["random unit rows"].y)
        assert np.all(random >= np.sqrt(b) / d - 1e-5) and np.all(random <= np.sqrt(b / d) + 1e-5)
        assert traces["random unit rows"].legendgroup == "random"


def test_spectrum_slider_over_checkpoints(results):
    fig = views.plot_spectrum(results)
    run = next(r for r in results["grid"] if r["variant"] == "vanilla" and r["lr"] == 0.5)
    steps = run["spectrum_steps"]
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(s) for s in steps]
    assert_one_group_each(fig, [2] * len(steps), num_static=1)
    last = [fig.data[i] for i in plots.control_visibility(fig)[-1][1][1:]]
    assert last[0].name.startswith("vanilla") and last[1].name.startswith("SVMax")
    np.testing.assert_allclose(last[0].y, run["spectra"][-1], rtol=1e-4, atol=1e-4)
    assert fig.data[0].y[0] == pytest.approx(math.sqrt(150 / 16), rel=1e-5)  # isotropic level of the test batch
    with pytest.raises(ValueError, match="no contrastive runs at lr 0.3"):
        views.plot_spectrum(results, lr=0.3)


def test_unit_circle_slider_has_every_epoch(results):
    fig = views.plot_unit_circle(results)
    num_epochs = results["config"]["circle_epochs"]
    steps = fig.layout.sliders[0].steps
    assert len(steps) == len(fig.frames) == num_epochs + 1
    assert [list(s.args[0]) for s in steps] == [[str(e)] for e in range(num_epochs + 1)]  # step e plays frame e
    assert len(fig.data) == 2 and fig.data[0].subplot == "polar" and fig.data[1].subplot == "polar2"
    for variant, trace in zip(("vanilla", "svmax"), fig.data):
        run = next(r for r in results["circle"] if r["variant"] == variant)
        assert trace.name == views.VARIANT_LABELS[variant]
        assert list(trace.marker.color) == list(run["labels"])  # colours stored once, not per frame
        for epoch, frame in enumerate(fig.frames):
            E = run["embeddings"][epoch]
            theta = frame.data[fig.data.index(trace)].theta
            np.testing.assert_allclose(theta, np.degrees(np.arctan2(E[:, 1], E[:, 0])), atol=0.51)
            assert frame.data[0].marker.color is None
    np.testing.assert_array_equal(fig.data[0].theta, fig.frames[-1].data[0].theta)  # opens on the last epoch


def test_recall_vs_lr_dropdown_over_losses(results):
    fig = views.plot_recall_vs_lr(results)
    losses = results["config"]["losses"]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == [f"{loss} loss" for loss in losses]
    assert_one_group_each(fig, [2] * len(losses))
    table = ex.grid_table(results)
    vanilla = fig.data[0]
    assert vanilla.name == "vanilla" and list(vanilla.x) == sorted(results["config"]["lrs"])
    expected = [next(r["r1"] for r in table if r["variant"] == "vanilla" and r["lr"] == lr) for lr in vanilla.x]
    np.testing.assert_allclose(vanilla.y, expected, atol=1e-4)
    assert fig.layout.xaxis.type == "log"


def test_recall_vs_lr_has_one_trace_per_lambda():
    rows = [dict(loss="triplet", lr=lr, seed=s, variant=v, lam=lam, recall={"1": 0.5}, nmi=0.1, spread=0.2)
            for lr in (0.1, 0.01) for s in (0, 1) for v, lam in (("vanilla", 0.0), ("svmax", 0.1), ("svmax", 1.0))]
    fig = views.plot_recall_vs_lr({"grid": rows})
    assert [t.name for t in fig.data] == ["vanilla", "SVMax λ=0.1", "SVMax λ=1"]
    assert fig.data[2].line.dash == "dash" and fig.data[1].line.dash is None  # the paper's λ is solid


def test_gan_grid_cells_and_options(results):
    fig = views.plot_gan_grid(results)
    gan = results["gan"]
    rows, cols = len({views._gan_row(r) for r in gan}), len(gan[0]["checkpoint_steps"])
    pairs = {(r["lr"], r["seed"]) for r in gan}
    options = plots.control_visibility(fig)
    assert len(options) == len(pairs)
    for label, indices in options:
        heatmaps = [fig.data[i] for i in indices if isinstance(fig.data[i], go.Heatmap)]
        assert len(heatmaps) == rows * cols
        assert {h.coloraxis for h in heatmaps} == {"coloraxis"}
    heatmap = fig.data[options[0][1][rows * cols]]
    np.testing.assert_array_equal(heatmap.z, plots.log_count_levels(gan[0]["heatmaps"][0]))
    assert heatmap.z.dtype == np.uint8


def test_gan_grid_keeps_at_most_four_seeds_and_marks_missing_rows(results):
    fake = copy.deepcopy(results)
    fake["gan"] = [dict(r, seed=s) for r in results["gan"] for s in range(6)]
    fake["gan"] += [dict(r, seed=0, unroll_steps=5) for r in results["gan"]]  # unrolled: one seed only
    fig = views.plot_gan_grid(fake)
    options = plots.control_visibility(fig)
    assert [label for label, _ in options] == [f"lr 0.025 · seed {s}" for s in range(4)]
    seed1 = [fig.data[i] for i in options[1][1]]
    assert any(getattr(t, "text", None) == ("not run",) for t in seed1)
    assert sum(isinstance(t, go.Heatmap) for t in seed1) == 2 * len(results["gan"][0]["checkpoint_steps"])


def test_summary_figures(results):
    ablation = views.plot_ablation(results)
    assert len(ablation.data) == 1 and len(ablation.data[0].x) == len(ex.ABLATIONS)
    assert ablation.data[0].y[-1].startswith("⚠")  # the b < d row warned
    assert not ablation.data[0].y[0].startswith("⚠")

    sweep = views.plot_sweep(results)
    assert not sweep.data and "full budget" in sweep.layout.annotations[0].text
    run = results["grid"][0]
    fake = dict(results, sweep=[dict(run, batch_size=b, embedding_dim=d, variant=v, seed=seed,
                                     recall={"1": 0.5 + 0.01 * seed + 0.1 * (v == "svmax")})
                                for b in (40, 80) for d in (8, 16) for v in ("vanilla", "svmax") for seed in (0, 1)])
    heat = views.plot_sweep(fake).data[0]
    np.testing.assert_allclose(heat.z, np.full((2, 2), 0.1), atol=1e-6)

    modes = views.plot_gan_modes(results)
    assert [t.name for t in modes.data] == ["vanilla", "vanilla + SVMax"]


def test_training_curves(results):
    fig = views.plot_training_curves(results)
    pairs = {(r["loss"], r["lr"]) for r in results["grid"]}
    assert len(fig.layout.updatemenus[0].buttons) == len(pairs)
    assert_one_group_each(fig, [8] * len(pairs), num_static=2)  # U and L lines stay
    one = views.plot_training_curves(results, "contrastive", 0.5)
    assert len(one.data) == 10 and not one.layout.updatemenus
    with pytest.raises(ValueError, match="no grid runs"):
        views.plot_training_curves(results, "npair")


def test_bounds_explorer_renders_and_refuses_b_below_d():
    panel = views.bounds_explorer()
    assert isinstance(panel, ipywidgets.Widget)
    gauge = panel.figure.data[1]
    assert gauge.x[0] == pytest.approx(float(ex.svmax.mean_singular_value(ex.svmax.random_unit_batch(150, 16,
                                               __import__("torch").Generator().manual_seed(0)))), rel=1e-6)
    panel.controls["kind"].value = "isotropic"
    panel.controls["b"].value = 160
    assert panel.figure.data[1].x[0] == pytest.approx(math.sqrt(160 / 16))  # stacked bases reach U
    panel.controls["b"].value = 8
    assert panel.figure is None and "b >= d" in panel.messages()[0]
    assert "b &gt;= d" in panel.output.outputs[0]["data"]["text/html"]
    panel.controls["d"].value = 4
    assert panel.figure is not None and len(panel.figure.data[2].y) == 4


def test_retrieval_explorer_trains_through_the_cache(results):
    panel = views.retrieval_explorer(results)
    assert isinstance(panel, ipywidgets.Widget)
    table, curves = panel.items
    assert [row[0] for row in table.cells()] == ["vanilla", "SVMax, λ=1"]
    r1 = next(r["recall"]["1"] for r in results["grid"] if r["variant"] == "svmax" and r["lr"] == 0.5)
    assert table.cells()[1][1] == f"{r1:.3f}"  # the chapter's run, from the cache
    assert "Recall@1 on digits 5–9" in table._repr_html_()  # a full header, not a plotly table
    panel.controls["variant"].value = "spread_out"
    assert panel.items[0] is table  # nothing happens before the click
    panel.button.click()
    assert [row[0] for row in panel.items[0].cells()] == ["vanilla", "spread-out, λ=1"]
    assert PLOTLY_MIME in panel.output.outputs[1]["data"]
    panel.controls["loss"].value = "triplet"
    assert panel.controls["lam"].value == pytest.approx(ex.PAPER_LAMBDA["triplet"])


def test_result_tables_have_full_headers_and_drop_one_seed_stds(results):
    grid = views.retrieval_table(results)
    assert len(grid.rows) == len(ex.grid_table(results))
    assert "Recall@1 on digits 5–9" in repr(grid)
    assert not any("±" in cell for row in grid.cells() for cell in row)  # smoke: one seed, no std
    ablation = views.ablation_results(results)
    assert [row[0] for row in ablation.cells()] == [label for label, *_ in ex.ABLATIONS]
    assert "b=15 < d=16" in ablation.cells()[-1][-1] and ablation.cells()[0][-1] == "—"
    gan = views.gan_results(results)
    assert [row[1] for row in gan.cells()] == ["vanilla", "vanilla + SVMax"]
    assert "samples within 3σ of a mode (%)" in repr(gan)
    cells = views.cells_table(results)
    assert {row[0] for row in cells.cells()} == {"3"} and all(row[3] == "none (one seed, or no spread)" for row in cells.cells())


def test_tables_show_the_std_over_several_seeds(results):
    fake = copy.deepcopy(results)
    fake["grid"] += [dict(r, seed=1, recall={**r["recall"], "1": r["recall"]["1"] + 0.1}) for r in results["grid"]]
    cells = views.retrieval_table(fake).cells()
    assert all(row[3].endswith("± 0.071") for row in cells)  # the sample std of two values 0.1 apart
    assert "[" not in repr(views.cells_table(fake))  # every gain the same on both seeds: no interval
    fake["grid"][-1]["recall"]["1"] += 0.05
    fake["grid"][-1]["spread"] += 0.05
    assert "[" in repr(views.cells_table(fake))

"""labkit.viz.dual_contrastive on smoke-budget results with all seven rows (so the attention views have
data; no probe, which would triple the cold training time), on the default smoke rows (ns, dcl,
with the probe: the message paths) and on a copy reshaped like the full budget (32² RGB, two seeds,
validity measured): traces, what each control shows, the values drawn and the live explorers."""
import base64
import copy
import io

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from smoke import cached_smoke_run

from labkit.experiments import dual_contrastive as ex
from labkit.methods.dual_contrastive import SelfAttention2d
from labkit.models import ImageGenerator
from labkit.viz import dual_contrastive as views
from labkit.viz import plots
from labkit.viz.show import PLOTLY_MIME
from viz_checks import assert_one_group_each

PLOTS = ("plot_ablation", "plot_fd_curves", "plot_samples", "plot_logit_histograms", "plot_g_attention",
         "plot_d_attention", "plot_ring", "plot_losses")
G_ROWS = [r for r, (_, g, _) in ex.ROWS.items() if g]
D_ROWS = [r for r, (_, _, d) in ex.ROWS.items() if d != "none"]


@pytest.fixture(scope="module")
def results():
    """Every ablation row at the smoke budget without the probe, on the default cache (a rerun
    trains nothing)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_PROGRESS", "off")
    try:
        yield ex.run(ex.from_budget("smoke", workers=1, rows=tuple(ex.ROWS), probe=False))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def default_rows():
    yield from cached_smoke_run(ex)


def _full_like_run(run: dict, seed: int) -> dict:
    """``run`` as a 32² RGB scenes run of ``seed``: random samples and primaries, a freshly
    initialised 32² generator (the views only need its shape), validity, no probe."""
    rng = np.random.default_rng(seed)
    spec = dict(run["generator"]["spec"], channels=3, image_size=32)
    torch.manual_seed(seed)
    G = ImageGenerator(64, 3, 32, spec["width"], attention=SelfAttention2d if spec["attention"] else None)
    new = dict(copy.deepcopy(run), seed=seed, fd=run["fd"] + 10 * seed, validity=0.5 + 0.1 * seed, probe=None,
               probe_init=None, samples=rng.integers(0, 256, (36, 3, 32, 32), dtype=np.uint8),
               generator=dict(spec=spec, state=G.state_dict()))
    new["curve"]["fd"] = [fd + 10 * seed for fd in run["curve"]["fd"]]
    if run["d_maps"] is not None:
        new["d_maps"].update(primary=rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8),
                             reference=rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    return new


@pytest.fixture(scope="module")
def full_like(results):
    fake = copy.deepcopy(results)
    fake["config"].update(dataset="scenes", image_size=32, seeds=2, probe=False)
    fake["runs"] = {row: [_full_like_run(entries[0], seed) for seed in (0, 1)]
                    for row, entries in results["runs"].items()}
    fake["ring"] = {loss: [entries[0], dict(copy.deepcopy(entries[0]), seed=1)]
                    for loss, entries in results["ring"].items()}
    return fake


def decode(source):
    """A PNG data URI back to a (3, H, W) uint8 array."""
    assert source.startswith("data:image/png;base64,")
    return np.transpose(np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))), (2, 0, 1))


def tiles(grid, size, count=36, columns=6):
    """The ``count`` tiles of a ``sample_grid`` image (1-px gaps), as (count, 3, size, size)."""
    step = size + 1
    return np.stack([grid[:, (i // columns) * step:(i // columns) * step + size,
                          (i % columns) * step:(i % columns) * step + size] for i in range(count)])


def rgb(images):
    images = np.asarray(images)
    return np.repeat(images, 3, axis=-3) if images.shape[-3] == 1 else images


def frame_data(fig, k):
    """``{trace index: changes}`` of animation frame ``k``."""
    frame = fig.frames[k]
    return dict(zip(frame.traces, frame.data))


def test_every_view_on_every_budget(results, default_rows, full_like):
    for r in (results, default_rows, full_like):
        for name in PLOTS:
            fig = getattr(views, name)(r)
            assert isinstance(fig, go.Figure), name
            for trace in fig.data:  # images travel as PNG data URIs, never as pixel arrays
                assert not isinstance(trace, go.Image) or (trace.source and trace.z is None), name
    assert len(views.plot_samples(results).to_json()) < 400_000


def test_sample_grid_tiles_row_major_with_white_gaps():
    samples = np.arange(8 * 2 * 2, dtype=np.uint8).reshape(8, 1, 2, 2)
    grid = views.sample_grid(samples, columns=3)
    assert grid.shape == (3, 3 * 3 - 1, 3 * 3 - 1)
    assert np.array_equal(grid[:, 3:5, 0:2], rgb(samples[3]))  # second line, first column
    assert (grid[:, 2, :] == 255).all() and (grid[:, -2:, -2:] == 255).all()  # gap; empty ninth tile


def test_ablation_bars_equal_the_table(results):
    fig = views.plot_ablation(results)
    table = [t for t in ex.ablation_table(results) if t["row"] in results["runs"]]
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == [views.METRIC_LABELS[m] for m in ("fd", "precision", "recall")]  # digits: no validity
    assert_one_group_each(fig, [3, 2, 2])
    groups = {"fd": fig.data[0:3], "precision": fig.data[3:5], "recall": fig.data[5:7]}
    for metric, (bars, dots, *extra) in groups.items():
        assert list(bars.x) == list(range(7))
        np.testing.assert_allclose(bars.y, [t[f"{metric}_mean"] for t in table], rtol=1e-6)
        np.testing.assert_allclose(dots.y, [results["runs"][row][0][metric] for row in ex.ROWS], rtol=1e-6)
        assert not np.any(bars.error_y.array)  # one seed: no spread
    floor = groups["fd"][2]
    assert floor.line.dash == "dash" and list(floor.y) == pytest.approx([results["floor"]] * 2)
    assert list(fig.layout.xaxis.ticktext) == list(ex.ROWS)
    assert fig.layout.yaxis.type == "log" and fig.layout.updatemenus[0].buttons[1].args[1]["yaxis.type"] == "linear"
    assert len({c for c in groups["fd"][0].marker.color}) == 7  # one colour per row


def test_ablation_probe_beside_d_at_initialisation(default_rows):
    fig = views.plot_ablation(default_rows)
    assert fig.layout.updatemenus[0].buttons[-1].label == views.METRIC_LABELS["probe"]
    assert_one_group_each(fig, [3, 2, 2, 3])
    bars, dots, init = fig.data[7:10]
    runs = [default_rows["runs"][row][0] for row in ("ns", "dcl")]
    np.testing.assert_allclose(bars.y, [r["probe"] for r in runs], rtol=1e-6)
    np.testing.assert_allclose(init.y, [r["probe_init"] for r in runs], rtol=1e-6)


def test_ablation_with_seeds_and_validity(full_like):
    fig = views.plot_ablation(full_like)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == [views.METRIC_LABELS[m] for m in ("fd", "precision", "recall", "validity")]
    bars, dots = fig.data[7], fig.data[8]  # the validity group
    np.testing.assert_allclose(bars.y, [0.55] * 7, rtol=1e-5)
    np.testing.assert_allclose(bars.error_y.array, [np.std([0.5, 0.6], ddof=1)] * 7, rtol=1e-4)
    assert list(dots.customdata) == [0, 1] * 7
    np.testing.assert_allclose(dots.x[:2], [-0.15, 0.15], atol=1e-6)


def test_fd_curves(results, full_like):
    fig = views.plot_fd_curves(results)
    floor = results["floor"]
    assert [t.name for t in fig.data] == [*ex.ROWS, f"real vs real ({floor:.3g})", "3× the floor"]  # one seed: no band
    for trace, row in zip(fig.data, ex.ROWS):
        curve = results["runs"][row][0]["curve"]
        assert list(trace.x) == curve["step"]
        np.testing.assert_allclose(trace.y, curve["fd"], rtol=1e-5)
    assert fig.layout.yaxis.type == "log" and fig.data[-2].line.dash == "dash"
    np.testing.assert_allclose(fig.data[-1].y, [ex.FLOOR_FACTOR * floor] * 2)
    (window,) = fig.layout.shapes  # the last third of training, where the convergence check looks
    steps = results["config"]["steps"]
    assert window.x1 == steps and window.x0 == pytest.approx(steps * (1 - ex.CONVERGENCE_WINDOW))
    fig = views.plot_fd_curves(full_like)
    band, line = fig.data[0], fig.data[1]
    fds = np.array([r["curve"]["fd"] for r in full_like["runs"]["ns"]])
    np.testing.assert_allclose(line.y, fds.mean(0), rtol=1e-5)
    np.testing.assert_allclose(band.y[:len(line.y)], fds.mean(0) + fds.std(0, ddof=1), rtol=1e-5)


def test_samples_decode_to_the_stored_samples(results, full_like):
    fig = views.plot_samples(results)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0"]
    assert_one_group_each(fig, [2 * 7])
    assert [a.text for a in fig.layout.annotations] == list(ex.ROWS)
    for k, row in enumerate(ex.ROWS):
        image, caption = fig.data[2 * k], fig.data[2 * k + 1]
        run = results["runs"][row][0]
        assert np.array_equal(tiles(decode(image.source), 16), rgb(run["samples"]))
        assert caption.text[0] == f"classifier-FD {run['fd']:.3g}"
    assert fig.data[2].xaxis == "x2" and fig.data[8].xaxis == "x5"  # 4 to a line
    fig = views.plot_samples(full_like)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "1"]
    assert_one_group_each(fig, [2 * 7, 2 * 7])
    assert np.array_equal(tiles(decode(fig.data[14].source), 32), full_like["runs"]["ns"][1]["samples"])


def test_stored_generator_reproduces_the_stored_samples(results):
    """The run's samples are G(z_eval[:36]) in eval mode, z_eval the first draw of the seed's generator."""
    run = results["runs"]["dcl+g-attn"][0]
    z = torch.randn(results["config"]["num_eval"], 64, generator=torch.Generator().manual_seed(run["seed"]))[:36]
    with torch.no_grad():
        images = (views.load_generator(run)(z).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    assert np.abs(images.astype(int) - run["samples"].astype(int)).max() <= 1  # channels-last round-off


def test_logit_histograms_follow_the_checkpoints(results):
    fig = views.plot_logit_histograms(results)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == list(ex.ROWS)
    assert_one_group_each(fig, [5] * 7)  # real bars, fake bars, two mean lines, caption
    steps = results["runs"]["ns"][0]["logits"]["step"]
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(s) for s in steps] and len(fig.frames) == len(steps)
    for r, row in enumerate(ex.ROWS):
        run = results["runs"][row][0]
        hists = ex.logit_histograms(run)
        for k, hist in enumerate(hists):
            data = frame_data(fig, k)
            real, fake, real_mean, fake_mean, caption = (data[5 * r + i] for i in range(5))
            assert list(real.y) == list(hist["real"]) and list(fake.y) == list(hist["fake"])
            np.testing.assert_allclose(real.x, (hist["edges"][1:] + hist["edges"][:-1]) / 2, rtol=1e-4, atol=1e-6)
            mean_real, mean_fake = run["logits"]["real"][k].mean(), run["logits"]["fake"][k].mean()
            assert real_mean.x[0] == pytest.approx(mean_real, rel=1e-4, abs=1e-6)
            assert caption.text[0] == f"step {steps[k]}: mean real {mean_real:+.3f}, mean fake {mean_fake:+.3f}"
        x_range = fig.layout.updatemenus[0].buttons[r].args[1]["xaxis.range"]
        assert x_range[0] < min(h["edges"][0] for h in hists) and x_range[1] > max(h["edges"][-1] for h in hists)
    assert list(fig.data[0].y) == list(ex.logit_histograms(results["runs"]["ns"][0])[-1]["real"])  # opens at the end
    assert fig.layout.yaxis.type == "log"


def test_g_attention_maps_over_queries(results):
    fig = views.plot_g_attention(results)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == [f"{row} · image {k}" for row in G_ROWS for k in range(1, 5)]
    assert_one_group_each(fig, [3] * len(labels), num_static=2)  # markers on both panels
    queries = views.query_grid(8)
    assert queries == [(y, x) for y in (2, 4, 6) for x in (2, 4, 6)]
    assert [s.label for s in fig.layout.sliders[0].steps] == [f"({x}, {y})" for y, x in queries]
    for g, row in enumerate(G_ROWS):
        images, maps = views.generate(views.load_generator(results["runs"][row][0]), 0, 4)
        assert np.array_equal(decode(fig.data[2 + 12 * g].source), rgb(images[0]))
        for q, (y, x) in enumerate(queries):
            data = frame_data(fig, q)
            assert data[0].x[0] == data[1].x[0] == 2 * x + 0.5 and data[0].y[0] == 2 * y + 0.5  # cell centre
            z = np.asarray(data[2 + 12 * g + 3 * 1 + 2].z)  # image 2 of the row
            np.testing.assert_allclose(z, maps[1, 8 * y + x].reshape(8, 8), rtol=1e-5)
            assert z.sum() == pytest.approx(1, abs=1e-5) and (z > 0).all()
    heatmap = fig.data[4]
    assert (heatmap.x0, heatmap.dx) == (0.5, 2)  # an 8² grid over 16² pixels


def test_d_attention_real_and_fake_primaries(results):
    fig = views.plot_d_attention(results)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [f"{row} · {p} primary" for row in D_ROWS for p in ("real", "fake")]
    assert_one_group_each(fig, [3] * 4, num_static=1)
    assert buttons[0].args[1]["annotations[1].text"] == "keys: the primary itself"
    assert buttons[2].args[1]["annotations[1].text"] == "keys: a real reference image"
    for g, (row, k) in enumerate((row, k) for row in D_ROWS for k in (0, 1)):
        d_maps = results["runs"][row][0]["d_maps"]
        primary, keys = fig.data[1 + 3 * g], fig.data[2 + 3 * g]
        assert np.array_equal(decode(primary.source), rgb(d_maps["primary"][k]))
        expected_keys = d_maps["primary"][k] if d_maps["kind"] == "self" else d_maps["reference"]
        assert np.array_equal(decode(keys.source), rgb(expected_keys))
        for q, (y, x) in enumerate(views.query_grid(8)):
            z = np.asarray(frame_data(fig, q)[3 + 3 * g].z)
            np.testing.assert_allclose(z, d_maps["maps"][k][8 * y + x].reshape(8, 8), rtol=1e-5)
            assert z.sum() == pytest.approx(1, abs=1e-5)


def test_attention_views_at_32_pixels(full_like):
    fig = views.plot_g_attention(full_like)
    assert len(fig.layout.sliders[0].steps) == 9 and fig.frames[0].name == "(4, 4)"  # a 16² grid
    assert np.asarray(frame_data(fig, 0)[4].z).shape == (16, 16)
    fig = views.plot_d_attention(full_like)
    assert fig.data[3].dx == 4 and decode(fig.data[1].source).shape == (3, 32, 32)  # 8² grid over 32² pixels


def test_ring_heatmaps_are_the_stored_counts(results, full_like):
    fig = views.plot_ring(results)
    ns, dcl = results["ring"]["ns"][0], results["ring"]["dcl"][0]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["seed 0"]
    assert_one_group_each(fig, [4], num_static=2)
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(s) for s in ns["checkpoint_steps"]]
    radius = np.hypot(fig.data[0].x, fig.data[0].y)
    np.testing.assert_allclose(radius, [2] * 8, rtol=1e-5)
    for k in range(len(ns["checkpoint_steps"])):
        data = frame_data(fig, k)
        assert np.array_equal(data[2].z, plots.log_count_levels(ns["heatmaps"][k]))
        assert np.array_equal(data[3].z, plots.log_count_levels(dcl["heatmaps"][k]))
        assert data[5].text[0].startswith(f"{dcl['modes_covered'][k]}/8 modes")
    assert fig.data[2].coloraxis == "coloraxis" and fig.data[3].xaxis == "x2"
    assert fig.data[2].x0 == pytest.approx(-3 + 6 / 40 / 2)
    fig = views.plot_ring(full_like)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["seed 0", "seed 1"]
    assert_one_group_each(fig, [4, 4], num_static=2)


def test_losses_one_line_per_row_and_panel(results):
    fig = views.plot_losses(results)
    assert len(fig.data) == 3 * 7 and [t.name for t in fig.data[:3]] == ["ns"] * 3
    for k, key in enumerate(views.LOSS_PANELS):
        trace = fig.data[3 * 2 + k]  # dcl
        history = results["runs"]["dcl"][0]["history"][key]
        assert list(trace.x) == history["step"] and trace.xaxis == ("x" if k == 0 else f"x{k + 1}")
        np.testing.assert_allclose(trace.y, history["value"], rtol=1e-5)
    assert [t.showlegend for t in fig.data[:3]] == [True, False, False]


def test_messages_without_attention_or_ring(default_rows):
    fig = views.plot_g_attention(default_rows)
    assert not fig.data and "G attention" in fig.layout.annotations[0].text
    assert all(row in fig.layout.annotations[0].text for row in G_ROWS)
    fig = views.plot_d_attention(default_rows)
    assert "dcl+g-attn+d-ref" in fig.layout.annotations[0].text and "ns+g-attn" not in fig.layout.annotations[0].text
    no_ring = dict(default_rows, ring={"ns": [], "dcl": []})
    assert "no ring runs" in views.plot_ring(no_ring).layout.annotations[0].text
    panel = views.g_attention_explorer(default_rows)
    assert not panel.controls and panel.figure is None and "needs one of ns+g-attn" in panel.messages()[0]


def test_g_attention_explorer_renders_live(results):
    panel = views.g_attention_explorer(results)
    assert set(panel.controls) == {"row", "latent_seed", "query_x", "query_y"}
    assert list(panel.controls["row"].options) == G_ROWS and panel.controls["query_x"].max == 7
    assert PLOTLY_MIME in panel.output.outputs[0]["data"]
    for row in G_ROWS:
        panel.controls["row"].value = row
        panel.controls["latent_seed"].value = 5
        panel.controls["query_x"].value, panel.controls["query_y"].value = 1, 6
        images, maps = views.generate(views.load_generator(results["runs"][row][0]), 5, 1)
        fig = panel.figure
        assert np.array_equal(decode(fig.data[0].source), rgb(images[0]))
        np.testing.assert_allclose(fig.data[2].z, maps[0, 8 * 6 + 1].reshape(8, 8), rtol=1e-5)
        assert np.sum(fig.data[2].z) == pytest.approx(1, abs=1e-5)
        assert (fig.data[3].x[0], fig.data[3].y[0]) == (2.5, 12.5) and fig.data[4].xaxis == "x2"
        assert fig.layout.title.text.startswith(f"{row}, latent seed 5: query (1, 6)")
    with pytest.raises(ValueError, match="has no G attention"):
        panel.render(row="ns", latent_seed=0, query_x=0, query_y=0)
    with pytest.raises(ValueError, match="off the 8×8 attention grid"):
        panel.render(row=G_ROWS[0], latent_seed=0, query_x=8, query_y=0)


def test_sample_explorer_samples_every_row(results):
    panel = views.sample_explorer(results)
    assert list(panel.controls["row"].options) == list(ex.ROWS)
    first = decode(panel.figure.data[0].source)
    for row in ex.ROWS:
        panel.controls["row"].value = row
        images, _ = views.generate(views.load_generator(results["runs"][row][0]), 0, 36)
        assert np.array_equal(tiles(decode(panel.figure.data[0].source), 16), rgb(images))
    panel.controls["row"].value = "ns"
    panel.controls["latent_seed"].value = 3
    assert not np.array_equal(decode(panel.figure.data[0].source), first)
    assert panel.figure.layout.title.text == "ns (trained with seed 0), latent seed 3"
    with pytest.raises(ValueError, match="no trained row 'nope'"):
        panel.render(row="nope", latent_seed=0)


def test_result_tables_drop_what_was_not_measured(results, full_like):
    table = views.ablation_result_table(results)
    assert [c.title() for c in table.columns.values()][:6] == [
        "ablation row", "loss", "G attention", "D attention", "seeds", "classifier-FD (lower is better)"]
    assert "composition validity" in table.dropped and "probe accuracy of D" in table.dropped  # digits, no probe
    cells = table.cells()
    assert [row[0] for row in cells] == [*ex.ROWS, "real vs real (floor)"]
    assert cells[0][5] == f"{results['runs']['ns'][0]['fd']:.1f}"  # one seed: a mean, no ± std
    assert cells[-1][5] == f"{results['floor']:.1f}" and cells[-1][1] == "—"
    assert "Not measured at this budget: composition validity" in repr(table)
    fds = [r["fd"] for r in full_like["runs"]["ns"]]
    full_cells = views.ablation_result_table(full_like).cells()
    assert full_cells[0][5] == f"{np.mean(fds):.1f} ± {np.std(fds, ddof=1):.1f}"
    assert "composition validity" in [c.title() for c in views.ablation_result_table(full_like).columns.values()]


def test_convergence_and_ring_tables(results, full_like):
    table = views.convergence_result_table(results)
    assert [row[0] for row in table.cells()] == list(ex.ROWS)
    assert {row[-1] for row in table.cells()} == {"no"}  # 2 checkpoints: too few to tell
    assert "FD change over the last third" in table.dropped  # NaN everywhere at smoke
    ring = views.ring_result_table(full_like).cells()
    assert [row[0] for row in ring] == ["ns", "dcl"]
    modes = [r["final"]["modes_covered"] for r in full_like["ring"]["ns"]]
    assert ring[0][1] == ", ".join(map(str, modes))

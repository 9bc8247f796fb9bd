"""labkit.viz.lottery on smoke-budget results (and a copy dressed with known values and a second
sparsity): traces, what each control shows, the values drawn, NaN handling and the live explorer."""
import base64
import copy
import io

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from smoke import cached_smoke_run

from labkit.experiments import lottery as ex
from labkit.viz import lottery as views
from labkit.viz import plots
from labkit.viz.show import PLOTLY_MIME
from viz_checks import assert_one_group_each

PLOTS = ("plot_ap_vs_sparsity", "plot_bucket_change", "plot_layer_sparsity", "plot_rewind", "plot_early_bird",
         "plot_class_change", "plot_modules", "plot_detections", "plot_small_objects", "plot_loss")


@pytest.fixture(scope="module")
def results():
    yield from cached_smoke_run(ex)


def slider_only(fig):
    """``fig`` without its dropdown, whose buttons restyle data or reorder categories rather than
    switch visibility (which ``plots.control_visibility`` expects of every control)."""
    copied = go.Figure(fig)
    copied.layout.updatemenus = []
    return copied


def _metrics(value):
    return dict(AP=value, AP50=2 * value, AP75=value / 2, AP_small=value, AP_medium=value, AP_large=value)


@pytest.fixture(scope="module")
def dressed(results):
    """Smoke results with known APs, a second global/layer-wise sparsity (50 %) and one detection:
    dense 0.5 everywhere; the 80 % ticket 0.4 (−20 %), the 50 % ticket 0.45 (−10 %)."""
    fake = copy.deepcopy(results)
    fake["other_seeds"] = []  # one seed: the tables show exactly the values set here
    fake["config"].update(sparsities=(0.5, 0.8), layerwise_sparsities=(0.5, 0.8))
    num_folds = len(fake["dense"]["folds"])
    fake["dense"].update(metrics=_metrics(0.5), folds=[_metrics(0.5)] * num_folds,
                         per_class=[0.5, 0.5, 0.0, 0.2, 0.5, 0.5])
    main = fake["tickets"]["global"][0]
    main.update(metrics=_metrics(0.4), folds=[_metrics(0.38), _metrics(0.42)][:num_folds],
                per_class=[0.25, 0.6, 0.1, 0.2, 0.5, 0.5])
    half = copy.deepcopy(main)
    half.update(keep=0.5, metrics=_metrics(0.45), folds=[_metrics(0.45)] * num_folds,
                sparsity=dict(main["sparsity"], prunable=0.5, network=0.49))
    fake["tickets"]["global"].insert(0, half)
    layerwise = copy.deepcopy(fake["tickets"]["layerwise"][0])
    fake["tickets"]["layerwise"].insert(0, dict(layerwise, keep=0.5))
    fake["layer_sparsity"] = [dict(r, sparsity=0.5, pruned=r["pruned"] * 0.6 if r["scheme"] == "global" else 0.5)
                              for r in results["layer_sparsity"]] + results["layer_sparsity"]
    fake["dense"]["early_bird"]["0.5"] = [0.95] * len(fake["dense"]["snapshot_steps"])
    main["viewer"][0] = dict(boxes=np.array([[4.0, 6.0, 20.0, 30.0]], np.float32), scores=np.array([0.9], np.float32),
                             labels=np.array([1]))
    return fake


def group_sizes(results):
    """Traces per metric of ``plot_ap_vs_sparsity``: the dense band and line when the dense value is
    finite, and one trace per method with at least one finite value."""
    rows = ex.ticket_rows(results)
    dense = next(r for r in rows if r["method"] == "dense")
    finite = [r for r in rows if r["method"] != "dense"]
    return [2 * bool(np.isfinite(dense[m])) + sum(any(r["method"].split(" (")[0] == section and np.isfinite(r[m])
                                                      for r in finite) for section in views.METHODS)
            for m in views.METRICS]


def test_every_plot_returns_a_figure(results, dressed):
    for name in PLOTS:
        for r in (results, dressed):
            assert isinstance(getattr(views, name)(r), go.Figure), name


def test_ap_vs_sparsity_dropdown_switches_metric(results):
    fig = views.plot_ap_vs_sparsity(results)
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == ["AP", "AP50", "AP small", "AP medium", "AP large"]
    assert group_sizes(results) == [2 + 7] * 5  # smoke trains every method and every value is finite
    assert_one_group_each(fig, group_sizes(results))
    rows = ex.ticket_rows(results)
    dense = next(r for r in rows if r["method"] == "dense")
    ap = {t.name: t for t in fig.data[:9]}
    assert float(ap["dense ± 95 % CI"].y[0]) == pytest.approx(dense["AP"], abs=1e-4)
    band = fig.data[0]
    assert max(band.y) == pytest.approx(dense["AP"] + dense["AP_ci"], abs=1e-4)
    main = next(r for r in rows if r["method"] == "global")
    assert list(ap["global one-shot ticket"].x) == pytest.approx([100 * main["network_sparsity"]])
    np.testing.assert_allclose(ap["global one-shot ticket"].error_y.array, [main["AP_ci"]], atol=1e-4)
    iterative = ap["iterative (with its rounds)"]
    assert len(iterative.x) == results["config"]["iterative_rounds"] - 1 and list(iterative.x) == sorted(iterative.x)
    assert ap["module subsets"].text == tuple(r["subset"] for r in ex.module_rows(results))
    large = {t.name: t for t in fig.data[36:]}
    assert large["global one-shot ticket"].error_y is None or large["global one-shot ticket"].error_y.array is None
    assert menu.buttons[4].args[1]["yaxis.title.text"] == "AP large (points)"


def test_nan_and_missing_values_do_not_crash(results):
    broken = copy.deepcopy(results)
    broken["dense"]["metrics"]["AP_small"] = 0.0
    broken["tickets"]["layerwise"][0]["metrics"]["AP_medium"] = float("nan")
    fig = views.plot_ap_vs_sparsity(broken)
    sizes = group_sizes(results)
    sizes[3] -= 1  # the layer-wise method has no AP medium any more
    assert group_sizes(broken) == sizes
    assert_one_group_each(fig, sizes)
    fig = views.plot_bucket_change(broken)
    assert "small" not in [t.name for t in fig.data]
    assert any("small at 80 %" in a.text and "dense bucket AP is 0" in a.text for a in fig.layout.annotations)
    bare = copy.deepcopy(results)
    bare["tickets"] = {}
    for name in PLOTS:
        assert isinstance(getattr(views, name)(bare), go.Figure), name
    assert views.plot_modules(bare).layout.annotations[0].text == "no module-subset runs at this budget"


def test_bucket_change_values(dressed):
    fig = views.plot_bucket_change(dressed)
    assert [t.name for t in fig.data] == ["no change", "small", "medium", "large"]
    for trace in fig.data[1:]:
        np.testing.assert_allclose(trace.y, [-10.0, -20.0], atol=1e-3)
        np.testing.assert_allclose(np.asarray(trace.x) - np.asarray(trace.x).round(), 0, atol=0.61)
    assert not fig.layout.annotations


def test_layer_sparsity_slider_and_scheme_menu(results, dressed):
    fig = views.plot_layer_sparsity(dressed)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["50 %", "80 %"]
    per_step = len(fig.data) // 2
    assert_one_group_each(slider_only(fig), [per_step, per_step])
    modules = {r["module"] for r in results["layer_sparsity"]}
    assert per_step == len(modules) + 1  # one bar trace per module, the requested-sparsity line
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["global threshold", "layer-wise (same fraction per layer)",
                                          "global threshold on the initial weights (control)"]
    rows = [r for r in dressed["layer_sparsity"] if r["sparsity"] == 0.8]
    bars = [t for t in fig.data[per_step:] if isinstance(t, go.Bar)]
    shown = dict(zip([x for t in bars for x in t.x], [y for t in bars for y in t.y]))
    for r in rows:
        if r["scheme"] == "global":
            assert shown[views._short(r["layer"])] == pytest.approx(r["pruned"], abs=1e-4)
    layerwise = buttons[1].args[0]["y"]
    assert len(layerwise) == len(fig.data)
    for trace, y in list(zip(fig.data, layerwise))[:per_step - 1]:  # the 50 % bars
        assert isinstance(trace, go.Bar) and y == pytest.approx([0.5] * len(trace.x))  # dressed layer-wise rows
    sizes = [row[0] for t in bars for row in t.customdata]
    assert sizes == [r["size"] for r in sorted(rows, key=lambda r: r["depth"]) if r["scheme"] == "global"]
    assert fig.layout.sliders[0].active == 1


def test_rewind_lr_schedule_and_main_point(results):
    fig = views.plot_rewind(results)
    lr, dense, ticket = fig.data
    cfg = results["config"]
    assert lr.yaxis == "y2" and float(lr.y[0]) == pytest.approx(0.1) and float(max(lr.y)) == pytest.approx(1.0)
    assert float(lr.y[-1]) == pytest.approx(0.1)  # after the decay
    rows = ex.rewind_rows(results)
    assert list(ticket.x) == pytest.approx([100 * r["fraction"] for r in rows])
    assert any(shape.x0 == pytest.approx(100 * cfg["rewind_frac"]) for shape in fig.layout.shapes)


def test_early_bird_lines(dressed):
    fig = views.plot_early_bird(dressed)
    assert [t.name for t in fig.data] == ["IoU 0.9", "50 %", "80 %"]
    assert list(fig.data[1].y) == pytest.approx([0.95] * len(dressed["dense"]["snapshot_steps"]) + [1.0])
    assert fig.data[2].x[-1] == 100


def test_class_change_slider_and_order(dressed):
    fig = views.plot_class_change(dressed)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["50 %", "80 %"]
    assert_one_group_each(slider_only(fig), [2, 2])  # bars, and marks where the dense class AP is 0
    bars, marks = fig.data[2], fig.data[3]
    assert list(bars.y[:2]) == pytest.approx([-50.0, 20.0]) and bars.y[2] is None
    assert list(marks.x) == ["triangle"]
    orders = [b.args[0]["xaxis.categoryarray"] for b in fig.layout.updatemenus[0].buttons]
    frequency = dressed["class_frequencies"]
    names = dressed["class_names"]
    assert [frequency[names.index(n)] for n in orders[0]] == sorted(frequency, reverse=True)
    assert orders[1][-1] == "triangle"  # dense AP 0: the hardest


def test_modules_bars(results):
    fig = views.plot_modules(results)
    rows = ex.module_rows(results)
    assert list(fig.data[0].y) == pytest.approx([r["AP"] for r in rows], abs=1e-4)
    assert fig.data[0].x[0] == f"{rows[0]['subset']}<br>{views.percent(rows[0]['network_sparsity'])} of the net"
    assert any(shape.y0 == pytest.approx(ex.ticket_rows(results)[0]["AP"]) for shape in fig.layout.shapes)


def test_detections_one_step_per_image(dressed):
    fig = views.plot_detections(dressed)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == len(dressed["viewer_images"]) == 6
    first = [fig.data[i] for i in plots.control_visibility(fig)[0][1]]
    images = [t for t in first if isinstance(t, go.Image)]
    size = dressed["config"]["image_size"]
    assert len(images) == 2 and images[0].source.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0].source.split(",", 1)[1]))))
    expected = np.clip(np.round(255 * np.transpose(dressed["viewer_images"][0], (1, 2, 0))), 0, 255)
    assert decoded.shape == (size, size, 3) and np.array_equal(decoded, expected.astype(np.uint8))
    square = [t for t in first if t.name == "square"]
    assert len(square) == 1 and square[0].xaxis == "x2"  # the ticket panel
    assert list(square[0].x[:5]) == [4, 20, 20, 4, 4] and square[0].text[0] == "square 0.90"
    truth = [t for t in first if t.name == "ground truth"]
    assert len(truth) == 2 and truth[0].line.dash == "dash"
    assert list(truth[0].x).count(None) == len(dressed["viewer_truth"][0]["labels"])


def test_small_objects_strip(dressed):
    fake = copy.deepcopy(dressed)
    empty = dict(boxes=np.zeros((0, 4)), labels=np.zeros(0, int), areas=np.zeros(0))
    fake["viewer_truth"] = [dict(boxes=np.array([[10.0, 10, 13, 13], [30, 30, 60, 60]]), labels=np.array([1, 2]),
                                 areas=np.array([9.0, 900.0]))] + [empty] * 5
    fake["dense"]["viewer"][0] = dict(boxes=np.array([[10.0, 10, 13, 14], [40, 40, 60, 60]]),
                                      scores=np.array([0.9, 0.8]), labels=np.array([1, 1]))
    ticket = ex.main_ticket(fake, 0.8)
    ticket["viewer"][0] = dict(boxes=np.array([[9.0, 9, 15, 15]]), scores=np.array([0.6]), labels=np.array([3]))
    assert [(o["image"], o["label"]) for o in views.small_objects(fake)] == [(0, 1)]  # the large object is left out
    fig = views.plot_small_objects(fake)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["50 %", "80 %"]
    visible = [fig.data[i] for i in plots.control_visibility(fig)[1][1]]  # the 80 % step
    images = [t for t in visible if isinstance(t, go.Image)]
    assert len(images) == 2  # the same crop for the dense and the ticket row
    crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0].source.split(",", 1)[1]))))
    corner = views._crop_window(np.array([10.0, 10, 13, 13]), fake["viewer_images"].shape[-1])
    assert corner == (0, 0) and crop.shape == (views.SMALL_CROP, views.SMALL_CROP, 3)
    found = {(t.name, t.xaxis): t for t in visible if t.name and t.name.startswith("detection") and t.x}
    right = found[("detection, right class", "x")]  # dense row: the square, not the far-away box
    assert list(right.x[:5]) == [10, 13, 13, 10, 10] and right.text[0].startswith("square 0.90 · IoU 0.75")
    other = found[("detection, other class", "x2")]  # ticket row: a cross on the square
    assert other.text[0].startswith("cross 0.60") and ("detection, right class", "x2") not in found
    fake["viewer_truth"] = [empty] * 6
    assert views.plot_small_objects(fake).layout.annotations[0].text.startswith("no small objects")


def test_result_tables_have_full_headers_and_drop_unmeasured_columns(results, dressed):
    table = views.ticket_table(dressed)
    headers = [c.title() for c in table.columns.values()]
    assert "AP ± 95 % interval (points)" in headers and "Trained with the mask (steps)" in headers
    assert table.cells()[0][0] == "dense" and "iterative ticket (round 1)" in [row[0] for row in table.cells()]
    assert "Pruned modules" in headers  # the module-subset ticket names its modules
    assert "nan" not in repr(table)
    one_seed = views.ticket_table(dict(dressed, tickets={"global": dressed["tickets"]["global"]}))
    assert "Pruned modules" in one_seed.dropped  # no network prunes a module subset: the column goes
    two = views.ticket_table(results)  # smoke: two seeds, the headline networks get an interval
    dense_cell = two.cells()[0][[c.header for c in two.columns.values()].index("AP ± 95 % interval")]
    assert " ± " in dense_cell
    headline = views.headline_table(results)
    assert [row[0] for row in headline.cells()] == ["0", "1"]
    assert [c.title() for c in headline.columns.values()][:3] == ["Seed", "dense (points)", "ticket 80% (points)"]
    shares = views.module_share_table(results)
    assert [row[0] for row in shares.cells()] == ["base", "rpn", "top", "heads"]


def test_loss_steps_and_curves(results):
    assert plots.logged_steps(3, 20, 0) == [0, 10, 19]
    assert plots.logged_steps(3, 20, 2) == [2, 12, 19]
    assert plots.logged_steps(2, 20, 0) == [0, 19]  # another scheme: spread over the run
    fig = views.plot_loss(results)
    levels = sorted(results["config"]["sparsities"])
    assert [t.name for t in fig.data] == ["dense"] + [f"ticket {views.percent(s)}" for s in levels]
    assert fig.data[1].x[0] == ex.main_ticket(results, levels[0])["rewind_step"]
    assert len(fig.data[0].x) == len(results["dense"]["loss"])


def test_prune_explorer_renders_and_prunes(results):
    panel = views.prune_explorer(results)
    control = results["config"]["control_sparsity"]
    assert set(panel.controls) == {"sparsity", "scheme"}
    assert panel.controls["sparsity"].value == pytest.approx(control)
    assert PLOTLY_MIME in panel.output.outputs[0]["data"]
    fig = panel.figure
    ap, layers = fig.data
    assert ap.y[0] == pytest.approx(100 * results["dense"]["metrics"]["AP"], abs=1e-6)  # same images, same weights
    ticket = ex.main_ticket(results, control)  # the same mask, computed from the same weights
    assert list(layers.y) == pytest.approx(list(ticket["layer_sparsity"].values()), abs=1e-6)
    assert ap.y[2] == pytest.approx(100 * ticket["metrics"]["AP"])
    panel.controls["scheme"].value = "layer-wise"
    assert panel.figure is not fig
    assert f"layer-wise pruning at {views.percent(control)}" in panel.figure.layout.title.text
    assert np.allclose(panel.figure.data[1].y, control, atol=0.01)
    assert not panel.messages()

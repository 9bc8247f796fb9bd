"""labkit.viz.l2_caf on smoke-budget results: every view builds, its frames and sliders match the
data, the maps and boxes drawn are the scored ones, and the explorers re-run L2-CAF."""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from labkit.experiments import l2_caf as ex
from labkit.experiments import l2_caf_runs as runs
from labkit.experiments.l2_caf_runs import CLASSES, GRAD_CAM, OBLIVIOUS, SPECIFIC
from labkit.metrics import localization as loc
from labkit.viz import l2_caf as views
from labkit.viz.show import PLOTLY_MIME
from smoke import cached_smoke_run
from viz_checks import assert_one_group_each

LEVEL = 0.5 / 255 + 1e-6  # heat is drawn as uint8 levels


@pytest.fixture(scope="module")
def results():  # the default cache: a rerun of the tests trains nothing
    yield from cached_smoke_run(ex)


@pytest.fixture(scope="module")
def sets(results):
    return ex.chapter_sets(results)


def _heat(maps) -> np.ndarray:
    return loc.normalise_maps(torch.as_tensor(np.asarray(maps)), (64, 64)).numpy()


def _box(trace):
    """A drawn outline back to its box in pixel edges (None when nothing is drawn): pixel i is
    centred on i, so its edges lie at i ± 0.5."""
    if trace.x is None or not len(trace.x):
        return None
    x, y = np.asarray(trace.x, float) + 0.5, np.asarray(trace.y, float) + 0.5
    return x.min(), y.min(), x.max(), y.max()


def _in_frame(fig, frame, index):
    """Trace ``index`` as frame ``frame`` sets it."""
    return dict(zip(fig.frames[frame].traces, fig.frames[frame].data))[index]


def _indices(fig, kind, **where):
    return [i for i, t in enumerate(fig.data) if isinstance(t, kind)
            and all(getattr(t, key) == value for key, value in where.items())]


def _methods(results, kind, key="methods"):
    return list(results["nets"][kind][0][key])


def _assert_heat(z, expected):
    np.testing.assert_allclose(np.asarray(z, float) / 255, expected, atol=LEVEL)


def test_default_images_take_both_sizes(results):
    n = results["config"]["num_test"]
    assert views.default_images(results) == [0, n // 2]  # keep = 2 at smoke: one medium, one large
    fake = dict(config=dict(keep=5, num_test=60))
    assert views.default_images(fake) == [0, 1, 2, 30, 31]
    assert views.default_images(dict(config=dict(keep=9, num_test=4))) == [0, 1, 2, 3]


def test_heatmap_grid_frames_show_the_scored_maps_and_boxes(results, sets):
    fig = views.plot_heatmap_grid(results)
    entry, images = results["nets"]["cam"][0], views.default_images(results)
    methods = list(entry["methods"])
    assert "side by side" in fig.layout.title.text
    assert len(fig.frames) == len(images)
    image_slider = fig.layout.sliders[0]
    assert [s.label for s in image_slider.steps] == [f"{i} ({sets.test_size[i]})" for i in images]
    assert all(s.method == "animate" for s in image_slider.steps)
    for frame in fig.frames:  # frames set data only, never visibility
        assert all(set(d.to_plotly_json()) <= {"type", "x", "y", "z", "source"} for d in frame.data)
    heatmaps = _indices(fig, go.Heatmap)
    assert [fig.data[i].xaxis for i in heatmaps] == [f"x{col}" for col in range(2, 2 + len(methods))]
    truth = _indices(fig, go.Scatter, name="ground-truth box")
    assert len(truth) == 1 + len(methods)
    for k, i in enumerate(images):
        for index, m in zip(heatmaps, methods):
            expected = _heat(entry["methods"][m]["maps"][i:i + 1])[0]
            _assert_heat(_in_frame(fig, k, index).z, expected)
            axis = fig.data[index].xaxis
            for tau in loc.TAUS:
                [box] = _indices(fig, go.Scatter, name=f"predicted box, τ = {tau:.1f}", xaxis=axis)
                assert _box(_in_frame(fig, k, box)) == loc.box_from_heatmap(expected, tau)
        assert all(_box(_in_frame(fig, k, t)) == tuple(sets.test_boxes[i].tolist()) for t in truth)


def test_threshold_slider_restyles_only_the_predicted_boxes(results):
    fig = views.plot_heatmap_grid(results)
    methods = list(results["nets"]["cam"][0]["methods"])
    tau_slider = fig.layout.sliders[1]
    assert [s.label for s in tau_slider.steps] == [f"{tau:.1f}" for tau in loc.TAUS]
    assert tau_slider.active == loc.TAUS.index(loc.CAM_TAU)
    boxes = [i for i, t in enumerate(fig.data) if (t.name or "").startswith("predicted box")]
    assert len(boxes) == len(methods) * len(loc.TAUS)
    for step, tau in zip(tau_slider.steps, loc.TAUS):
        style, indices = step.args
        assert step.method == "restyle" and set(style) == {"visible"} and sorted(indices) == boxes
        shown = [i for i, visible in zip(indices, style["visible"]) if visible]
        assert len(shown) == len(methods) and all(fig.data[i].name.endswith(f"τ = {tau:.1f}") for i in shown)
    opened = [i for i in boxes if fig.data[i].visible]
    assert all(fig.data[i].name.endswith(f"τ = {loc.CAM_TAU}") for i in opened) and len(opened) == len(methods)


def test_convergence_slides_over_the_snapshots(results, sets):
    fig = views.plot_convergence(results, image=1)
    trace = results["nets"]["cam"][0]["convergence"]
    checks = len(trace["snapshots"])
    assert len(fig.frames) == checks and checks >= 2
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(50 * k) for k in range(checks)]
    [heat] = _indices(fig, go.Heatmap)
    [marker] = _indices(fig, go.Scatter, mode="markers")
    for k in range(checks):
        _assert_heat(_in_frame(fig, k, heat).z, _heat(np.abs(trace["snapshots"][k, 1:2]))[0])
        point = _in_frame(fig, k, marker)
        assert point.x[0] == 50 * k and point.y[0] == pytest.approx(trace["losses"][k, 1])
    with pytest.raises(ValueError, match="no convergence trace"):
        views.plot_convergence(results, image=results["config"]["keep"])
    assert "No nope network" in views.plot_convergence(results, kind="nope").layout.annotations[0].text


def test_threshold_sweep_has_a_group_per_network_and_size(results):
    fig = views.plot_threshold_sweep(results)
    kinds = list(results["nets"])
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == [f"{k} · {s}" for k in kinds for s in views.SIZES]
    sizes = [2 * len(_methods(results, k)) for k in kinds for _ in views.SIZES]  # a band and a line per method
    assert_one_group_each(fig, sizes)
    start = 0
    for kind in kinds:
        for size in views.SIZES:
            for m, mean in ex.sweep(results, kind, size).items():
                line = fig.data[start + 1]
                assert line.name == m
                np.testing.assert_allclose(np.asarray(line.y, float), mean, atol=1e-6)
                start += 2
    assert fig.layout.shapes[0].x0 == loc.CAM_TAU and fig.layout.shapes[0].line.dash == "dash"


def test_localization_and_ablation_bars_are_the_tables(results):
    fig = views.plot_localization_bars(results)
    table = ex.localization_table(results)
    assert len(table) == sum(len(_methods(results, k)) for k in results["nets"])
    assert [t.name for t in fig.data] == [label for label, _ in views.METRICS.values()]
    for trace, key in zip(fig.data, views.METRICS):
        assert [list(level) for level in trace.y] == [[t["network"] for t in table], [t["method"] for t in table]]
        np.testing.assert_allclose(np.asarray(trace.x, float), [t[key] for t in table], atol=1e-4)
    bars = views.plot_ablation_bars(results)
    rows = ex.ablation_table(results)
    assert len(rows) == 2 + len(results["config"]["ablations"])
    assert list(bars.data[0].y) == [t["variant"] for t in rows]
    np.testing.assert_allclose(np.asarray(bars.data[1].x, float), [t["pointing"] for t in rows], atol=1e-4)
    no_cam = dict(results, nets={k: v for k, v in results["nets"].items() if k != "cam"})
    assert "no ablations" in views.plot_ablation_bars(no_cam).layout.annotations[0].text


def test_pairs_show_each_class_and_the_peak_that_was_scored(results, sets):
    fig = views.plot_pairs(results)
    pairs, count = results["nets"]["cam"][0]["pairs"], min(len(sets.pair_x), results["config"]["keep"])
    assert len(fig.frames) == count == len(fig.layout.sliders[0].steps) and count >= 2
    a, b = sets.pair_y[0].tolist()
    assert fig.layout.sliders[0].steps[0].label == f"0: A {CLASSES[a]} · B {CLASSES[b]}"
    heatmaps, peaks = _indices(fig, go.Heatmap), _indices(fig, go.Scatter, mode="markers")
    panels = [(m, j) for m in (SPECIFIC, GRAD_CAM) for j in range(2)]
    assert len(heatmaps) == len(peaks) == len(panels)
    for i in range(count):
        for (m, j), heat, peak in zip(panels, heatmaps, peaks):
            _assert_heat(_in_frame(fig, i, heat).z, _heat(pairs[m]["maps"][i, j:j + 1])[0])
            point = _in_frame(fig, i, peak)
            x0, y0, x1, y1 = sets.pair_boxes[i, j].tolist()
            inside = x0 <= point.x[0] + 0.5 < x1 and y0 <= point.y[0] + 0.5 < y1
            assert inside == bool(pairs[m]["on_queried"][i, j])
        boxes = [_box(_in_frame(fig, i, b)) for b in _indices(fig, go.Scatter, name="class A box")]
        assert len(boxes) == 5 and set(boxes) == {tuple(sets.pair_boxes[i, 0].tolist())}
    assert "no class maps" in views.plot_pairs(results, "retrieval").layout.annotations[0].text


def test_retrieval_boxes_at_each_methods_maxboxacc_tau(results, sets):
    fig = views.plot_retrieval(results)
    entry, images = results["nets"]["retrieval"][0], views.default_images(results)
    assert len(fig.frames) == len(images) and "Recall@1" in fig.layout.title.text
    for m, axis in ((OBLIVIOUS, "x2"), (GRAD_CAM, "x3")):
        tau = loc.max_box_accuracy(entry["methods"][m]["hits"])[1]
        [box] = _indices(fig, go.Scatter, name=f"predicted box, τ = {tau:.1f}", xaxis=axis)
        assert fig.data[box].visible is True
        for k, i in enumerate(images):
            assert _box(_in_frame(fig, k, box)) == loc.box_from_heatmap(_heat(entry["methods"][m]["maps"][i:i + 1])[0],
                                                                         tau)
    cam_only = dict(results, nets={"cam": results["nets"]["cam"]})
    assert "not trained" in views.plot_retrieval(cam_only).layout.annotations[0].text


def test_tables_have_a_row_per_network_and_method(results):
    table = views.localization_result_table(results)
    expected = [(k, m) for k in results["nets"] for m in _methods(results, k)]
    assert {(k, m) for k, m in expected if k == "cam"} >= {("cam", m) for m in runs.METHODS}
    assert [(r["network"], r["method"]) for r in table.rows] == expected
    assert "MaxBoxAcc" in repr(table) and "top-1 localization" in repr(table)
    assert [r["variant"] for r in views.ablation_result_table(results).rows][2:] == list(results["config"]["ablations"])
    pairs = views.pair_result_table(results)
    expected = [(k, m) for k in ("cam", "mlp") for m in _methods(results, k, "pairs")]
    assert [(r["network"], r["method"]) for r in pairs.rows] == expected and len(expected) >= 6
    assert "peak on the explained object" in repr(pairs)


def test_pair_explorer_reruns_class_specific_l2_caf(results, sets):
    panel = views.pair_explorer(results)
    assert set(panel.controls) == {"image", "cls"} and PLOTLY_MIME in panel.output.outputs[0]["data"]
    net, cfg = ex.trained_net(results, "cam"), results["config"]
    image, cls = 1, int(sets.pair_y[1, 1])
    panel.controls["image"].value = image
    assert list(panel.controls["cls"].options) == [(CLASSES[c], c) for c in sets.pair_y[1].tolist()]
    panel.controls["cls"].value = cls
    out = runs.attention_maps(net, sets.pair_x[1:2], torch.tensor([cls]), SPECIFIC, seed=0,
                              max_iters=cfg["max_iters"], tolerance=cfg["tolerance"])
    [heat] = [t for t in panel.figure.data if isinstance(t, go.Heatmap)]
    _assert_heat(heat.z, _heat(out["maps"])[0])
    assert panel.figure.layout.title.text.startswith(f"Image 1, explaining the {CLASSES[cls]}")
    wrong = next(c for c in range(len(CLASSES)) if c not in sets.pair_y[0].tolist())
    with pytest.raises(ValueError, match="not a"):
        panel.render(image=0, cls=wrong)
    assert "no class-specific maps" in views.pair_explorer(results, "retrieval").messages()[0]


def test_caf_explorer_reruns_l2_caf_with_the_chosen_settings(results, sets):
    panel = views.caf_explorer(results)
    assert set(panel.controls) == {"lr", "max_iters", "constraint", "layer", "objective", "image"}
    assert PLOTLY_MIME in panel.output.outputs[0]["data"] and panel.controls["max_iters"].value == 50
    values = dict(lr=0.5, max_iters=50, constraint="gaussian", layer="penultimate", objective="oblivious", image=5)
    for name, value in values.items():
        panel.controls[name].value = value
    net = ex.trained_net(results, "cam")
    out = runs.attention_maps(net, sets.test_x[5:6], sets.test_y[5:6], OBLIVIOUS, layer="penultimate", seed=0,
                              lr=0.5, max_iters=50, constraint="gaussian", tolerance=results["config"]["tolerance"])
    fig = panel.figure
    [heat] = [t for t in fig.data if isinstance(t, go.Heatmap)]
    _assert_heat(heat.z, _heat(out["maps"])[0])
    assert fig.layout.title.text.startswith(f"{OBLIVIOUS} on test image 5 ({sets.test_size[5]})")
    [loss] = [t for t in fig.data if t.name == "loss"]
    np.testing.assert_allclose(np.asarray(loss.y, float), [check[0] for check in out["losses"]], rtol=1e-5)
    retrieval = views.caf_explorer(results, "retrieval")
    assert retrieval.controls["objective"].value == "oblivious" and retrieval.figure is not None
    retrieval.controls["objective"].value = "specific"
    assert "only the class-oblivious objective" in retrieval.messages()[0]


def test_scenes_show_each_image_with_its_boxes(sets):
    fig = views.plot_scenes(sets, per_row=3)
    boxes = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len([t for t in fig.data if isinstance(t, go.Image)]) == 3 + 3 + 3
    assert len(boxes) == 3 + 3 + 2 * 3  # one box per single-object image, two per pair
    x0, y0, x1, y1 = sets.test_boxes[0].tolist()
    assert min(boxes[0].x) == x0 - 0.5 and max(boxes[0].y) == y1 - 0.5  # outlines on pixel edges


def test_quality_table_has_one_row_per_network(results):
    table = views.quality_result_table(results)
    assert [row["network"] for row in table.rows] == list(results["nets"])

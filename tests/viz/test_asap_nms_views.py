"""labkit.viz.asap_nms on a hand-made fake of the experiment's results: traces, controls, values, explorer."""
import copy

import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.viz import plots
from labkit.viz import asap_nms as views
from viz_checks import assert_one_group_each

SIZES = (500, 1000, 2000, 4000)
# median = c · N^p: the legend must read these slopes back
POWERS = {"torchvision": 1.5, "greedy_torch": 2.0, "greedy_numba": 1.8, "asap_numba": 1.0, "asap_torch": 1.2}
SHAPES = np.array([[32.0, 32.0], [64.0, 32.0], [64.0, 64.0]], dtype=np.float32)
CUTOFFS = [0.1, 0.2, 0.4]


def _offsets(cutoff, k):
    """A few (dy, dx, k') rows, fewer for larger cutoffs and larger for larger shapes."""
    r = 1 + k + int(cutoff < 0.2)
    rows = [(dy, dx, kk) for dy in range(-r, r + 1) for dx in range(-r, r + 1) for kk in range(len(SHAPES))
            if (dy, dx, kk) != (0, 0, k) and abs(dy) + abs(dx) <= r - (kk != k)]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def make_results(detector=True):
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 256, size=(12, 4)).astype(np.float32).reshape(12, 2, 2), axis=1)
    boxes = boxes.transpose(0, 2, 1).reshape(12, 4)[:, [0, 2, 1, 3]]  # x1 < x2, y1 < y2
    ap = dict(AP=0.3, AP50=0.55, AP_small=0.1, AP_medium=0.35, AP_large=0.5)
    return {
        "config": dict(sizes=SIZES, iou_threshold=0.7, cutoff=0.2, image_size=256),
        "latency": [dict(N=n, impl=impl, median_s=1e-9 * n ** p, iqr_s=1e-10 * n ** p)
                    for impl, p in POWERS.items() for n in SIZES],
        "counts": [dict(N=n, greedy_iou=n * 50, asap_iou=n * 3, jaccard=1.0, kept_greedy=300, kept_asap=300)
                   for n in SIZES],
        "lut_build_s": 0.01, "lut_size": 30.0,
        "iou_profile": dict(ious=np.r_[np.zeros(900), rng.uniform(0, 1, 100)].astype(np.float32), N=4000,
                            num_evaluated=123456, fraction_zero=0.9, sort_s=0.001, loop_s=0.02),
        "lut_neighbourhoods": dict(cutoffs=CUTOFFS, stride=16, shapes=SHAPES,
                                   offsets=[[_offsets(c, k) for k in range(len(SHAPES))] for c in CUTOFFS]),
        "cutoff_sweep": [dict(cutoff=c, lut_size=40 * (1 - c), iou_ratio=0.2 * (1 - c), jaccard=1 - 0.01 * c)
                         for c in CUTOFFS],
        "threshold_sweep": [dict(t=t, iou_ratio=0.05, jaccard=0.999) for t in (0.5, 0.7)],
        "drift_sweep": [dict(delta_std=d, iou_ratio=0.05, jaccard=1 - d) for d in (0.0, 0.1, 0.2)],
        "topk_sweep": [dict(top_k=k, iou_ratio=0.04, jaccard=1.0) for k in (100, 300)],
        "keep_diff": dict(boxes=boxes, greedy_only=[0, 3], asap_only=[5], both=[1, 2, 7, 8, 9], image_size=256),
        "full_radius": dict(N=2000, equal=True),
        "resolution": dict(image_sizes=[256, 1024], lut_size_before=30.0, lut_size_after=30.0, jaccards=[1.0, 1.0]),
        "detector": dict(greedy=ap, asap={k: v - 0.01 for k, v in ap.items()}, steps=100, train_images=64,
                         test_images=16) if detector else None,
    }


@pytest.fixture
def results():
    return make_results()


def test_latency_slopes_in_legend_and_menu(results):
    fig = views.plot_latency(results)
    assert isinstance(fig, go.Figure)
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["latency", "speed-up of ASAP-numba"]
    assert_one_group_each(fig, [5, 5])  # five implementations; 1× line + four speed-ups
    latency = fig.data[:5]
    for trace, (impl, power) in zip(latency, POWERS.items()):
        assert trace.name.endswith(f"slope {power:.2f}")
        assert trace.legendgroup == impl
        np.testing.assert_allclose(trace.y, [1e-6 * n ** power for n in SIZES], rtol=1e-4)  # ms
    speedup = {t.legendgroup: t for t in fig.data[6:]}
    assert set(speedup) == set(POWERS) - {"asap_numba"}
    np.testing.assert_allclose(speedup["greedy_torch"].y, np.asarray(SIZES, float), rtol=1e-4)  # N² / N
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.legend.title.text == "fitted log–log slope"
    assert fig.layout.updatemenus[0].buttons[1].args[1]["yaxis.title.text"].startswith("speed-up")


def test_fitted_slope_reads_a_power_law():
    assert views.fitted_slope([10, 100, 1000], [1, 100, 10_000]) == pytest.approx(2.0)
    assert np.isnan(views.fitted_slope([10], [1]))


def test_lut_slider_steps_and_neighbourhood(results):
    fig = views.plot_lut(results)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [f"k={k} · θ={c:g}" for k in range(3) for c in CUTOFFS]
    assert_one_group_each(fig, [3] * 9)  # outlines, centres, anchor box
    for index, (label, indices) in enumerate(plots.control_visibility(fig)):
        k, c = divmod(index, len(CUTOFFS))
        offsets = _offsets(CUTOFFS[c], k)
        centres = fig.data[indices[1]]
        assert len(centres.x) == len(offsets)
        np.testing.assert_array_equal(centres.marker.color, offsets[:, 2])
        # each point lies on a ring of 0.35·stride around its cell centre (dx·s, dy·s), in whole pixels
        assert np.allclose(np.hypot(np.asarray(centres.x) - offsets[:, 1] * 16,
                                    np.asarray(centres.y) - offsets[:, 0] * 16), 5.6, atol=0.75)
        assert f"|N(k)| = {len(offsets)} neighbours" in steps[index].args[1]["title.text"]
        assert fig.data[indices[2]].name == f"anchor {views.shape_label(SHAPES, k)}"
    assert fig.layout.sliders[0].active == 1  # the config's cutoff 0.2 on the first shape


def test_iou_histogram_and_profile(results):
    fig = views.plot_iou_histogram(results)
    assert len(fig.data) == 2
    assert fig.data[0].y[0] == pytest.approx(0.9)  # the spike at exactly 0
    assert float(np.sum(fig.data[1].y)) == pytest.approx(0.1, rel=1e-4)  # the rest, as shares
    assert fig.layout.yaxis.type == "log"
    assert any("90.0%" in a.text and "123,456" in a.text for a in fig.layout.annotations)
    assert any(shape.x0 == 0.7 for shape in fig.layout.shapes)
    profile = views.plot_profile(results)
    assert [t.name for t in profile.data] == ["sort: 1.00 ms (5%)", "suppression loop: 20.00 ms (95%)"]
    assert [t.x[0] for t in profile.data] == pytest.approx([1.0, 20.0])
    assert profile.layout.barmode == "stack"


def test_cutoff_sweep_and_ablations(results):
    fig = views.plot_cutoff_sweep(results)
    assert len(fig.data) == 4  # ratio, Jaccard, two target lines
    assert list(fig.data[0].x) == CUTOFFS and fig.layout.yaxis.type == "log"
    assert "mean |N| = 32.0" in fig.data[0].customdata[1]
    fig = views.plot_ablations(results)
    assert len(fig.data) == 6
    np.testing.assert_allclose(fig.data[3].y, [1.0, 0.9, 0.8], rtol=1e-5)  # drift Jaccard
    empty = copy.deepcopy(results)
    empty["topk_sweep"] = []
    fig = views.plot_ablations(empty)
    assert len(fig.data) == 4 and any(a.text == "not run" for a in fig.layout.annotations)


def test_keep_diff_groups_match(results):
    fig = views.plot_keep_diff(results)
    assert [t.name for t in fig.data] == ["image frame", "kept by both (5)", "kept by greedy only (2)",
                                          "kept by ASAP only (1)"]
    for trace, size in zip(fig.data, (1, 5, 2, 1)):
        assert list(trace.x).count(None) == size  # one closed outline per box
    x1, y1, x2, y2 = results["keep_diff"]["boxes"][3]
    xs, ys = fig.data[2].x[6:10], fig.data[2].y[6:10]  # greedy-only box 3, second in its group
    assert min(xs) == pytest.approx(x1) and max(xs) == pytest.approx(x2)
    assert min(ys) == pytest.approx(y1) and max(ys) == pytest.approx(y2)


def test_detector_ap_bars_and_message(results):
    fig = views.plot_detector_ap(results)
    assert [t.name for t in fig.data] == ["greedy NMS", "ASAP-NMS"]
    assert list(fig.data[0].x) == ["AP", "AP50", "AP small", "AP medium", "AP large"]
    np.testing.assert_allclose(fig.data[1].y, [0.29, 0.54, 0.09, 0.34, 0.49], rtol=1e-4)
    message = views.plot_detector_ap(make_results(detector=False))
    assert len(message.data) == 0
    assert message.layout.annotations[0].text == "detector AP runs at the full budget"


def test_lut_explorer_renders_and_rerenders():
    from labkit import nms
    from labkit.methods.asap_nms import AnchorLUT

    explorer = views.lut_explorer()
    assert set(explorer.controls) == {"k", "cutoff"}
    first = explorer.figure
    assert first is not None and len(explorer.output.outputs) == 1
    lut = AnchorLUT(nms.PROPOSAL_ANCHORS, anchor_iou_cutoff=0.2)
    assert len(first.data[1].x) == lut.lengths[4]
    explorer.controls["cutoff"].value = 0.4
    explorer.controls["k"].value = 7
    lut = AnchorLUT(nms.PROPOSAL_ANCHORS, anchor_iou_cutoff=0.4)
    assert explorer.figure is not first
    assert len(explorer.figure.data[1].x) == lut.lengths[7]
    assert f"|N(k)| = {lut.lengths[7]} neighbours" in explorer.figure.layout.title.text

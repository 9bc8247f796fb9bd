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
    detector_rows = [dict(seed=0, top_k=300, nms="greedy", cutoff=None, AP=17.0, rpn_jaccard=1.0)]
    detector_rows += [dict(seed=0, top_k=300, nms="asap", cutoff=c, AP=17.0 - 2 * c, rpn_jaccard=1 - 0.1 * c)
                      for c in CUTOFFS]
    detector_rows += [dict(seed=0, top_k=1000, nms="greedy", cutoff=None, AP=17.5, rpn_jaccard=1.0),
                      dict(seed=0, top_k=1000, nms="asap", cutoff=0.2, AP=17.4, rpn_jaccard=0.98)]
    detector_rows += [dict(r, seed=1, AP=r["AP"] - 5) for r in detector_rows if r["cutoff"] in (None, 0.2)]
    deltas = [dict(top_k=300, greedy_AP=17.0, value=-0.4, low=-0.7, high=-0.1, method="bootstrap", num_seeds=1),
              dict(top_k=1000, greedy_AP=17.5, value=-0.1, low=-0.3, high=0.2, method="bootstrap", num_seeds=1)]
    scenes = dict(iou_ratios=[0.1, 0.2], jaccards=[0.99, 1.0])
    return {
        "config": dict(sizes=SIZES, iou_threshold=0.7, cutoff=0.2, image_size=256),
        "latency": [dict(N=n, impl=impl, median_s=1e-9 * n ** p, iqr_s=1e-10 * n ** p,
                         times=[1e-9 * n ** p * f for f in (0.9, 1.0, 1.1)])
                    for impl, p in POWERS.items() for n in SIZES],
        "python_latency": [dict(N=1000, impl=impl, median_s=m, iqr_s=0.0, times=[m] * 3)
                           for impl, m in (("greedy_python", 2.0), ("asap_python", 0.25))],
        "counts": [dict(N=n, greedy_iou=n * 50, asap_iou=n * 3, jaccard=1.0, kept_greedy=300, kept_asap=300)
                   for n in SIZES + (12000,)],  # counts reach a larger N than the sweeps
        "lut_build_s": 0.01, "lut_size": 30.0,
        "iou_profile": dict(ious=np.r_[np.zeros(900), rng.uniform(0, 1, 100)].astype(np.float32), N=4000,
                            num_evaluated=123456, fraction_zero=0.9),
        "phase_profile": dict(N=6000, greedy=dict(sort=1e-4, gather=2e-3, iou=8e-3, bookkeeping=-1e-5, total=0.01),
                              asap=dict(sort=1e-4, gather=4e-4, iou=4e-4, bookkeeping=1e-4, total=1e-3)),
        "lut_neighbourhoods": dict(cutoffs=CUTOFFS, stride=16, shapes=SHAPES,
                                   offsets=[[_offsets(c, k) for k in range(len(SHAPES))] for c in CUTOFFS]),
        "cutoff_sweep": [dict(cutoff=c, lut_size=40 * (1 - c), iou_ratio=0.2 * (1 - c), jaccard=1 - 0.01 * c, N=2000,
                              **scenes) for c in CUTOFFS],
        "threshold_sweep": [dict(t=t, iou_ratio=0.05, jaccard=0.999, N=2000, **scenes) for t in (0.5, 0.7)],
        "drift_sweep": [dict(delta_std=d, iou_ratio=0.05, jaccard=1 - d, N=2000, **scenes) for d in (0.0, 0.1, 0.2)],
        "topk_sweep": [dict(top_k=k, iou_ratio=0.04, jaccard=1.0, N=2000, **scenes) for k in (100, 300)],
        "keep_diff": dict(boxes=boxes, greedy_only=[0, 3], asap_only=[5], both=[1, 2, 7, 8, 9], image_size=256),
        "resolution": dict(image_sizes=[256, 1024], N=1000, lut_size=30.0,
                           jaccards={256: [1.0, 0.99], 1024: [1.0, 1.0]}),
        "settings": {
            "anchor_side": [dict(side_over_stride=f, delta_std=0.1, lut_size=10.0 * f, jaccard=[1.0, 1 - f / 1000],
                                 speedup=dict(numba=[100 / f, 120 / f], torchvision=[200 / f, 220 / f]))
                            for f in (2.0, 8.0, 32.0)],
            "drift": [dict(delta_std=d, lut_size=2582.0, jaccard=[1 - d, 1 - 2 * d], speedup=dict(numba=[3.0, 3.2],
                                                                                              torchvision=[10.0, 9.0]))
                      for d in (0.05, 0.2)]},
        "detector": dict(source=dict(budget="full", seeds=[0, 1], steps=700, test_images=300), rows=detector_rows,
                         deltas=deltas) if detector else None,
    }


@pytest.fixture
def results():
    return make_results()


def test_latency_slopes_in_legend(results):
    fig = views.plot_latency(results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 5  # one trace per implementation
    for trace, (impl, power) in zip(fig.data, POWERS.items()):
        assert trace.name.endswith(f"slope {power:.2f}")
        assert trace.legendgroup == impl
        np.testing.assert_allclose(trace.y, [1e-6 * n ** power for n in SIZES], rtol=1e-4)  # ms
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.legend.title.text == "fitted log–log slope"


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


def test_iou_histogram(results):
    fig = views.plot_iou_histogram(results)
    assert len(fig.data) == 2
    assert fig.data[0].y[0] == pytest.approx(0.9)  # the spike at exactly 0
    assert float(np.sum(fig.data[1].y)) == pytest.approx(0.1, rel=1e-4)  # the rest, as shares
    assert fig.layout.yaxis.type == "log"
    assert any("90.0%" in a.text and "123,456" in a.text for a in fig.layout.annotations)
    assert any(shape.x0 == 0.7 for shape in fig.layout.shapes)


def test_phase_profile_bars(results):
    fig = views.plot_phase_profile(results)
    assert [t.name for t in fig.data] == ["sort", "gather candidates", "IoU and test", "bookkeeping"]
    assert fig.layout.barmode == "stack"
    greedy, asap = np.array([t.x for t in fig.data]).T  # ms per phase, one row per method
    np.testing.assert_allclose(greedy, [0.1, 2.0, 8.0, 0.0], atol=1e-6)  # a negative phase is drawn as 0
    np.testing.assert_allclose(asap, [0.1, 0.4, 0.4, 0.1], atol=1e-6)
    assert list(fig.data[2].customdata) == ["80%", "40%"]
    assert fig.data[0].y[0].endswith("10.00 ms a call") and fig.data[0].y[1].endswith("1.00 ms a call")
    assert "N = 6,000" in fig.layout.title.text and "10.0× faster" in fig.layout.title.text


def test_cutoff_sweep_and_ablations(results):
    fig = views.plot_cutoff_sweep(results)
    assert len(fig.data) == 4  # ratio, Jaccard, two target lines
    assert list(fig.data[0].x) == CUTOFFS and fig.layout.yaxis.type == "log"
    assert "mean |N| = 32.0" in fig.data[0].customdata[1]
    # the title reads N from the sweep itself (2,000), not from the latency sizes (up to 12,000)
    assert "N = 2,000, mean of 2 proposal sets" in fig.layout.title.text and "12,000" not in fig.layout.title.text
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


def test_speedups_per_level_with_intervals(results):
    from labkit.experiments import asap_nms as experiment

    fig = views.plot_speedups(results)
    points = {t.name: t for t in fig.data if t.mode == "markers+lines"}
    assert list(points) == ["compiled (numba)", "vectorized (torch)", "pure Python"]
    rows = experiment.speedup_rows(results)
    for level, trace in points.items():
        mine = [r for r in rows if r["level"] == level]
        assert list(trace.x) == [r["N"] for r in mine]
        np.testing.assert_allclose(trace.y, [r["speedup"] for r in mine], rtol=1e-4)
        np.testing.assert_allclose(np.asarray(trace.y) + np.asarray(trace.error_y.array), [r["high"] for r in mine],
                                   rtol=1e-3)
    np.testing.assert_allclose(points["pure Python"].y, [8.0])  # 2 s / 0.25 s
    np.testing.assert_allclose(points["compiled (numba)"].y, [n ** 0.8 for n in SIZES], rtol=1e-3)  # N^1.8 / N^1
    assert not [t for t in fig.data if t.mode == "lines" and t.legendgroup]  # targets sit at N ≥ 6,000: not timed
    larger = copy.deepcopy(results)
    for row in larger["latency"]:
        row["N"] *= 3  # up to 12,000
    targets = [t for t in views.plot_speedups(larger).data if t.mode == "lines" and t.legendgroup]
    assert {t.name: t.y[0] for t in targets} == pytest.approx(
        {"compiled (numba): paper ≈ 11×": 13.6 / 1.2, "vectorized (torch): spec ≥ 1.5×": 1.5,
         "vectorized (torch): spec ≥ 2.5×": 2.5, "pure Python: spec ≥ 5×": 5.0})


def test_detector_ap_against_cutoff_and_difference(results):
    fig = views.plot_detector_ap(results)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["ASAP, top-300"].x) == CUTOFFS
    np.testing.assert_allclose(by_name["ASAP, top-300"].y, [16.8, 16.6, 16.2], rtol=1e-4)
    assert list(by_name["greedy, top-1,000"].y) == [17.5, 17.5]
    difference = by_name["ASAP − greedy"]
    assert list(difference.x) == [300, 1000]
    np.testing.assert_allclose(difference.error_y.arrayminus, [0.3, 0.2], rtol=1e-4)
    np.testing.assert_allclose(difference.error_y.array, [0.3, 0.3], rtol=1e-4)
    assert list(difference.customdata) == ["[-0.7, -0.1]", "[-0.3, 0.2]"]
    assert list(by_name["margin -0.5 AP"].y) == [-0.5, -0.5]
    one_seed = copy.deepcopy(results)
    one_seed["detector"]["deltas"][0].update(low=-np.inf, high=np.inf)
    difference = next(t for t in views.plot_detector_ap(one_seed).data if t.name == "ASAP − greedy")
    assert difference.customdata[0] == "no interval" and difference.error_y.array[0] == 0
    assert list(difference.marker.symbol) == ["diamond-open", "diamond"]
    assert "full budget: 2 seeds × 700 steps; 300 test images" in fig.layout.title.text  # AP above: seed 0 only
    message = views.plot_detector_ap(make_results(detector=False))
    assert len(message.data) == 0 and "not run at this budget" in message.layout.annotations[0].text


def test_anchor_settings_means_and_spreads(results):
    fig = views.plot_anchor_settings(results)
    names = [t.name for t in fig.data]
    assert names.count("over greedy, numba") == names.count("keep-set Jaccard") == 2  # one per column
    assert "over greedy, SIMD numba" not in names  # a baseline the sweep did not time is left out
    side = fig.data[0]
    assert list(side.x) == [2.0, 8.0, 32.0]
    np.testing.assert_allclose(side.y, [55.0, 13.75, 3.4375], rtol=1e-4)  # mean of 100/f and 120/f
    np.testing.assert_allclose(side.error_y.array, [5.0, 1.25, 0.3125], rtol=1e-4)
    drift_jaccard = [t for t in fig.data if t.name == "keep-set Jaccard"][1]
    np.testing.assert_allclose(drift_jaccard.y, [0.925, 0.7], rtol=1e-4)
    np.testing.assert_allclose(drift_jaccard.error_y.arrayminus, [0.025, 0.1], rtol=1e-4)
    assert list(drift_jaccard.customdata) == ["mean |N| = 2582"] * 2
    assert fig.layout.yaxis.type == "log"
    message = views.plot_anchor_settings(dict(results, settings=None))
    assert len(message.data) == 0 and "full budget" in message.layout.annotations[0].text


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

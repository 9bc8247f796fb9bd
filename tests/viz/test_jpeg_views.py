"""labkit.viz.jpeg on smoke-budget results (and copies with a fake detection section or without
ablations): traces, what each control shows, the values drawn and the live explorer."""
import base64
import copy
import io
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from smoke import cached_smoke_run

from labkit.experiments import jpeg as ex
from labkit.methods import jpeg
from labkit.viz import jpeg as views
from labkit.viz import plots
from labkit.viz.show import PLOTLY_MIME
from viz_checks import assert_one_group_each

PLOTS = ("plot_accuracy_vs_quality", "plot_artifacts", "plot_quantization", "plot_rate_distortion",
         "plot_class_change", "plot_detection", "plot_losses")
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


@pytest.fixture(scope="module")
def results():
    yield from cached_smoke_run(ex)


def fake_detection():
    """Clean AP 30, then 18 / 24 / 29.5 at q = 10 / 50 / 90; three folds at value −1, +0, +1.5."""
    rows = []
    for q, value in ((0, 30.0), (10, 18.0), (50, 24.0), (90, 29.5)):
        folds = [{m: value + d for m in METRICS} for d in (-1.0, 0.0, 1.5)]
        rows.append(dict(quality=q, **{m: value for m in METRICS}, folds=folds))
    rows[1]["AP_small"] = float("nan")  # no small objects found at q = 10
    return rows


def decode(source):
    """A PNG data URI back to a (3, H, W) uint8 array."""
    assert source.startswith("data:image/png;base64,")
    return np.transpose(np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))), (2, 0, 1))


def slider_only(fig):
    """``fig`` without its dropdown, whose buttons restyle data rather than switch visibility."""
    copied = go.Figure(fig)
    copied.layout.updatemenus = []
    return copied


def compressed_qualities(results):
    return sorted(q for q in ex.sweep_table(results, "baseline") if q != ex.CLEAN)


def test_every_plot_returns_a_figure(results):
    with_detection = dict(copy.deepcopy(results), detection=fake_detection())
    for name in PLOTS:
        for r in (results, with_detection):
            assert isinstance(getattr(views, name)(r), go.Figure), name
    bare = {"config": results["config"], "sweep": [], "rate": []}
    for name in PLOTS:
        fig = getattr(views, name)(bare)
        assert isinstance(fig, go.Figure) and fig.layout.annotations, name  # a message, not a crash


def test_accuracy_vs_quality_main_and_ablations(results):
    fig = views.plot_accuracy_vs_quality(results)
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == ["main settings", "ablations"]
    settings = list(dict.fromkeys(r["setting"] for r in results["sweep"]))
    ablations = [s for s in settings if s not in ex.SETTINGS]
    assert len(ablations) == 8
    with_clean = [s for s in ablations if ex.CLEAN in ex.sweep_table(results, s)]
    assert with_clean == [s for s in ablations if not s.startswith("baseline")]  # codec variants have no clean row
    assert_one_group_each(fig, [2 * 4, 2 * (1 + len(ablations)) - (len(ablations) - len(with_clean))], num_static=1)
    qualities = compressed_qualities(results)
    main = {t.name: t for t in fig.data[1:9]}
    assert list(main) == ["baseline", "baseline (clean)", "fine-tuned", "fine-tuned (clean)", "off-the-shelf",
                          "off-the-shelf (clean)", "TTAC", "TTAC (clean)"]
    for setting in ex.SETTINGS:
        table, spread = ex.sweep_table(results, setting), ex.sweep_spread(results, setting)
        assert list(main[setting].x) == qualities
        np.testing.assert_allclose(main[setting].y, [100 * table[q] for q in qualities], atol=1e-3)
        np.testing.assert_allclose(main[setting].error_y.array, [100 * views.half_width(spread[q]) for q in qualities],
                                   atol=1e-3)  # 95 % over the two smoke seeds
        np.testing.assert_allclose(main[f"{setting} (clean)"].y, [100 * table[ex.CLEAN]] * 2, atol=1e-3)
        assert main[f"{setting} (clean)"].line.dash == "dash"
        assert main[f"{setting} (clean)"].line.color == main[setting].line.color
    bpp = {r["quality"]: r["bpp"] for r in results["rate"]}
    assert list(fig.layout.xaxis2.ticktext) == [f"{bpp[q]:.2f}" for q in qualities]
    assert fig.layout.xaxis2.overlaying == "x" and fig.data[0].xaxis == "x2"
    assert list(np.asarray(main["baseline"].customdata)[:, 0]) == pytest.approx([bpp[q] for q in qualities])
    assert menu.buttons[1].args[1]["title.text"].startswith("Ablations")
    shown = [fig.data[i].name for i in plots.control_visibility(fig)[1][1]]
    assert "baseline" in shown and "baseline (4:4:4)" in shown and "TTAC (probability KL)" in shown
    assert "TTAC" not in shown
    one_seed = dict(results, sweep=[r for r in results["sweep"] if r["seed"] == 0])
    trace = views.plot_accuracy_vs_quality(one_seed).data[1]
    assert trace.name == "baseline" and trace.error_y.array is None  # one seed: no interval, no bars


def test_accuracy_without_ablations_has_no_menu(results):
    plain = copy.deepcopy(results)
    plain["config"]["ablations"] = False
    plain["sweep"] = [r for r in plain["sweep"] if r["setting"] in ex.SETTINGS]
    fig = views.plot_accuracy_vs_quality(plain)
    assert not fig.layout.updatemenus
    assert len(fig.data) == 1 + 8 and all(t.visible is not False for t in fig.data)


def test_artifacts_slider_frames_and_views(results):
    fig = views.plot_artifacts(results)
    examples = results["examples"]
    qualities = sorted(examples[0]["by_quality"])
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == [str(q) for q in qualities] and len(fig.frames) == len(qualities)
    assert all(s.method == "animate" for s in slider.steps)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == [f"{e['name']} · {views.VIEW_LABELS[v]}" for e in examples for v in views.VIEWS]
    shown = plots.control_visibility(fig)
    assert len(shown) == len(examples) * len(views.VIEWS)
    for k, (_, indices) in enumerate(shown):  # the clean patch, the view, its caption
        e = k // len(views.VIEWS)
        assert indices == [e, len(examples) + 2 * k, len(examples) + 2 * k + 1]
    assert all(np.array_equal(decode(fig.data[e].source), example["clean"]) for e, example in enumerate(examples))
    kinds = [type(fig.data[i]).__name__ for i in range(len(examples), len(examples) + 2 * len(views.VIEWS), 2)]
    assert kinds == ["Image", "Image", "Image", "Heatmap", "Heatmap"]
    # the frame of the last quality: the first example's compressed, TTAC and difference views
    q = qualities[-1]
    frame = fig.frames[-1]
    assert frame.name == str(q) and len(frame.traces) == len(fig.data) - len(examples)
    first = examples[0]
    compressed = first["by_quality"][q]["compressed"]
    assert np.array_equal(decode(frame.data[0].source), compressed)
    assert np.array_equal(decode(frame.data[4].source), first["by_quality"][q]["TTAC"])
    mse = np.mean((compressed.astype(float) - first["clean"].astype(float)) ** 2) / 255 ** 2
    assert f"PSNR {10 * math.log10(1 / mse):.2f} dB vs clean" in frame.data[1].text[0]
    difference = np.abs(compressed.astype(float) - first["clean"].astype(float)).mean(0)
    np.testing.assert_allclose(frame.data[6].z, np.round(difference))
    blocks = jpeg.blockiness_map(torch.from_numpy(compressed).float() / 255).numpy()
    np.testing.assert_allclose(frame.data[8].z, blocks, atol=0.01)
    assert fig.data[len(examples) + 8].dx == 8  # one cell per 8×8 block
    assert slider.active == qualities.index(10)  # the figure opens at the heaviest compression


def test_quantization_slider_and_chroma_menu(results):
    fig = views.plot_quantization(results)
    qualities = sorted(results["tables"])
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(q) for q in qualities]
    assert_one_group_each(slider_only(fig), [2] * len(qualities))
    for k, q in enumerate(qualities):
        np.testing.assert_allclose(fig.data[2 * k].z, results["tables"][q][0])
        np.testing.assert_allclose(fig.data[2 * k + 1].z, results["zeroed"][q], atol=1e-3)
    assert fig.data[0].xaxis == "x" and fig.data[1].xaxis == "x2"
    luma, chroma = fig.layout.updatemenus[0].buttons
    assert (luma.label, chroma.label) == ("luma table", "chroma table")
    np.testing.assert_allclose(chroma.args[0]["z"][0], results["tables"][qualities[0]][1])
    np.testing.assert_allclose(chroma.args[0]["z"][1], results["zeroed"][qualities[0]], atol=1e-3)
    np.testing.assert_allclose(luma.args[0]["z"][2], jpeg.quantization_tables(qualities[1])[0])


def test_rate_distortion_curves(results):
    fig = views.plot_rate_distortion(results)
    rate = sorted(results["rate"], key=lambda r: r["quality"])
    curves = {t.name: t for t in fig.data}
    assert list(curves) == ["codec, photos' test regions", "codec, 48 px test patches",
                            "off-the-shelf corrected patches", "TTAC corrected patches"]
    np.testing.assert_allclose(curves["codec, photos' test regions"].x, [r["bpp"] for r in rate], atol=1e-4)
    np.testing.assert_allclose(curves["codec, photos' test regions"].y, [r["region_psnr"] for r in rate], atol=1e-3)
    ttac = ex.psnr_table(results, "TTAC")
    np.testing.assert_allclose(curves["TTAC corrected patches"].x, [r["patch_bpp"] for r in rate], atol=1e-4)
    np.testing.assert_allclose(curves["TTAC corrected patches"].y, [ttac[r["quality"]] for r in rate], atol=1e-3)
    assert list(curves["codec, 48 px test patches"].text) == [f"q{r['quality']}" for r in rate]


def test_rate_distortion_draws_correctors_where_they_were_scored(results):
    """At the full budget correctors are scored at fewer qualities than the codec: their points are
    drawn at those qualities, not dropped."""
    rows = [r for r in results["sweep"] if not (r["setting"] in ("off-the-shelf", "TTAC") and r["quality"] == 90)]
    fig = views.plot_rate_distortion(dict(results, sweep=rows))
    curves = {t.name: t for t in fig.data}
    q10 = next(r for r in results["rate"] if r["quality"] == 10)
    for setting in ("off-the-shelf", "TTAC"):
        trace = curves[f"{setting} corrected patches"]
        assert list(trace.text) == ["q10"] and trace.mode == "lines+markers"
        np.testing.assert_allclose(trace.x, [q10["patch_bpp"]], atol=1e-4)
        np.testing.assert_allclose(trace.y, [ex.psnr_table(results, setting)[10]], atol=1e-3)


def test_result_tables(results):
    table = views.mitigation_table(results)
    text = repr(table)
    headers = list(c.title() for c in table.columns.values())
    assert headers == ["setting", "training seeds", "uses labels", "top-1 at q = 10 (%)", "top-1 on clean patches (%)",
                       "PSNR at q = 10 (dB)"]
    rows = {r[0]: r for r in table.cells()}
    assert set(rows) >= {"TTAC (probability KL)", "off-the-shelf (unconditioned)", "TTAC", "fine-tuned"}
    kl = ex.sweep_table(results, "TTAC (probability KL)")
    assert rows["TTAC (probability KL)"][4] == f"{100 * kl[ex.CLEAN]:.1f}"  # its clean accuracy, one seed
    spread = 100 * np.asarray(ex.sweep_spread(results, "TTAC")[10])
    assert rows["TTAC"][3] == f"{spread.mean():.1f} ± {spread.std(ddof=1):.1f}"
    assert "nan" not in text.lower() and "standard deviation over training seeds" in text
    accuracy = views.accuracy_table(results)
    assert [c.title() for c in accuracy.columns.values()][:4] == ["setting", "training seeds", "clean (%)",
                                                                   "q = 10 (%)"]
    cells = {r[0]: r for r in accuracy.cells()}
    assert cells["TTAC (features)"][-1] == "—"  # not scored at q = 90
    assert cells["baseline"][3] == f"{100 * ex.sweep_table(results, 'baseline')[10]:.1f}"
    assert "<table" in table._repr_html_() and "<table" in accuracy._repr_html_()


def test_class_change_bars_and_orders(results):
    fig = views.plot_class_change(results)
    assert [t.name for t in fig.data] == list(ex.SETTINGS)
    clean = np.asarray(results["per_class_clean"])
    for trace in fig.data:
        expected = 100 * (np.asarray(results["per_class_q10"][trace.name]) - clean)
        np.testing.assert_allclose(np.asarray(trace.y, float), expected, atol=0.01)
    names = results["class_names"]
    by_drop, by_name = [b.args[0]["xaxis.categoryarray"] for b in fig.layout.updatemenus[0].buttons]
    baseline = dict(zip(names, fig.data[0].y))
    assert [baseline[n] for n in by_drop] == sorted(baseline.values())
    assert list(by_name) == sorted(names) and list(fig.layout.xaxis.categoryarray) == list(by_drop)


def test_detection_message_and_fake_section(results):
    fig = views.plot_detection(results)
    assert fig.layout.annotations[0].text == "detection is measured at the full budget"
    fig = views.plot_detection(dict(results, detection=fake_detection()))
    traces = {t.name: t for t in fig.data}
    assert list(traces) == ["AP", "AP (clean)", "AP small", "AP small (clean)", "AP medium", "AP medium (clean)",
                            "AP large", "AP large (clean)"]
    assert list(traces["AP"].x) == [10, 50, 90] and list(traces["AP"].y) == pytest.approx([18, 24, 29.5])
    assert list(traces["AP small"].x) == [50, 90]  # the NaN point is left out
    half_width = 4.303 * np.std([-1, 0, 1.5], ddof=1) / math.sqrt(3)  # t(0.975, 2) = 4.303
    np.testing.assert_allclose(traces["AP"].error_y.array, [half_width] * 3, rtol=1e-3)
    assert list(traces["AP large (clean)"].y) == [30, 30] and traces["AP large (clean)"].line.dash == "dash"
    assert math.isnan(views.half_width([5.0])) and math.isnan(views.half_width([1.0, 1.0]))  # no interval


def test_losses_one_line_per_run(results):
    assert plots.logged_steps(3, 25) == [0, 12, 24]  # another logging scheme: spread over the run
    assert plots.logged_steps(4, 25) == [0, 10, 20, 24] and plots.logged_steps(2, 10) == [0, 9]
    fig = views.plot_losses(results)
    assert [t.name for t in fig.data] == list(results["losses"])
    lines = {t.name: t for t in fig.data}
    cfg = results["config"]
    logged = len(results["losses"]["classifier"])
    assert list(lines["classifier"].x) == plots.logged_steps(logged, cfg["classifier_steps"])
    assert lines["classifier"].x[-1] == cfg["classifier_steps"] - 1
    assert lines["TTAC"].x[-1] == cfg["ttac_steps"] - 1 and lines["TTAC"].xaxis == "x3"
    assert lines["fine-tuned"].xaxis == "x" and lines["off-the-shelf (unconditioned)"].xaxis == "x2"


def test_artifact_explorer_renders_live(results):
    panel = views.artifact_explorer(results)
    assert set(panel.controls) == {"photo", "quality", "view"}
    assert panel.controls["quality"].min == 1 and panel.controls["quality"].max == 100
    assert list(panel.controls["view"].options) == list(views.VIEWS)
    assert PLOTLY_MIME in panel.output.outputs[0]["data"]  # the static initial output
    fig = panel.figure
    crop = views.explorer_crop("astronaut")
    assert crop.shape == (3, views.EXPLORER_CROP, views.EXPLORER_CROP)
    expected, _ = jpeg.jpeg_roundtrip(crop, 10, results["config"]["subsampling"])
    assert np.array_equal(decode(fig.data[1].source), (expected * 255).round().to(torch.uint8).numpy())
    assert "PSNR" in fig.data[3].text[0] and "top-1" in fig.data[3].text[0]
    assert "centre" in panel.messages()[0] and "TTAC →" in panel.messages()[0]
    for view in views.VIEWS:
        panel.controls["view"].value = view
        assert isinstance(panel.figure, go.Figure) and len(panel.figure.data) == 4
    assert isinstance(panel.figure.data[1], go.Heatmap)  # blockiness
    panel.controls["photo"].value = "page"
    panel.controls["quality"].value = 95
    assert panel.figure.layout.title.text.startswith("page at q = 95")
    no_ttac = dict(results, corrector_states={"off-the-shelf": results["corrector_states"]["off-the-shelf"]})
    panel = views.artifact_explorer(no_ttac)
    panel.controls["view"].value = "TTAC"
    assert "no TTAC corrector" in panel.messages()[0]

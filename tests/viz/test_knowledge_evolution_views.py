"""labkit.viz.knowledge_evolution on smoke-budget results: trace counts, what each control shows,
the values drawn, and an explorer that trains only when asked."""
import copy
import math

import ipywidgets
import numpy as np
import plotly.graph_objects as go
import pytest

from labkit.experiments import knowledge_evolution as ex
from labkit.experiments.knowledge_evolution_runs import train_generations
from labkit.viz import plots
from labkit.viz import knowledge_evolution as views
from labkit.viz.show import PLOTLY_MIME
from viz_checks import assert_one_group_each


@pytest.fixture(scope="module")
def results():
    mp = pytest.MonkeyPatch()
    mp.setenv("LABKIT_PROGRESS", "off")
    try:  # the default cache: a rerun of the tests (or the explorer's first Train) trains nothing
        yield ex.run(ex.from_budget("smoke", workers=1))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def full_like(results):
    """Smoke results dressed as a full run: two seeds, ablation rows (one of them WELS, one another
    s_r), a data-size sweep of two sizes and glyphs."""
    fake = copy.deepcopy(results)
    fake["main"] = [dict(r, seed=seed, dense=np.asarray(r["dense"]) + 0.01 * seed)
                    for r in results["main"] for seed in (0, 1)]
    ke_run = next(r for r in results["main"] if r["mode"] == "ke")
    fake["ablation_labels"] = ["reference (KELS, s_r 0.5, default reset, 15/class, ResNet)",
                               "WELS (weight-level split)", "KELS, s_r 0.75"]
    fake["ablation"] = [dict(ke_run, epochs_per_generation=15),
                        dict(ke_run, split_kind="wels", slim=np.full(len(ke_run["dense"]), np.nan),
                             dense=np.asarray(ke_run["dense"]) + 0.2, epochs_per_generation=15),
                        dict(ke_run, split_rate=0.75, slim=np.asarray(ke_run["slim"]) + 0.3, epochs_per_generation=15)]
    fake["sizes"] = [dict(r, samples_per_class=n, seed=seed, steps_per_generation=3, epochs_per_generation=1.5,
                          dense=np.asarray(r["dense"]) + 0.01 * seed + n / 1000)
                     for n in (5, 50) for r in results["main"] if r["mode"] in ("ke", "single") for seed in (0, 1)]
    fake["glyphs"] = [dict(r, dataset="glyphs", num_classes=20, chance=0.05, epochs_per_generation=15)
                      for r in results["main"] if r["mode"] in ("ke", "single")]
    return fake


def named(traces):
    return {t.name: t for t in traces if t.showlegend is not False}


def run_of(results, mode):
    return next(r for r in results["main"] if r["mode"] == mode)


def test_generations_main_view_has_ke_controls_and_chance(results):
    fig = views.plot_generations(results)
    assert not fig.layout.updatemenus  # one run set: no dropdown
    G = results["config"]["num_generations"]
    traces = named(fig.data)
    assert len(fig.data) == 7  # one seed: lines without bands
    assert set(traces) == {"KE dense", "KE slim", "one run, checkpoint at epoch g·1", "restart only dense",
                           "restart only slim", "full reset dense", "chance (0.10)"}
    for name, mode, key in (("KE dense", "ke", "dense"), ("KE slim", "ke", "slim"),
                            ("one run, checkpoint at epoch g·1", "single", "dense"),
                            ("restart only slim", "restart_only", "slim"), ("full reset dense", "full_reset", "dense")):
        assert list(traces[name].x) == list(range(1, G + 1))
        np.testing.assert_allclose(traces[name].y, run_of(results, mode)[key], atol=1e-6)
    assert traces["KE dense"].line.color == views.MODE_COLOURS["ke"] == plots.COLOURS["svmax"]
    assert traces["KE slim"].line.dash == "dash" and traces["KE dense"].line.dash is None
    assert fig.data[-1].name.startswith("chance") and fig.data[-2].name == "KE slim"  # KE drawn on top
    assert "1 epoch each" in fig.layout.xaxis.title.text


def test_generations_dropdown_shows_each_run_set(full_like):
    fig = views.plot_generations(full_like)
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels[0].startswith("main: digits") and labels[0].endswith("(2 seeds)")
    assert labels[1:4] == [f"ablation: {label}" for label in full_like["ablation_labels"]]
    assert labels[4:6] == [f"data size: {n}/class, KE and one run of the same steps (2 seeds)" for n in (5, 50)]
    assert labels[6] == "glyphs: 20 classes, 5/class"
    # main: 6 curves with bands (12) + chance; KELS rows: dense, slim, chance, N1; WELS row: no slim;
    # sizes: KE dense and slim, the single run, with bands (6) + chance; glyphs: dense, slim, single, chance, N1
    assert_one_group_each(fig, [13, 4, 3, 4, 7, 7, 5])
    options = plots.control_visibility(fig)
    main = named(fig.data[i] for i in options[0][1])
    two_seeds = np.stack([r["dense"] for r in full_like["main"] if r["mode"] == "ke"])
    np.testing.assert_allclose(main["KE dense"].y, two_seeds.mean(0), atol=1e-6)
    assert sum(t.fill == "toself" for t in (fig.data[i] for i in options[0][1])) == 6
    wels = named(fig.data[i] for i in options[2][1])
    assert set(wels) == {"KE dense", "chance (0.10)", f"N1 dense ({full_like['ablation'][1]['dense'][0]:.3f})"}
    n1 = next(t for t in wels.values() if t.name.startswith("N1"))
    np.testing.assert_allclose(n1.y, [full_like["ablation"][1]["dense"][0]] * 2, atol=1e-6)
    assert "chance (0.05)" in named(fig.data[i] for i in options[6][1])
    titles = [b.args[1]["xaxis.title.text"] for b in fig.layout.updatemenus[0].buttons]
    assert "1 epoch each" in titles[0] and all("15 epochs each" in t for t in titles[1:4] + titles[6:])
    assert all("3 SGD steps ≈ 1.5 epochs each; the single run: step g·3" in t for t in titles[4:6])
    sizes = named(fig.data[i] for i in options[4][1])
    assert "one run, checkpoint every 3 steps" in sizes
    five = np.stack([r["dense"] for r in full_like["sizes"] if r["mode"] == "ke" and r["samples_per_class"] == 5])
    np.testing.assert_allclose(sizes["KE dense"].y, five.mean(0), atol=1e-6)


def test_train_test_and_fit_reset_magnitude(results):
    fig = views.plot_train_test(results)
    traces = named(fig.data)
    assert set(traces) == {"KE train", "KE test", "restart only train", "restart only test", "chance (0.10)"}
    np.testing.assert_allclose(traces["KE train"].y, run_of(results, "ke")["train"], atol=1e-6)
    fig = views.plot_fit_reset_magnitude(results)
    traces = named(fig.data)
    assert len(fig.data) == 6
    np.testing.assert_allclose(traces["KE: reset part"].y, run_of(results, "ke")["reset_magnitude"], rtol=1e-5)
    np.testing.assert_allclose(traces["full reset: fit block"].y, run_of(results, "full_reset")["fit_magnitude"],
                               rtol=1e-5)
    assert min(traces["KE: fit block"].legendrank, traces["KE: reset part"].legendrank) \
        < traces["restart only: fit block"].legendrank  # KE listed first


def test_slim_cost_ratios_match_the_counted_costs(results):
    fig = views.plot_slim_cost(results)
    backbones = list(dict.fromkeys(row["backbone"] for row in results["costs"]))
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == \
        [f"backbone: {views.BACKBONE_LABELS[b]}" for b in backbones]
    assert_one_group_each(fig, [4] * len(backbones))  # params bars, s_r² marks, MACs bars, s_r² marks
    for backbone, (_, indices) in zip(backbones, plots.control_visibility(fig)):
        rows = [row for row in results["costs"] if row["backbone"] == backbone]
        bars = [fig.data[i] for i in indices if isinstance(fig.data[i], go.Bar)]
        marks = [fig.data[i] for i in indices if isinstance(fig.data[i], go.Scatter)]
        for bar, mark, key in zip(bars, marks, ("params", "macs")):
            assert list(bar.y) == [rows[0][f"dense_{key}"]] + [row[f"slim_{key}"] for row in rows]
            ratios = [row[f"slim_{key}"] / row[f"dense_{key}"] for row in rows]
            assert list(bar.text[1:]) == [views.ratio_text(r) for r in ratios]
            for text, ratio in zip(bar.text[1:], ratios):
                assert float(text.rstrip("×")) == pytest.approx(ratio, rel=5e-3)
            np.testing.assert_allclose(bar.customdata[1:], [row[f"conv_{key}_ratio"] for row in rows])
            np.testing.assert_allclose(mark.y, [row["split_rate"] ** 2 * row[f"dense_{key}"] for row in rows])
    assert views.ratio_text(0.25151924) == "0.252×"


def test_slim_tradeoff_plots_the_runs_slim_accuracy_against_counted_macs(results, full_like):
    fig = views.plot_slim_tradeoff(results)  # one split rate: the main KE runs
    dense, slim = fig.data
    ke_run = run_of(results, "ke")
    cost = next(c for c in results["costs"] if c["backbone"] == "resnet" and c["split_rate"] == 0.5)
    np.testing.assert_allclose(slim.x, [cost["slim_macs"] / cost["dense_macs"]])
    np.testing.assert_allclose(slim.y, [ke_run["slim"][-1]])
    np.testing.assert_allclose(dense.y, [ke_run["dense"][-1]])
    assert list(dense.x) == [1.0] and slim.error_y.array is None  # one seed: no error bar
    assert "main runs, 1 seed" in fig.layout.title.text
    fig = views.plot_slim_tradeoff(full_like)  # the ablation runs that change only s_r
    dense, slim = fig.data
    rows = ex.slim_tradeoff(full_like)
    assert [r["split_rate"] for r in rows] == [0.5, 0.75] and list(slim.text) == ["s_r 0.5", "s_r 0.75"]
    reference, wider = full_like["ablation"][0], full_like["ablation"][2]
    np.testing.assert_allclose(slim.y, [reference["slim"][-1], wider["slim"][-1]])
    np.testing.assert_allclose(dense.y, [reference["dense"][-1], wider["dense"][-1]])
    costs = {c["split_rate"]: c for c in full_like["costs"] if c["backbone"] == "resnet"}
    np.testing.assert_allclose(slim.x, [costs[r]["slim_macs"] / costs[r]["dense_macs"] for r in (0.5, 0.75)])
    assert [c[0] for c in slim.customdata] == [costs[0.5]["slim_macs"], costs[0.75]["slim_macs"]]


def test_result_tables_show_the_tables_numbers(results, full_like):
    table = views.generation_result_table(full_like)
    rows = ex.generation_table(full_like)
    assert len(table.rows) == len(rows) and table.dropped == []
    assert table.rows[0]["ke_dense"] == f"{rows[0]['ke_dense']:.3f} ± {rows[0]['ke_dense_std']:.3f}"
    assert "KE dense (test accuracy)" in repr(table) and "over 2 seeds" in table.caption()
    one_seed = views.generation_result_table(results)
    assert "±" not in repr(one_seed)  # a std over one seed is not shown
    sizes = views.size_result_table(full_like)
    first = ex.size_table(full_like)[0]
    assert sizes.rows[0]["gain_matched"] == f"{first['gain_matched']:.3f} ± {first['gain_matched_std']:.3f}"
    assert "KE gain over the compute-matched run (accuracy)" in repr(sizes) and "1.5" in repr(sizes)
    assert "full budget" in views.size_result_table(results).caption()


def test_mask_slider_kels_is_the_ceil_block(results):
    fig = views.plot_masks(results)
    rates = results["masks"]["split_rates"]
    assert [s.label for s in fig.layout.sliders[0].steps] == [f"{r:g}" for r in rates]
    assert_one_group_each(fig, [2] * len(rates))
    for rate, (_, indices), wels in zip(rates, plots.control_visibility(fig), results["masks"]["wels"]):
        kels_trace, wels_trace = (fig.data[i] for i in indices)
        z = np.asarray(kels_trace.z)
        C_o, C_i = z.shape
        expected = np.zeros((C_o, C_i), dtype=np.uint8)
        expected[:math.ceil(rate * C_o), :math.ceil(rate * C_i)] = 1
        np.testing.assert_array_equal(z, expected)
        np.testing.assert_allclose(np.asarray(wels_trace.z, dtype=float), np.asarray(wels, dtype=float), atol=1e-3)
        assert kels_trace.xaxis == "x" and wels_trace.xaxis == "x2"
    subtitle = fig.layout.sliders[0].steps[0].args[1]["title.subtitle.text"]
    assert f"KELS keeps {math.ceil(rates[0] * C_o)} × {math.ceil(rates[0] * C_i)} of {C_o} × {C_i}" in subtitle


def test_mask_view_takes_per_kernel_fractions(results):
    fake = copy.deepcopy(results)
    fake["masks"]["wels"] = [np.full(m.shape, 0.5) for m in results["masks"]["wels"]]
    fig = views.plot_masks(fake)
    assert "keeps 50% of the weights" in fig.layout.sliders[0].steps[0].args[1]["title.subtitle.text"]
    assert np.asarray(fig.data[1].z).dtype == np.float32


def test_weight_magnitude_slider_has_one_step_per_generation(results):
    run = run_of(results, "ke")
    G, C_o, C_i = run["magnitude"].shape
    fig = views.plot_weight_magnitude(results)
    steps = fig.layout.sliders[0].steps
    assert len(steps) == len(fig.frames) == G == results["config"]["num_generations"]
    assert [list(s.args[0]) for s in steps] == [[str(g + 1)] for g in range(G)]
    assert isinstance(fig.data[0], go.Heatmap)
    for g, frame in enumerate(fig.frames):
        np.testing.assert_allclose(frame.data[0].z, run["magnitude"][g], rtol=1e-6)
        np.testing.assert_allclose(frame.data[1].y, [run["fit_magnitude"][g], run["reset_magnitude"][g]], rtol=1e-6)
    np.testing.assert_allclose(fig.data[0].z, run["magnitude"][-1], rtol=1e-6)  # opens on the last generation
    box = fig.layout.shapes[0]
    assert (box.x1 + 0.5, box.y1 + 0.5) == (math.ceil(0.5 * C_i), math.ceil(0.5 * C_o))
    assert "restart only" in views.plot_weight_magnitude(results, mode="restart_only").layout.title.text
    with pytest.raises(ValueError, match="no 'ke' run with seed 7"):
        views.plot_weight_magnitude(results, seed=7)
    with pytest.raises(ValueError, match="no 'kd' runs"):
        views.plot_weight_magnitude(results, mode="kd")


def test_ablation_bars(results, full_like):
    empty = views.plot_ablation(results)
    assert not empty.data and "full budget" in empty.layout.annotations[0].text
    fig = views.plot_ablation(full_like)
    final, n1, gain = fig.data
    assert len(final.y) == 3 and final.y[0] == "reference (KELS, s_r 0.5,<br>default reset, 15/class, ResNet)"
    table = ex.ablation_table(full_like)
    np.testing.assert_allclose(final.x, [row["final_dense"] for row in table], atol=1e-4)
    np.testing.assert_allclose(n1.x, [row["n1_dense"] for row in table], atol=1e-4)
    np.testing.assert_allclose(gain.x, [row["gain"] for row in table], atol=1e-4)


def test_explorer_trains_only_when_train_is_pressed(results, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the explorer trained while it was being built")

    monkeypatch.setattr(views, "cached_runs", refuse)
    panel = views.ke_explorer(results)
    assert isinstance(panel, ipywidgets.Widget)
    ke_run = run_of(results, "ke")
    np.testing.assert_allclose(panel.figure.data[0].y, ke_run["dense"], atol=1e-6)  # the chapter's run, shown
    assert PLOTLY_MIME in panel.output.outputs[0]["data"]
    sliders = panel.controls
    assert (sliders["num_generations"].min, sliders["num_generations"].max) == (2, 8)
    assert (sliders["epochs_per_generation"].min, sliders["epochs_per_generation"].max) == (1, 30)  # smoke e = 1
    assert sliders["split_rate"].options[0] == 0.25 and sliders["split_rate"].options[-1] == 0.75

    calls = []
    trained = dict(ke_run, num_generations=3, dense=np.array([0.5, 0.6, 0.7]), slim=np.array([0.1, 0.4, 0.65]),
                   train=np.ones(3), split_rate=0.75, backbone="plain", epochs_per_generation=7)

    def record(name, fn, runs, workers=0):
        calls.append((name, fn, runs))
        return [trained]

    monkeypatch.setattr(views, "cached_runs", record)
    sliders["num_generations"].value = 3
    sliders["epochs_per_generation"].value = 7
    sliders["split_rate"].value = 0.75
    sliders["backbone"].value = "plain"
    assert not calls  # changing a control trains nothing
    panel.button.click()
    assert len(calls) == 1
    name, fn, runs = calls[0]
    assert name == "ke-generations" and fn is train_generations
    assert runs == [dict(dataset="digits", samples_per_class=5, image_size=16, backbone="plain", split_kind="kels",
                         split_rate=0.75, num_generations=3, epochs_per_generation=7, device="cpu", mode="ke",
                         seed=0)]
    dense = next(t for t in panel.figure.data if t.name == "dense")
    np.testing.assert_allclose(dense.y, [0.5, 0.6, 0.7], atol=1e-6)
    assert "3 generations × 7 epochs, s_r 0.75, plain 3-conv net" in panel.figure.layout.title.subtitle.text


def test_explorer_defaults_are_the_chapters_run(results):
    cfg = ex.from_budget("smoke", workers=1)
    chapter = next(r for r in ex.main_runs(cfg) if r["mode"] == "ke")
    panel = views.ke_explorer(results)
    assert views.explorer_run(results, **panel.values) == chapter  # so Train on the defaults is a cache hit

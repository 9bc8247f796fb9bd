"""Chapter 07 (JPEG compression defects): the paper's views as plotly figures with static controls,
plus a live explorer that compresses a photo crop with the real codec and corrects it.

Figures take the results of ``labkit.experiments.jpeg.run``. Quality 0 (``experiment.CLEAN``) is
the uncompressed reference everywhere; accuracy is drawn in % (the results hold fractions) and
detection AP in points. Images travel as PNG data URIs (lossless, so the JPEG artifacts shown are
the codec's own, and a fraction of the size of raw pixel arrays).
"""
from __future__ import annotations

import functools
import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.data.photos import PHOTO_NAMES, load_photo, split_boundary
from labkit.experiments import jpeg as experiment
from labkit.experiments import jpeg_runs as runs
from labkit.methods import jpeg
from labkit.report import seed_interval
from labkit.viz import plots, widgets
from labkit.viz.plots import PALETTE, compact, style, subplot_refs
from labkit.viz.tables import Column, ResultTable, mean_std, result_table

CLEAN = experiment.CLEAN
# baselines blue-grey, TTAC (the paper's method) orange, each ablation a shade of its family
SETTING_COLOURS = {
    "baseline": "#5F7A9A", "fine-tuned": "#59A14F", "off-the-shelf": "#B07AA1", "TTAC": "#F28E2B",
    "fine-tuned (q = 10 only)": "#2E6B2A", "off-the-shelf (unconditioned)": "#D4A6C8",
    "TTAC (features)": "#B8560F", "TTAC (+ pixel L1)": "#E15759", "TTAC (unconditioned)": "#EDC948",
    "TTAC (probability KL)": "#8C564B",
    "baseline (4:4:4)": "#2C4F75", "baseline (compressed at 2×, then resized)": "#9C755F", "classifier": "#5F7A9A",
}
VIEWS = ("compressed", "off-the-shelf", "TTAC", "difference", "blockiness")
VIEW_LABELS = {"compressed": "compressed", "off-the-shelf": "off-the-shelf corrected", "TTAC": "TTAC corrected",
               "difference": "|compressed − clean|", "blockiness": "8×8 blockiness (compressed)"}
DIFF_MAX = 32  # grey levels at which the |difference| colour saturates: an 8× amplification
DETECTION_METRICS = {"AP": ("AP", "#333333"), "AP_small": ("AP small", "#E15759"),
                     "AP_medium": ("AP medium", "#B07AA1"), "AP_large": ("AP large", "#4E79A7")}
EXPLORER_CROP = 96  # px cut from a photo's test region and compressed whole


def _colour(setting: str, index: int = 0) -> str:
    return SETTING_COLOURS.get(setting, PALETTE[index % len(PALETTE)])


def _menu(buttons: list[dict], y: float = 1.02) -> dict:
    """A dropdown above the plot, left."""
    return dict(buttons=buttons, direction="down", showactive=True, x=0, xanchor="left", y=y, yanchor="bottom",
                bgcolor="white", bordercolor="#9CA3AF", font=dict(size=13))


def _by_quality(mapping: dict | None) -> dict[int, Any]:
    """A quality-keyed dict with int keys (JSON round trips turn them into strings)."""
    return {int(q): v for q, v in (mapping or {}).items()}


def psnr_text(image: np.ndarray, clean: np.ndarray) -> str:
    """PSNR of two uint8 images as text: ``"30.13 dB"``, or ``"∞ dB"`` when they are equal."""
    mse = float(np.mean((np.asarray(image, np.float64) - np.asarray(clean, np.float64)) ** 2)) / 255 ** 2
    return "∞ dB" if mse == 0 else f"{10 * math.log10(1 / mse):.2f} dB"


# ---- 1. accuracy against quality ---------------------------------------------------------------

def _against_quality(x: list, y: list, clean: float | None, *, name: str, colour: str, span: list, unit: str,
                     error: list | None = None, customdata: Any = None, hover: str | None = None) -> list[go.Scatter]:
    """Points against quality (with error bars) and the clean value as a dashed line of the same colour."""
    traces = [plots.errorbar_trace(x, y, error, name=name, colour=colour).update(
        legendgroup=name, customdata=customdata, hovertemplate=hover)] if len(x) else []
    if clean is not None and np.isfinite(clean):
        traces.append(go.Scatter(x=span, y=compact([clean] * 2, 4), mode="lines", legendgroup=name,
                                 name=f"{name} (clean)", showlegend=not len(x),
                                 line=dict(color=colour, width=1.5, dash="dash"),
                                 hovertemplate=f"{html.escape(name)}, clean: %{{y:.2f}}{unit}<extra></extra>"))
    return traces


def _setting_traces(results: dict, setting: str, index: int, bpp: dict, span: list) -> list[go.Scatter]:
    """A setting's mean top-1 (%) over seeds at each compressed quality, with its 95 % t interval over
    seeds as error bars (none with one seed), and its clean accuracy dashed."""
    table, spread = experiment.sweep_table(results, setting), experiment.sweep_spread(results, setting)
    qualities = sorted(q for q in table if q != CLEAN)
    error = [100 * half_width(spread[q]) for q in qualities]
    return _against_quality(qualities, [100 * table[q] for q in qualities], 100 * table.get(CLEAN, math.nan),
                            name=setting, colour=_colour(setting, index), span=span, unit=" %",
                            error=error if np.isfinite(error).any() else None,
                            customdata=np.c_[[bpp.get(q, math.nan) for q in qualities], np.nan_to_num(error)],
                            hover=f"{html.escape(setting)}<br>q %{{x}} (%{{customdata[0]:.2f}} bpp): top-1 %{{y:.1f}} "
                                  "± %{customdata[1]:.1f} %<extra></extra>")


def plot_accuracy_vs_quality(results: dict) -> go.Figure:
    """Top-1 against JPEG quality for the baseline and the three mitigations, each with its clean
    accuracy dashed; bits per pixel on the top axis; a dropdown switches to the ablations."""
    title = "Top-1 accuracy against JPEG quality (dashed: the same model on clean patches; bars: 95 % over seeds)"
    present = list(dict.fromkeys(r["setting"] for r in results.get("sweep", [])))
    main = [s for s in experiment.SETTINGS if s in present]
    if not main:
        return plots.plot_message("no quality sweep in these results", title=title)
    qualities = sorted({r["quality"] for r in results["sweep"] if r["quality"] != CLEAN})
    span = [min(qualities, default=10) - 5, max(qualities, default=100) + 5]
    bpp = {r["quality"]: r["bpp"] for r in results.get("rate", [])}
    groups = {"main settings": [t for k, s in enumerate(main) for t in _setting_traces(results, s, k, bpp, span)]}
    ablations = [s for s in present if s not in experiment.SETTINGS]
    if results["config"].get("ablations") and ablations:
        groups["ablations"] = [t for k, s in enumerate(["baseline", *ablations])
                               for t in _setting_traces(results, s, k, bpp, span)]
    # an invisible trace on the top axis, so plotly draws it (its ticks read q → bpp)
    fig = go.Figure(go.Scatter(x=qualities, y=[None] * len(qualities), xaxis="x2", mode="markers",
                               showlegend=False, hoverinfo="skip"))
    updates = [{"title.text": title}, {"title.text": "Ablations against JPEG quality (the baseline for reference)"}]
    if len(groups) > 1:
        fig = plots.figure_with_dropdown(groups, fig=fig, layout_updates=updates[:len(groups)], y=1.13)
    else:
        fig.add_traces(groups["main settings"])
    fig.update_layout(xaxis2=dict(overlaying="x", side="top", range=span, tickvals=[q for q in qualities if q in bpp],
                                  ticktext=[f"{bpp[q]:.2f}" for q in qualities if q in bpp], showgrid=False,
                                  title=dict(text="bits per pixel (real codec, photos' test regions)", standoff=4),
                                  ticks="outside", tickcolor="#9CA3AF", linecolor="#9CA3AF"))
    fig.update_layout(xaxis=dict(title_text="JPEG quality q", range=span, tickvals=qualities))
    fig.update_yaxes(title_text="top-1 accuracy (%)")
    return style(fig, title=title, height=500, margin=dict(t=150),
                 legend=dict(x=1.02, y=1, xanchor="left"))


def accuracy_table(results: dict) -> ResultTable:
    """Mean top-1 (%) of every setting at every quality, clean first."""
    rows = experiment.accuracy_rows(results)
    qualities = sorted({r["quality"] for r in results.get("sweep", []) if r["quality"] != CLEAN})
    columns = {"setting": "setting", "seeds": Column("training seeds", digits=0), "clean": Column("clean", "%", 1),
               **{f"q{q}": Column(f"q = {q}", "%", 1) for q in qualities}}
    return result_table(rows, columns, title="Top-1 by JPEG quality (mean over training seeds)",
                        note="Clean: uncompressed patches (through the corrector, for correctors). "
                             "—: not scored at that quality (a corrector pass is costly).")


def mitigation_table(results: dict) -> ResultTable:
    """Every setting at q = 10 and on clean patches (after its correction): top-1 mean ± std over
    seeds, PSNR of what the classifier sees at q = 10, whether it used labels."""
    rows = [dict(r, q10=mean_std(r["q10"], r["q10_std"], 1), clean=mean_std(r["clean"], r["clean_std"], 1))
            for r in experiment.mitigation_rows(results)]
    columns = {"setting": "setting", "seeds": Column("training seeds", digits=0), "labels": "uses labels",
               "q10": Column("top-1 at q = 10", "%"), "clean": Column("top-1 on clean patches", "%"),
               "psnr10": Column("PSNR at q = 10", "dB", 2)}
    return result_table(rows, columns, title="Mitigations and ablations at q = 10 and on clean patches",
                        note="± is the standard deviation over training seeds; ablations train the first seed "
                             "only. Correctors see clean patches as if compressed at q = 100.")


# ---- 2. artifact viewer (static) ---------------------------------------------------------------

def _view_trace(view: str, clean: np.ndarray, compressed: np.ndarray, shown: np.ndarray | None,
                refs: dict, block_range: float) -> tuple[go.BaseTraceType, str]:
    """The right-hand panel for ``view`` and its caption (PSNR of the shown image against clean)."""
    fidelity = f"PSNR {psnr_text(compressed, clean)} (compressed)"
    if view == "difference":
        z = np.abs(compressed.astype(np.int16) - clean.astype(np.int16)).mean(0)  # (p, p) grey levels
        trace = go.Heatmap(z=compact(np.round(z)), zmin=0, zmax=DIFF_MAX, colorscale="Inferno", showscale=True,
                           colorbar=dict(title=dict(text="grey levels", side="right"), len=0.8, thickness=14),
                           hovertemplate="(%{x}, %{y}): %{z} grey levels<extra></extra>", **refs)
        return trace, f"{VIEW_LABELS[view]}, saturating at {DIFF_MAX}<br>{fidelity}"
    if view == "blockiness":
        z = jpeg.blockiness_map(torch.from_numpy(compressed).float() / 255).numpy()  # (p/8, p/8)
        trace = go.Heatmap(z=compact(z, 2), x0=3.5, dx=8, y0=3.5, dy=8, zmid=0, zmin=-block_range, zmax=block_range,
                           colorscale="RdBu_r", colorbar=dict(title=dict(text="edge − interior step", side="right"),
                                                              len=0.8, thickness=14),
                           hovertemplate="block at (%{x}, %{y}): %{z:.1f} grey levels<extra></extra>", **refs)
        return trace, f"{VIEW_LABELS[view]}, mean {z.mean():.1f}<br>{fidelity}"
    trace = go.Image(source=plots.png_source(shown), hovertemplate="(%{x}, %{y}): %{color}<extra></extra>", **refs)
    return trace, f"{VIEW_LABELS[view]}<br>PSNR {psnr_text(shown, clean)} vs clean"


def _image_axes(fig: go.Figure, size: int) -> None:
    """Square pixels, y down, no ticks, in both panels of a 1 × 2 figure."""
    fig.update_xaxes(range=[-0.5, size - 0.5], showticklabels=False, showgrid=False, ticks="", constrain="domain")
    fig.update_yaxes(range=[size - 0.5, -0.5], showticklabels=False, showgrid=False, ticks="", constrain="domain",
                     scaleanchor="x")
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)


def _caption(text: str, size: int, refs: dict) -> go.Scatter:
    return go.Scatter(x=[(size - 1) / 2], y=[-0.5], text=[text], mode="text", textposition="top center",
                      cliponaxis=False, showlegend=False, hoverinfo="skip", textfont=dict(size=13), **refs)


def plot_artifacts(results: dict) -> go.Figure:
    """Test patches beside their compressed, corrected, |difference| and blockiness views: a slider
    picks the quality (animation frames), a dropdown the patch and the view."""
    examples = [dict(e, by_quality=_by_quality(e["by_quality"])) for e in results.get("examples") or []]
    title = "JPEG artifacts on held-out patches"
    qualities = sorted(examples[0]["by_quality"]) if examples else []
    if not qualities:
        return plots.plot_message("no example patches in these results", title=title)
    size = int(np.asarray(examples[0]["clean"]).shape[-1])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=["clean", ""])
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    block_range = max(float(np.abs(jpeg.blockiness_map(torch.from_numpy(np.asarray(e["by_quality"][q]["compressed"]))
                                                       .float() / 255).numpy()).max()) for e in examples for q in
                      e["by_quality"]) or 1.0

    def content(example: dict, view: str, q: int) -> tuple[go.BaseTraceType, str]:
        shown = example["by_quality"][q]
        return _view_trace(view, np.asarray(example["clean"]), np.asarray(shown["compressed"]),
                           np.asarray(shown[view]) if view in shown else None, right, block_range)

    active = qualities.index(10) if 10 in qualities else 0
    for example in examples:
        fig.add_trace(go.Image(source=plots.png_source(np.asarray(example["clean"])), name=example["name"],
                               hovertemplate="(%{x}, %{y}): %{color}<extra></extra>", **left))
    varying = [(e, view) for e, example in enumerate(examples) for view in VIEWS
               if view in ("difference", "blockiness") or view in example["by_quality"][qualities[0]]]
    made = {q: [content(examples[e], view, q) for e, view in varying] for q in qualities}  # (trace, caption)
    for trace, text in made[qualities[active]]:
        fig.add_traces([trace, _caption(text, size, right)])
    steps = [(str(q), [change for trace, text in made[q] for change in (
        {"source": trace.source} if isinstance(trace, go.Image) else {"z": trace.z}, {"text": [text]})])
        for q in qualities]
    plots.figure_with_frames(fig, steps, traces=range(len(examples), len(fig.data)), active=active,
                             prefix="quality: ")
    shown = [[e, len(examples) + 2 * k, len(examples) + 2 * k + 1] for k, (e, _) in enumerate(varying)]
    masks = [[i in mine for i in range(len(fig.data))] for mine in shown]
    for trace, visible in zip(fig.data, masks[0]):
        trace.visible = visible
    buttons = [dict(label=f"{examples[e]['name']} · {VIEW_LABELS[view]}", method="update",
                    args=[{"visible": mask}, {}]) for (e, view), mask in zip(varying, masks)]
    fig.update_layout(updatemenus=[_menu(buttons, y=1.2)])
    _image_axes(fig, size)
    return style(fig, title=title, height=560, margin=dict(t=150, r=130))


# ---- 3. quantization tables and zeroed coefficients ----------------------------------------------

def _table_heatmap(z: Any, refs: dict, *, fraction: bool, colorbar_x: float) -> go.Heatmap:
    label = "fraction zeroed" if fraction else "step Q(u, v)"
    return go.Heatmap(z=compact(z, 3), x=list(range(8)), y=list(range(8)), zmin=0 if fraction else 1,
                      zmax=1 if fraction else 255, colorscale="Viridis" if fraction else "Blues", xgap=1, ygap=1,
                      texttemplate="%{z:.0%}" if fraction else "%{z:.0f}", textfont=dict(size=11),
                      colorbar=dict(title=dict(text=label, side="right"), x=colorbar_x, len=0.85, thickness=12),
                      hovertemplate=f"u %{{x}}, v %{{y}}: {label} %{{z:{'.1%' if fraction else '.0f'}}}"
                                    "<extra></extra>", **refs)


def plot_quantization(results: dict) -> go.Figure:
    """The luma quantization table and the per-frequency fraction of zeroed luma coefficients on the
    test patches, both following a quality slider; a dropdown shows the chroma table instead."""
    tables, zeroed = _by_quality(results.get("tables")), _by_quality(results.get("zeroed"))
    qualities = sorted(set(tables) & set(zeroed))
    title = "Quantization: the step per DCT frequency and how many coefficients it zeroes"
    if not qualities:
        return plots.plot_message("no quantization tables in these results", title=title)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=["luma quantization table", "fraction of luma blocks zeroed at (u, v)"])
    refs = [subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)]
    steps = [(str(q), [_table_heatmap(tables[q][0], refs[0], fraction=False, colorbar_x=0.43),
                       _table_heatmap(zeroed[q], refs[1], fraction=True, colorbar_x=1.0)]) for q in qualities]
    fig = plots.figure_with_slider(steps, fig=fig, prefix="quality: ", active=qualities.index(10) if 10 in qualities
                                   else 0)
    menu = []
    for k, name in enumerate(("luma", "chroma")):
        z = [compact(tables[q][k], 3) if i == 0 else compact(zeroed[q], 3) for q in qualities for i in range(2)]
        menu.append(dict(label=f"{name} table", method="update",
                         args=[{"z": z}, {"annotations[0].text": f"{name} quantization table"}]))
    fig.update_layout(updatemenus=[_menu(menu, y=1.12)])
    fig.update_xaxes(title_text="horizontal frequency u", showgrid=False, dtick=1, ticks="", constrain="domain")
    fig.update_yaxes(title_text="vertical frequency v", showgrid=False, dtick=1, ticks="", autorange="reversed",
                     scaleanchor="x", constrain="domain")
    fig.update_yaxes(scaleanchor="x2", title_text=None, row=1, col=2)
    return style(fig, title=title, height=520, margin=dict(t=130))


# ---- 4. rate–distortion -------------------------------------------------------------------------

def plot_rate_distortion(results: dict) -> go.Figure:
    """PSNR against bits per pixel: the codec on the photos' test regions and on the patches, and the
    corrected patches at the qualities where each corrector was scored (mean over seeds, plotted at
    the patches' rate: correction costs no bits)."""
    rate = sorted(results.get("rate") or [], key=lambda r: r["quality"])
    title = "Rate–distortion: PSNR against bits per pixel (labels: quality)"
    if not rate:
        return plots.plot_message("no rate measurements in these results", title=title)
    patch_bpp = [r["patch_bpp"] for r in rate]
    curves = {"codec, photos' test regions": ([r["bpp"] for r in rate], [r["region_psnr"] for r in rate], "#333333"),
              f"codec, {results['config']['patch_size']} px test patches": (patch_bpp, [r["psnr"] for r in rate],
                                                                           SETTING_COLOURS["baseline"])}
    labels = {name: [f"q{r['quality']}" for r in rate] for name in curves}
    for setting in ("off-the-shelf", "TTAC"):  # at the qualities where the corrector was scored
        table = experiment.psnr_table(results, setting)
        scored = [r for r in rate if r["quality"] in table]
        if scored:
            name = f"{setting} corrected patches"
            curves[name] = ([r["patch_bpp"] for r in scored], [table[r["quality"]] for r in scored],
                            SETTING_COLOURS[setting])
            labels[name] = [f"q{r['quality']}" for r in scored]
    fig = go.Figure()
    for name, (x, y, colour) in curves.items():
        trace = plots.errorbar_trace(x, y, None, name=name, colour=colour,
                                     dash="dot" if "corrected" in name else None)
        fig.add_trace(trace.update(mode="lines+markers" + ("" if "corrected" in name else "+text"), text=labels[name],
                                   textposition="top left",
                                   textfont=dict(size=11, color=colour), x=compact(x, 4),
                                   hovertemplate=f"{html.escape(name)}<br>%{{text}}: %{{x:.2f}} bpp, "
                                                 "%{y:.2f} dB<extra></extra>"))
    fig.update_xaxes(title_text="bits per pixel (the patches' files include their headers)")
    fig.update_yaxes(title_text="PSNR against the clean image (dB)")
    return style(fig, title=title, height=480, legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 5. per-class change ------------------------------------------------------------------------

def plot_class_change(results: dict) -> go.Figure:
    """Per-class top-1 change at q = 10 against the clean baseline, one bar per setting; classes
    sorted by the baseline's drop, or by name (dropdown)."""
    per_class, clean = results.get("per_class_q10") or {}, results.get("per_class_clean")
    title = "Per-class top-1 change at q = 10 against the clean baseline"
    settings = [s for s in experiment.SETTINGS if s in per_class]
    if not settings or clean is None:
        return plots.plot_message("no per-class accuracies in these results", title=title)
    names = list(results.get("class_names") or PHOTO_NAMES)
    clean = np.asarray(clean, float)
    fig = go.Figure()
    for k, setting in enumerate(settings):
        acc = np.asarray(per_class[setting], float)
        change = [None if not np.isfinite(c) else round(float(c), 2) for c in 100 * (acc - clean)]
        fig.add_trace(go.Bar(x=names, y=change, name=setting, marker=dict(color=_colour(setting, k)),
                             customdata=np.round(100 * np.c_[clean, acc], 1),
                             hovertemplate=f"%{{x}}, {html.escape(setting)}<br>%{{customdata[0]:.1f}} % clean → "
                                           "%{customdata[1]:.1f} % at q = 10 (%{y:+.1f} points)<extra></extra>"))
    drop = np.nan_to_num(100 * (np.asarray(per_class.get("baseline", clean), float) - clean), nan=np.inf)
    orders = {"sorted by the baseline's drop": [names[i] for i in np.argsort(drop, kind="stable")],
              "sorted by class name": sorted(names)}
    fig.update_layout(updatemenus=[_menu([dict(label=label, method="relayout", args=[{"xaxis.categoryarray": order}])
                                          for label, order in orders.items()])])
    fig.update_xaxes(title_text="class (source photograph)", categoryorder="array",
                     categoryarray=next(iter(orders.values())), tickangle=-40, showgrid=False)
    fig.update_yaxes(title_text="top-1 change (points)", zeroline=True, zerolinecolor="#9CA3AF")
    return style(fig, title=title, height=520, barmode="group", bargap=0.2, margin=dict(t=120, b=120),
                 legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 6. detection -------------------------------------------------------------------------------

def half_width(values: Any) -> float:
    """Half-width of ``labkit.report.seed_interval`` over the finite ``values``: the chapter's error
    bars use the claims' interval (NaN, no bar, where it has none: one value, or no spread)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return math.nan
    est = seed_interval(finite)
    return est.high - est.value if math.isfinite(est.high) else math.nan


def plot_detection(results: dict) -> go.Figure:
    """Box AP overall and per object size of the chapter-05 detector against JPEG quality, with the
    clean values dashed and 95 % t-intervals over the test folds."""
    rows = results.get("detection")
    title = "Detection on compressed scenes (dashed: clean)"
    if not rows:
        return plots.plot_message("detection is measured at the full budget", title=title)
    by_q = {int(r["quality"]): r for r in rows}
    qualities = sorted(q for q in by_q if q != CLEAN)
    span = [min(qualities, default=10) - 5, max(qualities, default=100) + 5]
    fig = go.Figure()
    for metric, (name, colour) in DETECTION_METRICS.items():
        mine = [q for q in qualities if np.isfinite(by_q[q].get(metric, math.nan))]
        ci = [half_width([f.get(metric) for f in by_q[q].get("folds") or []]) for q in mine]
        fig.add_traces(_against_quality(mine, [by_q[q][metric] for q in mine], by_q.get(CLEAN, {}).get(metric),
                                        name=name, colour=colour, span=span, unit="", error=ci,
                                        customdata=np.nan_to_num(compact(ci, 2)),
                                        hover=f"{name} at q %{{x}}: %{{y:.2f}} ± %{{customdata:.2f}}<extra></extra>"))
    fig.update_xaxes(title_text="JPEG quality q", range=span, tickvals=qualities)
    fig.update_yaxes(title_text="AP (points)")
    return style(fig, title=title + "; bars: 95 % fold interval", height=460, legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 7. training losses -------------------------------------------------------------------------

LOSS_PANELS = {"classifier": "cross-entropy: classifier, fine-tuning",
               "off-the-shelf": "pixel L1: off-the-shelf correctors", "TTAC": "task loss: TTAC (L1; KL ablation)"}
STEP_KEYS = {"classifier": "classifier_steps", "fine-tuned": "finetune_steps", "off-the-shelf": "corrector_steps",
             "TTAC": "ttac_steps"}


def plot_losses(results: dict) -> go.Figure:
    """Training loss of every run against its step, one panel per kind of loss."""
    losses = {name: loss for name, loss in (results.get("losses") or {}).items() if loss}
    title = "Training losses (logged every 10 steps)"
    if not losses:
        return plots.plot_message("no loss histories in these results", title=title)
    panels = list(LOSS_PANELS)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=list(LOSS_PANELS.values()))
    for k, (name, loss) in enumerate(losses.items()):
        family = next((f for f in STEP_KEYS if name.startswith(f)), "classifier")
        num_steps = int(results["config"].get(STEP_KEYS[family], len(loss)))
        col = 1 + panels.index("classifier" if family == "fine-tuned" else family)
        fig.add_trace(go.Scatter(x=plots.logged_steps(len(loss), num_steps), y=compact(loss), mode="lines", name=name,
                                 line=dict(color=_colour(name, k), width=2),
                                 hovertemplate=f"{html.escape(name)}, step %{{x}}: %{{y:.4f}}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", col=1)
    return style(fig, title=title, height=420, legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"),
                 margin=dict(b=120))


# ---- 8. live: compress and correct a photo crop -------------------------------------------------

def explorer_crop(name: str, size: int = EXPLORER_CROP) -> torch.Tensor:
    """A ``(3, size, size)`` crop from the test region of photo ``name`` (right of its split boundary),
    centred in that region both ways."""
    photo = load_photo(name)
    boundary, (height, width) = split_boundary(name), photo.shape[1:]
    top, left = (height - size) // 2, boundary + (width - boundary - size) // 2
    return photo[:, top:top + size, left:left + size]


def artifact_explorer(results: dict, photo: str = "astronaut", quality: int = 10) -> widgets.Explorer:
    """Live: a 96 px crop of a photo's test region, compressed with the real codec at any quality and
    run through the chapter's correctors (conditioned on the quantization tables); the classifier's
    top-1 on the centre of each image at its training patch size (48 px: on the 8×8 grid) is printed."""
    cfg = results["config"]
    crop = int(cfg["patch_size"])  # the classifier's training scale
    correctors = {name: runs.make_corrector(cfg["seed"], True, tuple(cfg["corrector_size"])) for name in
                  results.get("corrector_states") or {}}  # both main correctors are table-conditioned
    for name, model in correctors.items():
        model.load_state_dict(results["corrector_states"][name])
        model.eval()
    classifier = runs.make_classifier(cfg["seed"])
    classifier.load_state_dict(results["classifier_state"])
    classifier.eval()
    names = list(results.get("class_names") or PHOTO_NAMES)
    start = (EXPLORER_CROP - crop) // 2

    @functools.lru_cache(maxsize=32)
    def images(photo: str, quality: int) -> dict:
        clean = explorer_crop(photo)
        compressed, num_bytes = jpeg.jpeg_roundtrip(clean, quality, cfg["subsampling"])
        out = {"clean": clean, "compressed": compressed}
        with torch.no_grad():
            out.update({name: model(compressed[None], jpeg.table_features([quality]))[0].clamp(0, 1)
                        for name, model in correctors.items()})
            batch = torch.stack(list(out.values()))[..., start:start + crop, start:start + crop]
            probs = classifier(runs.normalise(batch)).softmax(1)
        return dict(images={k: (v * 255).round().to(torch.uint8).numpy() for k, v in out.items()}, bytes=int(num_bytes),
                    top={k: (names[int(p.argmax())], float(p.max())) for k, p in zip(out, probs)})

    def render(photo: str, quality: int, view: str):
        if view in ("off-the-shelf", "TTAC") and view not in correctors:
            raise ValueError(f"these results hold no {view} corrector; choose another view")
        got = images(photo, int(quality))
        shown = got["images"]
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08)
        refs = subplot_refs(fig, 1, 2)
        fig.add_trace(go.Image(source=plots.png_source(shown["clean"]), **subplot_refs(fig, 1, 1),
                               hovertemplate="(%{x}, %{y}): %{color}<extra></extra>"))
        bound = 1.25 * float(jpeg.blockiness_map(torch.from_numpy(shown["compressed"]).float() / 255).abs().max())
        trace, text = _view_trace(view, shown["clean"], shown["compressed"], shown.get(view), refs, bound or 1.0)
        fig.add_trace(trace)
        predicted = got["top"][view if view in got["top"] else "compressed"]
        fig.add_traces([_caption(f"clean<br>top-1 {got['top']['clean'][0]}", EXPLORER_CROP, subplot_refs(fig, 1, 1)),
                        _caption(f"{text} · top-1 {predicted[0]}", EXPLORER_CROP, refs)])
        _image_axes(fig, EXPLORER_CROP)
        bpp = 8 * got["bytes"] / EXPLORER_CROP ** 2
        fig = style(fig, height=460, margin=dict(t=110, r=130), title=f"{photo} at q = {quality}: {got['bytes']} bytes "
                    f"({bpp:.2f} bpp incl. headers), {cfg['subsampling']}")
        tops = " · ".join(f"{k} → {label} ({p:.0%})" for k, (label, p) in got["top"].items())
        return [fig, widgets.Message(f"True class: {photo}. Top-1 on the {crop} px centre of each "
                                     f"image: {tops}")]

    controls = {"photo": widgets.dropdown("photo", PHOTO_NAMES, photo),
                "quality": widgets.int_slider("JPEG quality", int(quality), 1, 100),
                "view": widgets.toggle("view", VIEWS)}
    return widgets.explorer(controls, render, title="Compress a photo crop and correct it")

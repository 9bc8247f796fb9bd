"""Chapter 05 (lottery tickets for detection): the paper's views as plotly figures with static
controls, plus a live explorer that prunes the dense detector without retraining.

Figures take the results of ``labkit.experiments.lottery.run`` and read its ready-made tables
(``ticket_rows``, ``bucket_changes``, ...); AP is in points (0–100), as the paper reports it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.data.scenes import coco_area_ranges
from labkit.experiments import lottery as experiment
from labkit.experiments import lottery_runs as runs
from labkit.methods import lottery
from labkit.models.tiny_detector import lr_factor
from labkit.viz import plots, tables, widgets
from labkit.viz.plots import PALETTE, band_traces, bound_trace, compact, rgba, style, subplot_refs
from labkit.viz.tables import Column

# section -> (legend label, colour, marker symbol): the paper's ticket orange, controls grey-blue
METHODS = {
    "global": ("global one-shot ticket", "#F28E2B", "circle"),
    "layerwise": ("layer-wise one-shot", "#B8560F", "diamond"),
    "iterative": ("iterative (with its rounds)", "#E15759", "square"),
    "random_reinit": ("ticket mask, heads re-drawn", "#9CA3AF", "x"),
    "random_mask": ("random mask, rewound weights", "#5F7A9A", "cross"),
    "transfer": ("transfer (sparse pretrained backbone)", "#59A14F", "triangle-up"),
    "modules": ("module subsets", "#B07AA1", "star"),
}
METRICS = {"AP": "AP", "AP50": "AP50", "AP_small": "AP small", "AP_medium": "AP medium", "AP_large": "AP large"}
BUCKET_COLOURS = {"small": "#E15759", "medium": "#B07AA1", "large": "#4E79A7"}
MODULE_COLOURS = {"base": "#4E79A7", "rpn": "#59A14F", "top": "#F28E2B", "heads": "#B07AA1"}
DENSE = "#333333"
EXPLORER_SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
EXPLORER_IMAGES = 100
SMALL_CROPS = 6  # small objects in the strip
SMALL_CROP = 24  # crop side, pixels
SCHEMES = {"global": "global threshold", "layerwise": "layer-wise (same fraction per layer)",
           "global_initial": "global threshold on the initial weights (control)"}


def percent(fraction: float) -> str:
    return f"{100 * float(fraction):.3g} %"


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating)) and math.isfinite(float(value))


def _dense_row(results: dict) -> dict:
    return next(r for r in experiment.ticket_rows(results) if r["method"] == "dense")


def _main_levels(results: dict) -> list[float]:
    return [s for s in sorted(results["config"]["sparsities"]) if experiment.main_ticket(results, s) is not None]


def _menu(buttons: list[dict]) -> dict:
    """A dropdown above the plot, left: for menus that restyle data or reorder categories (so they
    combine with a slider that switches visibility)."""
    return dict(buttons=buttons, direction="down", showactive=True, x=0, xanchor="left", y=1.02, yanchor="bottom",
                bgcolor="white", bordercolor="#9CA3AF", font=dict(size=13))


# ---- 1. AP against network sparsity ------------------------------------------------------------

def _method_traces(rows: list[dict], metric: str) -> list[go.Scatter]:
    traces = []
    for section, (label, colour, symbol) in METHODS.items():
        mine = [r for r in rows if r["method"].split(" (round")[0] == section and _finite(r[metric])]
        if not mine:
            continue
        mine.sort(key=lambda r: r["network_sparsity"])
        ci = [r["AP_ci"] if metric == "AP" else float("nan") for r in mine]
        trace = plots.errorbar_trace([100 * r["network_sparsity"] for r in mine], [r[metric] for r in mine],
                                     ci if metric == "AP" else None, name=label, colour=colour, symbol=symbol)
        detail = [f"{r['method']}{' · ' + r['modules'] if r['modules'] else ''}<br>prunable sparsity "
                  f"{percent(r['prunable_sparsity'])} · rewind step {r['rewind_step']} · {r['num_seeds']} seed(s)"
                  for r in mine]
        error = " ± %{customdata[1]:.2f}" if metric == "AP" else ""
        trace.update(legendgroup=section, customdata=[[d, c] for d, c in zip(detail, ci)],
                     hovertemplate=f"%{{customdata[0]}}<br>network sparsity %{{x:.1f}} %<br>{METRICS[metric]} "
                                   f"%{{y:.2f}}{error}<extra></extra>")
        if section in ("random_reinit", "random_mask", "modules"):
            trace.update(mode="markers", marker_size=12)
        if section == "modules":
            trace.update(mode="markers+text", text=[r["modules"] for r in mine], textposition="top center")
        traces.append(trace)
    return traces


def plot_ap_vs_sparsity(results: dict) -> go.Figure:
    """AP of every trained network against its network sparsity, the dense run as a ±CI band; a
    dropdown picks the metric, the legend toggles methods."""
    rows = experiment.ticket_rows(results)
    dense = _dense_row(results)
    groups, updates = {}, []
    for metric, name in METRICS.items():
        traces = []
        if _finite(dense[metric]):
            width = dense["AP_ci"] if metric == "AP" and _finite(dense["AP_ci"]) else 0.0
            band, line = band_traces([0, 100], [dense[metric]] * 2, [width] * 2, colour=DENSE, dash="dash",
                                     name="dense ± 95 % CI" if metric == "AP" else "dense", value_format=".2f")
            traces += [band, line]
        groups[name] = traces + _method_traces(rows, metric)
        updates.append({"yaxis.title.text": f"{name} (points)",
                        "title.text": f"{name} against network sparsity" + (" (means; bars: 95 % interval over "
                                                                           "training seeds)" if metric == "AP" else
                                                                           " (means over training seeds)")})
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    fig.update_xaxes(title_text="network sparsity (% of all parameters pruned)", range=[-3, 103])
    return style(fig, height=500, margin=dict(t=120), legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 2. relative change per size bucket --------------------------------------------------------

def plot_bucket_change(results: dict) -> go.Figure:
    """Relative AP change (ticket / dense − 1) of the global ticket per size bucket against sparsity."""
    rows = experiment.bucket_changes(results)
    title = "Relative AP change of the global ticket per object size"
    if not rows:
        return plots.plot_message("no global tickets to compare with the dense run", title=title)
    fig, missing = go.Figure(), []
    levels = sorted({r["sparsity"] for r in rows})
    fig.add_trace(bound_trace([100 * levels[0] - 5, 100 * levels[-1] + 5], [0, 0], name="no change",
                              showlegend=False))
    for k, bucket in enumerate(experiment.BUCKETS):
        mine = [r for r in rows if r["bucket"] == bucket]
        missing += [f"{bucket} at {percent(r['sparsity'])}" for r in mine if not _finite(r["change"])]
        mine = [r for r in mine if _finite(r["change"])]
        if not mine:
            continue
        dodge = (k - 1) * 0.6  # keeps the error bars of one level apart
        trace = plots.errorbar_trace([100 * r["sparsity"] + dodge for r in mine], [100 * r["change"] for r in mine],
                                     [100 * r["ci"] for r in mine], name=bucket, colour=BUCKET_COLOURS[bucket])
        trace.update(customdata=[[100 * r["sparsity"], r["dense_AP"], r["ticket_AP"]] for r in mine],
                     hovertemplate=f"{bucket} objects at %{{customdata[0]:g}} %<br>change %{{y:+.1f}} %<br>AP "
                                   "dense %{customdata[1]:.2f} → ticket %{customdata[2]:.2f}<extra></extra>")
        fig.add_trace(trace)
    if missing:
        fig.add_annotation(xref="paper", yref="paper", x=0.01, y=0.01, xanchor="left", yanchor="bottom",
                           showarrow=False, align="left", font=dict(color="#777777", size=12),
                           text="not shown (the dense bucket AP is 0, so no relative change): " + ", ".join(missing))
    fig.update_xaxes(title_text="prunable sparsity of the global ticket (%)",
                     tickvals=[100 * s for s in levels])
    fig.update_yaxes(title_text="relative AP change (%)")
    return style(fig, title=title + " (means; bars: 95 % interval over seeds)", height=460)


# ---- 3. per-layer sparsity ---------------------------------------------------------------------

def _short(layer: str) -> str:
    """``base.conv1.conv.weight`` → ``base.conv1``, ``rpn.conv.weight`` → ``rpn.conv``."""
    parts = layer.removesuffix(".weight").split(".")
    return ".".join(parts[:-1] if len(parts) > 2 and parts[-1] == "conv" else parts)


def plot_layer_sparsity(results: dict) -> go.Figure:
    """Pruned fraction of each prunable tensor, coloured by module; a slider picks the sparsity and a
    dropdown the scheme (global threshold vs the same fraction in every layer).

    The slider switches trace visibility and the dropdown restyles every trace's ``y``, so the two
    controls combine in the static page.
    """
    rows = results.get("layer_sparsity") or []
    title = "Per-layer sparsity of the dense run's weights"
    if not rows:
        return plots.plot_message("no layer sparsity table", title=title)
    schemes = [s for s in SCHEMES if any(r["scheme"] == s for r in rows)]
    pruned = {(r["scheme"], r["sparsity"], r["layer"]): r["pruned"] for r in rows}
    total = next((t["sparsity"]["num_parameters"] for ts in results["tickets"].values() for t in ts), None)
    steps, values = [], {s: [] for s in schemes}
    for level in sorted({r["sparsity"] for r in rows}):
        layers = sorted((r for r in rows if r["scheme"] == schemes[0] and r["sparsity"] == level),
                        key=lambda r: r["depth"])
        prunable, traces = sum(r["size"] for r in layers), []
        for k, module in enumerate(dict.fromkeys(r["module"] for r in layers)):
            mine = [r for r in layers if r["module"] == module]
            share = results.get("module_shares", {}).get(module)
            traces.append(go.Bar(
                x=[_short(r["layer"]) for r in mine], legendgroup=module,
                name=module + (f" ({share:.0%} of all parameters)" if share is not None else ""),
                marker=dict(color=MODULE_COLOURS.get(module, PALETTE[k]), line=dict(width=0)),
                customdata=[[r["size"], r["size"] / prunable, r["size"] / total if total else math.nan] for r in mine],
                hovertemplate="%{x}<br>pruned %{y:.1%}<br>%{customdata[0]:,} weights: %{customdata[1]:.1%} of "
                              "the prunable set, %{customdata[2]:.1%} of all parameters<extra></extra>"))
            for scheme in schemes:
                values[scheme].append([round(float(pruned.get((scheme, level, r["layer"]), math.nan)), 4)
                                       for r in mine])
        traces.append(go.Scatter(x=[_short(r["layer"]) for r in layers], y=[level] * len(layers), mode="lines",
                                 name=f"requested sparsity ({percent(level)})",
                                 line=dict(color=DENSE, dash="dash", width=1.5),
                                 hovertemplate=f"requested: {percent(level)}<extra></extra>"))
        for scheme in schemes:
            values[scheme].append([level] * len(layers))
        steps.append((percent(level), traces))
    fig = plots.figure_with_slider(steps, prefix="prunable sparsity: ", active=len(steps) - 1)
    for trace, y in zip(fig.data, values[schemes[0]]):
        trace.y = y
    fig.update_layout(updatemenus=[_menu([dict(label=SCHEMES[s], method="update", args=[
        {"y": values[s]}, {"title.text": f"{title}: {SCHEMES[s]}"}]) for s in schemes])])
    fig.update_xaxes(title_text="prunable tensor (input → output)", showgrid=False)
    fig.update_yaxes(title_text="pruned fraction", range=[0, 1.02], tickformat=".0%")
    return style(fig, title=f"{title}: {SCHEMES[schemes[0]]}", height=560, barmode="overlay",
                 margin=dict(t=120, b=150), legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 4. rewind point ---------------------------------------------------------------------------

def lr_schedule(results: dict) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of training, LR factor) of the detector's schedule: warm-up, then ×0.1 at decay_at."""
    cfg = results["config"]
    steps = int(cfg["steps"])
    warmup = max(1, int(cfg["warmup_frac"] * steps))
    at = np.arange(steps + 1)
    return at / steps, np.array([lr_factor(int(s), steps, warmup, (cfg["decay_at"],)) for s in at])


def plot_rewind(results: dict) -> go.Figure:
    """Ticket AP against the iteration it was rewound to, over the dense run's learning-rate
    schedule. Every point retrains the whole schedule from its rewound weights (compute-matched)."""
    rows = experiment.rewind_rows(results)
    cfg = results["config"]
    title = (f"Where to rewind: ticket AP at {percent(cfg['control_sparsity'])} against the rewind point "
             f"(each retrains all {cfg['steps']} steps)")
    if not rows:
        return plots.plot_message("no rewind runs", title=title)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fraction, factor = lr_schedule(results)
    fig.add_trace(go.Scatter(x=compact(100 * fraction), y=compact(factor), mode="lines", name="LR schedule (× lr)",
                             line=dict(color="#9CA3AF", width=2, shape="hv"), fill="tozeroy",
                             fillcolor=rgba("#9CA3AF", 0.12),
                             hovertemplate="%{x:.0f} %: lr × %{y:.2f}<extra></extra>"), secondary_y=True)
    dense = _dense_row(results)
    if _finite(dense["AP"]):
        fig.add_trace(bound_trace([0, 100], [dense["AP"]] * 2, name="dense AP"))
    trace = plots.errorbar_trace([100 * r["fraction"] for r in rows], [r["AP"] for r in rows],
                                 [r["AP_ci"] for r in rows], name="ticket AP", colour=METHODS["global"][1])
    trace.update(customdata=[[r["rewind_step"], r["retrained_steps"], r["num_seeds"]] for r in rows],
                 hovertemplate="rewound to step %{customdata[0]} (%{x:.0f} %), then %{customdata[1]} steps "
                               "retrained<br>AP %{y:.2f} (%{customdata[2]} seed(s))<extra></extra>")
    fig.add_trace(trace, secondary_y=False)
    main = 100 * cfg["rewind_frac"]
    fig.add_vline(x=main, line=dict(color=METHODS["global"][1], dash="dot", width=1.5),
                  annotation_text=f"end of warm-up ({main:g} %)", annotation_position="top left")
    fig.update_xaxes(title_text="rewind point (% of training)", range=[-2, 102])
    fig.update_yaxes(title_text="AP (points)", secondary_y=False)
    fig.update_yaxes(title_text="learning rate (× lr)", secondary_y=True, showgrid=False, range=[0, 1.1])
    return style(fig, title=title, height=440, legend=dict(orientation="h", x=0, y=-0.2, yanchor="top"))


# ---- 5. early-bird masks -----------------------------------------------------------------------

def plot_early_bird(results: dict) -> go.Figure:
    """IoU of the mask computed early in the dense run with the final mask, one line per sparsity."""
    rows = experiment.early_bird_rows(results)
    title = "Early-bird tickets: how soon the final mask is known"
    if not rows:
        return plots.plot_message("no early-bird snapshots", title=title)
    fig = go.Figure(bound_trace([0, 100], [0.9, 0.9], name="IoU 0.9"))
    for k, level in enumerate(sorted({r["sparsity"] for r in rows})):
        mine = sorted((r for r in rows if r["sparsity"] == level), key=lambda r: r["fraction"])
        x, y = [100 * r["fraction"] for r in mine] + [100], [r["iou"] for r in mine] + [1.0]  # the final mask itself
        ci = [r["iou_ci"] for r in mine] + [0.0]
        trace = plots.errorbar_trace(x, y, ci, name=percent(level), colour=PALETTE[(k + 1) % len(PALETTE)])
        fig.add_trace(trace.update(hovertemplate=f"{percent(level)} sparsity<br>mask at %{{x:.0f}} % of "
                                                 "training: IoU %{y:.3f} with the final one<extra></extra>"))
    fig.update_xaxes(title_text="snapshot (% of the dense training)", range=[-2, 102])
    fig.update_yaxes(title_text="mask IoU with the final mask", range=[0, 1.03])
    return style(fig, title=title + " (means; bars: 95 % interval over seeds)", height=420, legend=dict(title_text="sparsity", x=1.02, y=1, xanchor="left"))


# ---- 6. per-class change -----------------------------------------------------------------------

def plot_class_change(results: dict) -> go.Figure:
    """Relative AP change per class; a slider picks the sparsity, a dropdown the order (training
    frequency, or dense AP = difficulty)."""
    levels = _main_levels(results)
    title = "Per-class relative AP change of the global ticket"
    if not levels:
        return plots.plot_message("no global tickets", title=title)
    steps, updates = [], []
    for level in levels:
        rows = experiment.class_changes(results, level)
        updates.append({"title.text": f"{title} at {percent(level)} prunable sparsity"})
        change = [100 * r["change"] if _finite(r["change"]) else None for r in rows]
        custom = [[r["frequency"], r["dense_AP"], r["ticket_AP"]] for r in rows]
        bars = go.Bar(x=[r["class_name"] for r in rows], y=change, customdata=custom, name="relative change",
                      marker=dict(color=["#E15759" if c is not None and c < 0 else "#59A14F" for c in change]),
                      hovertemplate="%{x} (%{customdata[0]} training objects)<br>change %{y:+.1f} %<br>AP dense "
                                    "%{customdata[1]:.2f} → ticket %{customdata[2]:.2f}<extra></extra>")
        undefined = [r for r in rows if not _finite(r["change"])]
        marks = go.Scatter(x=[r["class_name"] for r in undefined], y=[0] * len(undefined), mode="markers",
                           name="dense AP is 0 (no relative change)", marker=dict(symbol="x", size=10, color="#777777"),
                           hovertemplate="%{x}: dense AP is 0<extra></extra>")
        steps.append((percent(level), [bars, marks]))
    fig = plots.figure_with_slider(steps, prefix="prunable sparsity: ", active=len(levels) - 1,
                                   layout_updates=updates)
    rows = experiment.class_changes(results, levels[0])
    orders = {"by training frequency (most → least)": sorted(rows, key=lambda r: -r["frequency"]),
              "by dense AP (easiest → hardest)": sorted(rows, key=lambda r: -np.nan_to_num(r["dense_AP"], nan=-1))}
    orders = {label: [r["class_name"] for r in order] for label, order in orders.items()}
    fig.update_layout(updatemenus=[_menu([dict(label=label, method="relayout", args=[{"xaxis.categoryarray": order}])
                                          for label, order in orders.items()])])
    fig.update_xaxes(title_text="class", categoryorder="array", categoryarray=next(iter(orders.values())))
    fig.update_yaxes(title_text="relative AP change (%)", zeroline=True, zerolinecolor="#9CA3AF")
    return style(fig, height=540, margin=dict(t=120, b=150), showlegend=False)


# ---- 7. module subsets (Table 3) ---------------------------------------------------------------

def plot_modules(results: dict) -> go.Figure:
    """AP when ``module_keep`` of each module subset is kept, with the network sparsity it gives."""
    rows = experiment.module_rows(results)
    cfg = results["config"]
    title = f"Pruning one module subset at a time (keeping {percent(cfg['module_keep'])} of it)"
    if not rows:
        return plots.plot_message("no module-subset runs at this budget", title=title)
    shares = results.get("module_shares", {})
    labels = [f"{r['subset']}<br>{percent(r['network_sparsity'])} of the net" for r in rows]
    hover = [f"{r['subset']}: {sum(shares.get(m, 0) for m in runs.MODULE_SUBSETS.get(r['subset'], ())):.0%} of "
             f"the parameters<br>network sparsity {percent(r['network_sparsity'])}" for r in rows]
    fig = plots.plot_bars({"ticket AP": (labels, [r["AP"] for r in rows], [r["AP_ci"] for r in rows])},
                          colours={"ticket AP": METHODS["modules"][1]}, hovertext={"ticket AP": hover},
                          value_format=".2f", value_title="AP (points)", category_title="pruned subset",
                          title=title + " (bars: 95 % interval over seeds, when more than one)", height=440)
    dense = _dense_row(results)
    if _finite(dense["AP"]):
        fig.add_hline(y=dense["AP"], line=dict(color=DENSE, dash="dash", width=1.5),
                      annotation_text=f"dense {dense['AP']:.2f}", annotation_position="top right")
    return fig


# ---- 8. dense vs ticket detections -------------------------------------------------------------

def _outline_trace(boxes: np.ndarray, texts: list[str], name: str, line: dict, refs: dict,
                   showlegend: bool) -> go.Scatter:
    """Closed outlines of ``boxes`` (n, 4) x1, y1, x2, y2 in one trace; ``texts[j]`` hovers on box j."""
    xs, ys, text = [], [], []
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes, float).reshape(-1, 4), texts):
        xs, ys, text = xs + [x1, x2, x2, x1, x1, None], ys + [y1, y1, y2, y2, y1, None], text + [label] * 5 + [""]
    return go.Scatter(x=xs, y=ys, text=text, mode="lines", name=name, legendgroup=name, showlegend=showlegend,
                      line=line, hovertemplate="%{text}<extra></extra>", **refs)


def plot_detections(results: dict) -> go.Figure:
    """The dense detector beside the global ticket on the same test images (slider), predictions
    coloured by class, ground truth dashed."""
    control = results["config"]["control_sparsity"]
    ticket = experiment.main_ticket(results, control)
    title = f"Detections: dense vs the global ticket at {percent(control)} (score ≥ {runs.SCORE_FOR_VIEWER:g})"
    images = np.asarray(results.get("viewer_images", []))
    if ticket is None or not len(images):
        return plots.plot_message("no ticket at the control sparsity, or no viewer images", title=title)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=["dense", f"global ticket, {percent(control)} of the prunable weights"])
    refs = [subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)]
    names = list(results["class_names"])
    steps = []
    for i, image in enumerate(images):
        source = plots.png_source(image)
        traces, shown = [], set()
        for panel, run in enumerate((results["dense"], ticket)):
            traces.append(go.Image(source=source, x0=0.5, y0=0.5, hoverinfo="skip", **refs[panel]))  # pixel i: [i, i+1]
            found, truth = run["viewer"][i], results["viewer_truth"][i]
            labels, scores = np.asarray(found["labels"], int), np.asarray(found["scores"], float)
            for c in sorted(set(labels.tolist())):
                texts = [f"{names[c]} {score:.2f}" for score in scores[labels == c]]
                traces.append(_outline_trace(np.asarray(found["boxes"])[labels == c], texts, names[c],
                                             dict(color=PALETTE[c % len(PALETTE)], width=2), refs[panel],
                                             names[c] not in shown))
                shown.add(names[c])
            traces.append(_outline_trace(truth["boxes"], [f"truth: {names[c]}" for c in truth["labels"]],
                                         "ground truth", dict(color="white", width=1.5, dash="dash"), refs[panel],
                                         panel == 0))
        steps.append((str(i + 1), traces))
    fig = plots.figure_with_slider(steps, fig=fig, prefix="test image ")
    size = images.shape[-1]
    fig.update_xaxes(range=[0, size], showticklabels=False, showgrid=False, constrain="domain")
    fig.update_yaxes(range=[size, 0], showticklabels=False, showgrid=False, scaleanchor="x", constrain="domain")
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    return style(fig, title=title, height=520, legend=dict(x=1.02, y=1, xanchor="left", bgcolor="#D1D5DB"))


# ---- 8b. small objects ---------------------------------------------------------------------------

def small_objects(results: dict, max_crops: int = SMALL_CROPS) -> list[dict]:
    """The small ground-truth objects (COCO's small bucket scaled to the image) of the viewer
    images: image index, box, label and area, at most ``max_crops``."""
    images = np.asarray(results.get("viewer_images", []))
    if not len(images):
        return []
    limit = coco_area_ranges(images.shape[-1])["small"][1]
    found = []
    for i, truth in enumerate(results["viewer_truth"]):
        boxes = np.asarray(truth["boxes"], float).reshape(-1, 4)
        areas = np.asarray(truth.get("areas", (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])), float)
        found += [dict(image=i, box=box, label=int(label), area=float(area))
                  for box, label, area in zip(boxes, truth["labels"], areas) if area < limit]
    return found[:max_crops]


def _crop_window(box: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``SMALL_CROP``-pixel window centred on ``box``, kept inside the image."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    clip = lambda c: int(min(max(round(c - SMALL_CROP / 2), 0), size - SMALL_CROP))  # noqa: E731
    return clip(cx), clip(cy)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _crop_detections(run: dict, obj: dict, corner: tuple[int, int], names: list[str], refs: dict,
                     shown: set) -> list[go.Scatter]:
    """A network's detections overlapping the small object (IoU ≥ 0.1), in crop coordinates: the
    right class solid green, another class orange."""
    found = run["viewer"][obj["image"]]
    boxes = np.asarray(found["boxes"], float).reshape(-1, 4)
    overlap = _iou(obj["box"], boxes) if len(boxes) else np.zeros(0)
    labels, scores = np.asarray(found["labels"], int), np.asarray(found["scores"], float)
    shift = np.array([corner[0], corner[1], corner[0], corner[1]], float)
    traces = []
    for right, (name, colour) in ((True, ("detection, right class", "#59A14F")),
                                  (False, ("detection, other class", "#F28E2B"))):
        pick = (overlap >= 0.1) & ((labels == obj["label"]) == right)
        texts = [f"{names[c]} {sc:.2f} · IoU {o:.2f}" for c, sc, o in zip(labels[pick], scores[pick], overlap[pick])]
        traces.append(_outline_trace(boxes[pick] - shift, texts, name, dict(color=colour, width=2), refs,
                                     name not in shown and bool(pick.any())))
        if pick.any():
            shown.add(name)
    return traces


def plot_small_objects(results: dict) -> go.Figure:
    """A strip of small test objects: the dense detector's detections (top row) against the global
    ticket's (bottom row, the slider picks the sparsity); the ground truth dashed."""
    objects, levels = small_objects(results), _main_levels(results)
    title = "Small objects: dense vs the global ticket"
    if not objects or not levels:
        return plots.plot_message("no small objects in the viewer images, or no global tickets", title=title)
    images, names = np.asarray(results["viewer_images"]), list(results["class_names"])
    size = images.shape[-1]
    fig = make_subplots(rows=2, cols=len(objects), horizontal_spacing=0.015, vertical_spacing=0.06,
                        row_titles=["dense", "ticket"],
                        subplot_titles=[f"{names[o['label']]}, {o['area']:.0f} px²" for o in objects])
    shown: set = set()
    static_traces, corners = [], [_crop_window(o["box"], size) for o in objects]
    for col, (obj, (x0, y0)) in enumerate(zip(objects, corners), start=1):
        crop = images[obj["image"]][:, y0:y0 + SMALL_CROP, x0:x0 + SMALL_CROP]
        truth = np.asarray(obj["box"])[None] - np.array([x0, y0, x0, y0], float)
        for row in (1, 2):
            refs = subplot_refs(fig, row, col)
            static_traces.append(go.Image(source=plots.png_source(crop), x0=0.5, y0=0.5, hoverinfo="skip", **refs))
            static_traces.append(_outline_trace(truth, [f"truth: {names[obj['label']]}"], "ground truth",
                                                dict(color="white", width=1.5, dash="dash"), refs,
                                                row == 1 and col == 1))
        static_traces += _crop_detections(results["dense"], obj, (x0, y0), names, subplot_refs(fig, 1, col), shown)
    fig.add_traces(static_traces)
    steps = []
    for level in levels:
        ticket = experiment.main_ticket(results, level)
        traces = [t for col, (obj, corner) in enumerate(zip(objects, corners), start=1)
                  for t in _crop_detections(ticket, obj, corner, names, subplot_refs(fig, 2, col), shown)]
        steps.append((percent(level), traces))
    fig = plots.figure_with_slider(steps, fig=fig, prefix="ticket's prunable sparsity: ", active=len(steps) - 1)
    fig.update_xaxes(range=[0, SMALL_CROP], showticklabels=False, showgrid=False, ticks="", constrain="domain")
    fig.update_yaxes(range=[SMALL_CROP, 0], showticklabels=False, showgrid=False, ticks="", constrain="domain")
    for k in range(1, 2 * len(objects) + 1):  # square pixels in every cell
        fig.update_layout({f"yaxis{k if k > 1 else ''}": dict(scaleanchor=f"x{k if k > 1 else ''}")})
    return style(fig, title=f"{title} ({SMALL_CROP} px crops, detections with IoU ≥ 0.1, score ≥ "
                            f"{runs.SCORE_FOR_VIEWER:g})", height=480,
                 legend=dict(x=1.04, y=1, xanchor="left", bgcolor="#D1D5DB"))


# ---- 9. training loss --------------------------------------------------------------------------

def plot_loss(results: dict) -> go.Figure:
    """Training loss of the dense run and of the global tickets (from their rewind step on)."""
    steps = int(results["config"]["steps"])
    tickets = [(s, experiment.main_ticket(results, s)) for s in _main_levels(results)]
    curves = [("dense", results["dense"], 0, DENSE)] + [
        (f"ticket {percent(s)}", t, int(t["rewind_step"]), PALETTE[(k + 1) % len(PALETTE)])
        for k, (s, t) in enumerate(tickets)]
    fig = go.Figure([go.Scatter(x=plots.logged_steps(len(run["loss"]), steps, start),
                                y=compact(run["loss"]), mode="lines", name=name, line=dict(color=colour, width=2),
                                hovertemplate=f"{name}, step %{{x}}: %{{y:.3f}}<extra></extra>")
                     for name, run, start, colour in curves if run.get("loss")])
    if not fig.data:
        return plots.plot_message("no loss histories", title="Training loss")
    fig.update_xaxes(title_text="iteration (tickets start at their rewind step)")
    fig.update_yaxes(title_text="detector loss (RPN + RoI head)")
    return style(fig, title="Training loss: the dense run and the retrained global tickets", height=420,
                 legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 9b. result tables ---------------------------------------------------------------------------

TABLE_LABELS = {"dense": "dense", "global": "global one-shot ticket", "layerwise": "layer-wise one-shot ticket",
                "iterative": "iterative ticket", "random_reinit": "control: ticket mask, heads re-drawn",
                "random_mask": "control: random mask, rewound weights", "rewind": "rewind study ticket",
                "modules": "module-subset ticket", "transfer": "transfer ticket (sparse pretrained backbone)"}


def _label(method: str) -> str:
    section, _, rest = method.partition(" (")
    return TABLE_LABELS.get(section, section) + (f" ({rest}" if rest else "")


def _ap_cell(mean: float, half: float) -> str:
    return tables.mean_std(mean, half, digits=2)


def ticket_table(results: dict) -> tables.ResultTable:
    """Every trained network: recipe, sparsities, AP means over the seeds that trained it."""
    rows = [dict(r, method=_label(r["method"]), AP_text=_ap_cell(r["AP"], r["AP_ci"]))
            for r in experiment.ticket_rows(results)]
    points = dict(unit="points", digits=2)
    columns = {"method": "Network", "modules": "Pruned modules", "rewind_step": Column("Rewound to", "step"),
               "retrained_steps": Column("Trained with the mask", "steps"),
               "prunable_sparsity": Column("Prunable sparsity", percent=True, digits=3),
               "network_sparsity": Column("Network sparsity", percent=True, digits=3), "num_seeds": "Seeds",
               "AP_text": Column("AP ± 95 % interval", "points"), "AP50": Column("AP50", **points),
               **{f"AP_{b}": Column(f"AP {b}", **points) for b in experiment.BUCKETS}}
    return tables.result_table([{k: (v or None) if k == "modules" else v for k, v in r.items()} for r in rows],
                               columns, title="Every trained network (means over the seeds that trained it)",
                               note="The interval is a 95 % t-interval over training seeds; a network trained "
                                    "for one seed has none. AP is COCO AP@[.5:.95] in points. Steps trained with "
                                    "the mask are per round for iterative pruning.")


def headline_table(results: dict) -> tables.ResultTable:
    """The headline networks of every training seed, side by side (AP in points)."""
    rows = experiment.headline_rows(results)
    keys = [k for k in rows[0] if k != "seed"] if rows else []
    return tables.result_table(rows, {"seed": "Seed", **{k: Column(k, "points", digits=2) for k in keys}},
                               title="Headline networks per training seed (AP)",
                               note="Each seed draws its own pretraining, scenes, initialisation and batches; "
                                    "a seed's ticket and controls derive from that seed's dense run.")


def module_share_table(results: dict) -> tables.ResultTable:
    rows = [dict(module=name, share=share) for name, share in results.get("module_shares", {}).items()]
    return tables.result_table(rows, {"module": "Module", "share": Column("Share of all parameters", percent=True)},
                               title="The detector's parameters per module")


# ---- 10. live: prune without retraining ----------------------------------------------------------

def prune_explorer(results: dict, num_images: int = EXPLORER_IMAGES) -> widgets.Explorer:
    """Live: prune the dense run's final weights (global or layer-wise) at a chosen sparsity and
    evaluate them as they are, with no rewinding and no retraining, on the first test images."""
    cfg = experiment.LotteryConfig(**results["config"])
    test = runs.scenes(**experiment.data_kwargs(cfg))[1]
    n = min(num_images, len(test))
    subset = dataclasses.replace(test, images=test.images[:n], boxes=test.boxes[:n], labels=test.labels[:n],
                                 masks=test.masks[:n], areas=test.areas[:n], instance_maps=test.instance_maps[:n])
    levels = sorted(set(EXPLORER_SPARSITIES) | set(cfg.sparsities))
    memo: dict[tuple, tuple] = {}

    def pruned(sparsity: float, scheme: str) -> tuple[float, dict]:
        key = (round(float(sparsity), 6), scheme if sparsity > 0 else "global")  # 0: nothing pruned
        if key not in memo:
            model = runs.make_detector(cfg.seed)
            model.load_state_dict(results["dense"]["state"])
            weights = runs.detector_weights(model)
            fn = lottery.layerwise_magnitude_masks if scheme == "layer-wise" else lottery.global_magnitude_masks
            masks = fn(weights, round(1.0 - float(sparsity), 6))
            lottery.apply_masks(model, masks)
            ap = runs.evaluate(model, subset, 1)["metrics"]["AP"]
            memo[key] = (100 * ap, lottery.layer_sparsity(masks))
        return memo[key]

    def render(sparsity: float, scheme: str) -> go.Figure:
        dense_ap, _ = pruned(0.0, scheme)
        ap, layers = pruned(sparsity, scheme)
        fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65], horizontal_spacing=0.12,
                            subplot_titles=[f"AP on the first {n} test images", "pruned fraction per tensor"])
        names, values, colours = ["dense", "pruned,<br>not retrained"], [dense_ap, ap], [DENSE, "#E15759"]
        ticket = experiment.main_ticket(results, sparsity) if scheme == "global" else next(
            (t for t in results["tickets"].get("layerwise", []) if abs(t["keep"] - (1 - sparsity)) < 1e-6), None)
        if ticket is not None:  # the retrained ticket at this sparsity, when the chapter trained one
            names, values = names + [f"ticket: rewound,<br>retrained ({len(test)} img.)"], values + [
                100 * ticket["metrics"]["AP"]]
            colours.append(METHODS["global"][1])
        fig.add_trace(go.Bar(x=names, y=values, marker_color=colours, texttemplate="%{y:.2f}", showlegend=False,
                             hovertemplate="%{x}: AP %{y:.2f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Bar(x=[_short(k) for k in layers], y=list(layers.values()), showlegend=False,
                             marker_color=[MODULE_COLOURS.get(k.split(".")[0], PALETTE[0]) for k in layers],
                             hovertemplate="%{x}: %{y:.1%} pruned<extra></extra>"), row=1, col=2)
        fig.update_yaxes(title_text="AP (points)", row=1, col=1)
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
        fig.update_xaxes(tickangle=0, row=1, col=1)
        fig.update_xaxes(tickangle=-40, row=1, col=2)
        return style(fig, height=460, margin=dict(b=110), title=f"{scheme} pruning at {percent(sparsity)}, no "
                                                                 f"retraining: AP {ap:.2f} vs dense {dense_ap:.2f}")

    default = min(levels, key=lambda s: abs(s - cfg.control_sparsity))
    controls = {"sparsity": widgets.selection_slider("prunable sparsity", [(percent(s), s) for s in levels], default),
                "scheme": widgets.toggle("scheme", ["global", "layer-wise"])}
    return widgets.explorer(controls, render, title="Prune the dense detector and evaluate it without retraining")

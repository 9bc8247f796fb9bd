"""Chapter 08 (ASAP-NMS): the paper's views as plotly figures with static controls, plus a live LUT explorer.

Figures take the results of ``labkit.experiments.asap_nms.run`` and are built from
``labkit.viz.plots``; the explorer comes from ``labkit.viz.widgets``.
"""
from __future__ import annotations

import html
import math
from typing import Any, Sequence

import ipywidgets
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.experiments import asap_nms as experiment
from labkit.viz import plots, widgets
from labkit.viz.plots import PALETTE, bound_trace, compact, rgba, style, subplot_refs

IMPLS = {  # implementation -> (legend label, colour, dash, symbol): greedy blue-greys, ASAP oranges
    "torchvision": ("torchvision (C++)", "#9CA3AF", "dot", "square"),
    "greedy_torch": ("greedy, torch", "#5F7A9A", "dash", "circle"),
    "greedy_numba": ("greedy, numba", "#2C4F75", None, "circle"),
    "asap_numba": ("ASAP, numba", "#F28E2B", None, "diamond"),
    "asap_torch": ("ASAP, torch", "#B8560F", "dash", "diamond"),
}
GREEDY, ASAP = "#E15759", "#4E79A7"  # keep-diff and detector colours: greedy red, ASAP blue


def fitted_slope(sizes: Sequence[float], latencies: Sequence[float]) -> float:
    """Slope of log latency against log N (``numpy.polyfit``): 1 is linear, 2 quadratic."""
    sizes, latencies = np.asarray(sizes, float), np.asarray(latencies, float)
    if len(sizes) < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(latencies), 1)[0])


def _latency_rows(results: dict) -> dict[str, list[dict]]:
    rows = {}
    for impl in [i for i in IMPLS if any(r["impl"] == i for r in results["latency"])]:
        rows[impl] = sorted((r for r in results["latency"] if r["impl"] == impl), key=lambda r: r["N"])
    return rows


# ---- 1. latency -------------------------------------------------------------------------------------

def plot_latency(results: dict) -> go.Figure:
    """Median latency vs N (log–log, ± IQR/2 bars), fitted slopes in the legend. Speed-ups are drawn
    only between implementations of the same level (``plot_speedups``)."""
    fig = go.Figure()
    for impl, rs in _latency_rows(results).items():
        label, colour, dash, symbol = IMPLS[impl]
        slope = fitted_slope([r["N"] for r in rs], [r["median_s"] for r in rs])
        trace = plots.errorbar_trace([r["N"] for r in rs], [1e3 * r["median_s"] for r in rs],
                                     [5e2 * r["iqr_s"] for r in rs], name=f"{label} · slope {slope:.2f}",
                                     colour=colour, dash=dash, symbol=symbol, value_format=".4g")
        # errorbar_trace rounds to 4 decimals; sub-millisecond latencies need their own digits
        fig.add_trace(trace.update(y=compact([1e3 * r["median_s"] for r in rs]), legendgroup=impl,
                                   error_y=dict(array=compact([5e2 * r["iqr_s"] for r in rs]))))
    fig.update_xaxes(type="log", title_text="proposals N", tickvals=sorted({r["N"] for r in results["latency"]}))
    fig.update_yaxes(type="log", title_text="median latency (ms)")
    return style(fig, title="NMS latency against the number of proposals N (bars: IQR)", height=480,
                 legend=dict(x=1.02, y=1, xanchor="left", title_text="fitted log–log slope"))


# ---- 2. the LUT neighbourhood -------------------------------------------------------------------------

def shape_label(shapes: np.ndarray, k: int) -> str:
    return f"k={k}: {shapes[k][0]:.0f}×{shapes[k][1]:.0f}"


def _shape_colours(shapes: np.ndarray) -> list[str]:
    """One hue per anchor area (scale), lighter to darker across the aspect ratios of that scale."""
    areas = np.round(np.prod(np.asarray(shapes, float), axis=1), 1)
    scales = sorted(set(areas.tolist()))
    colours = []
    for k, area in enumerate(areas):
        hue = PALETTE[scales.index(area) % len(PALETTE)].lstrip("#")
        same = np.flatnonzero(areas == area)
        mix = 0.0 if len(same) == 1 else -0.45 + 0.75 * int(np.searchsorted(same, k)) / (len(same) - 1)
        rgb = np.array([int(hue[i:i + 2], 16) for i in (0, 2, 4)], float)
        rgb = rgb + (255 - rgb) * -mix if mix < 0 else rgb * (1 - mix)  # < 0 towards white, > 0 towards black
        colours.append("#" + "".join(f"{int(round(v)):02X}" for v in rgb))
    return colours


def _rectangles(centres: np.ndarray, sizes: np.ndarray) -> tuple[list, list]:
    """Outline path (None-separated) of boxes with ``centres`` (n, 2) x/y and ``sizes`` (n, 2) w/h."""
    xs, ys = [], []
    for (cx, cy), (w, h) in zip(np.asarray(centres, float), np.asarray(sizes, float)):
        x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        xs += [x0, x1, x1, x0, x0, None]
        ys += [y0, y0, y1, y1, y0, None]
    return xs, ys


def _neighbourhood(shapes: np.ndarray, stride: int, k: int, offsets: np.ndarray) -> tuple[list[go.Scatter], float]:
    """Traces of anchor k and its neighbours ``offsets`` (m, 3) rows (dy, dx, k'); returns (traces, half-extent).

    The A anchors of one lattice cell share a centre, so each neighbour k' is drawn on a small ring
    around its cell centre (angle by k'); outlines show the same-shape neighbours farthest out.
    """
    shapes, offsets = np.asarray(shapes, float), np.asarray(offsets, int).reshape(-1, 3)
    num_shapes = len(shapes)
    angle = 2 * np.pi * offsets[:, 2] / num_shapes
    # whole pixels as int16: half the bytes of float32, and a lattice figure has thousands of points
    x = np.round(offsets[:, 1] * stride + 0.35 * stride * np.cos(angle)).astype(np.int16)
    y = np.round(offsets[:, 0] * stride + 0.35 * stride * np.sin(angle)).astype(np.int16)
    radius = int(np.abs(offsets[:, :2]).max(initial=0))
    extent = max((radius + 1) * stride, float(shapes[k].max()) / 2 + stride)
    pixels_per_cell = 450 * stride / (2 * extent)  # the plot area is about 450 px high
    colours = _shape_colours(shapes)
    centres = go.Scatter(
        x=x, y=y, mode="markers", name="neighbour anchors (colour: shape k')",
        marker=dict(color=compact(offsets[:, 2]), coloraxis="coloraxis", line=dict(width=0),
                    size=round(float(np.clip(0.2 * pixels_per_cell, 2.5, 8)), 1)),
        hovertemplate="cell ≈ (%{x}, %{y}) px, drawn on a ring by k'<br>k'=%{marker.color}<extra></extra>")
    same = offsets[(offsets[:, 2] == k) & ((offsets[:, 0] == 0) | (offsets[:, 1] == 0))]
    far = [same[np.argmax(key)] for key in (same[:, 1], -same[:, 1], same[:, 0], -same[:, 0])] if len(same) else []
    far = np.unique(np.array(far, int).reshape(-1, 3), axis=0)
    ox, oy = _rectangles(far[:, [1, 0]] * stride, np.repeat(shapes[k][None], len(far), 0))
    outlines = go.Scatter(x=ox, y=oy, mode="lines", name=f"farthest neighbours of shape {k}",
                          line=dict(color=rgba(colours[k], 0.7), width=1.5, dash="dot"), hoverinfo="skip")
    bx, by = _rectangles([[0.0, 0.0]], shapes[k][None])
    anchor = go.Scatter(x=bx, y=by, mode="lines", name=f"anchor {shape_label(shapes, k)}",
                        line=dict(color="#222222", width=3), hoverinfo="skip")
    return [outlines, centres, anchor], extent


def _lut_layout(fig: go.Figure, stride: int, shapes: np.ndarray) -> go.Figure:
    cells = dict(minor=dict(tick0=stride / 2, dtick=stride, showgrid=True, gridcolor="#F3F4F6"), showgrid=False,
                 zeroline=False, constrain="domain")  # faint lines between lattice cells
    fig.update_xaxes(title_text="Δx · stride (px)", **cells)
    fig.update_yaxes(title_text="Δy · stride (px)", scaleanchor="x", scaleratio=1, **cells)
    colours, ticks = _shape_colours(shapes), list(range(len(shapes)))
    scale = [[stop, colours[i]] for i in ticks for stop in (i / len(ticks), (i + 1) / len(ticks))]
    coloraxis = dict(colorscale=scale, cmin=-0.5, cmax=len(ticks) - 0.5,  # one colour bar for every step
                     colorbar=dict(title=dict(text="k'", side="right"), tickvals=ticks, thickness=14, len=0.9,
                                   ticktext=[shape_label(shapes, i) for i in ticks]))
    return style(fig, height=640, legend=dict(orientation="h", x=0, y=-0.1, yanchor="top"), coloraxis=coloraxis,
                 margin=dict(t=90, b=150))


def _lut_title(k: int, shapes: np.ndarray, cutoff: float, size: int, mean: float | None = None) -> str:
    mean_text = f" · mean over shapes {mean:.1f}" if mean is not None else ""
    return (f"LUT neighbourhood of {shape_label(shapes, k)} at θ_a = {cutoff:g}: "
            f"|N(k)| = {size} neighbours{mean_text}")


def plot_lut(results: dict, shapes_shown: Sequence[int] | None = None) -> go.Figure:
    """Anchor k and its LUT neighbours at their lattice offsets, coloured by k'; one slider over
    (shape k, cutoff θ_a) steps, k-major, the neighbourhood size in the title."""
    lut = results["lut_neighbourhoods"]
    shapes, stride, cutoffs = np.asarray(lut["shapes"], float), int(lut["stride"]), list(lut["cutoffs"])
    chosen = list(range(len(shapes))) if shapes_shown is None else list(shapes_shown)
    steps, updates = [], []
    for k in chosen:
        for c, cutoff in enumerate(cutoffs):
            offsets = np.asarray(lut["offsets"][c][k]).reshape(-1, 3)
            traces, extent = _neighbourhood(shapes, stride, k, offsets)
            mean = float(np.mean([len(o) for o in lut["offsets"][c]]))
            steps.append((f"k={k} · θ={cutoff:g}", traces))
            updates.append({"title.text": _lut_title(k, shapes, cutoff, len(offsets), mean),
                            "xaxis.range": [-extent, extent], "yaxis.range": [extent, -extent]})
    default = cutoffs.index(results["config"].get("cutoff")) if results["config"].get("cutoff") in cutoffs else 0
    active = (chosen.index(4) if 4 in chosen else 0) * len(cutoffs) + default
    fig = plots.figure_with_slider(steps, prefix="anchor shape · cutoff: ", layout_updates=updates, active=active)
    fig.layout.sliders[0].update(font=dict(size=9), pad=dict(t=70))
    return _lut_layout(fig, stride, shapes)


def lut_explorer(anchor_config: Any = None) -> widgets.Explorer:
    """Live: pick an anchor shape and θ_a; builds an ``AnchorLUT`` (milliseconds) and draws N(k)."""
    from labkit import nms
    from labkit.methods.asap_nms import AnchorLUT

    config = anchor_config if anchor_config is not None else nms.PROPOSAL_ANCHORS
    shapes = config.shapes().numpy()
    controls = {"k": widgets.dropdown("anchor shape", [(shape_label(shapes, k), k) for k in range(len(shapes))],
                                      min(4, len(shapes) - 1)),
                "cutoff": ipywidgets.FloatSlider(description="θ_a", value=0.2, min=0.0, max=0.6, step=0.05,
                                                      continuous_update=False, style=widgets.STYLE)}

    def render(k: int, cutoff: float) -> go.Figure:
        lut = AnchorLUT(config, anchor_iou_cutoff=float(cutoff))
        offsets = lut.offsets[k, :lut.lengths[k]]
        traces, extent = _neighbourhood(shapes, config.stride, k, offsets)
        fig = go.Figure(traces)
        fig.update_xaxes(range=[-extent, extent])
        fig.update_yaxes(range=[extent, -extent])
        return _lut_layout(fig, config.stride, shapes).update_layout(
            title_text=_lut_title(k, shapes, cutoff, int(lut.lengths[k]), lut.size))

    return widgets.explorer(controls, render, title="ASAP-NMS lookup table: one anchor's neighbourhood")


# ---- 3. where greedy spends its time -------------------------------------------------------------------

def plot_iou_histogram(results: dict, bins: int = 50) -> go.Figure:
    """Share of greedy's IoU evaluations per IoU bin (log y), the exact-zero spike apart, threshold t marked."""
    profile = results["iou_profile"]
    ious = np.asarray(profile["ious"], float)
    share = 1.0 / max(len(ious), 1)
    counts, edges = np.histogram(ious[ious > 0], bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    nonzero = counts > 0
    fig = go.Figure([
        go.Bar(x=[0.0], y=[max(float((ious == 0).mean()), 1e-12)], width=0.012, name="IoU = 0 exactly",
               marker_color=GREEDY, hovertemplate="IoU = 0: %{y:.2%} of evaluations<extra></extra>"),
        go.Bar(x=compact(centres[nonzero]), y=compact(counts[nonzero] * share), width=1.0 / bins, name="IoU > 0",
               marker=dict(color=PALETTE[0], line=dict(color="white", width=0.5)),
               hovertemplate="IoU %{x:.2f}: %{y:.3%} of evaluations<extra></extra>")])
    t = float(results["config"]["iou_threshold"])
    fig.add_vline(x=t, line=dict(color="#333333", dash="dash", width=1.5), annotation_text=f"t = {t:g}",
                  annotation_position="top right")
    fig.add_annotation(xref="paper", yref="paper", x=0.98, y=0.98, xanchor="right", yanchor="top", showarrow=False,
                       align="right", bgcolor="rgba(255,255,255,0.85)",
                       text=f"{profile['fraction_zero']:.1%} of the {profile['num_evaluated']:,} IoUs greedy<br>"
                            f"evaluates at N = {profile['N']:,} are exactly 0<br>(histogram of {len(ious):,} sampled)")
    fig.update_xaxes(title_text="IoU of a kept proposal with a later one", range=[-0.02, 1.0])
    fig.update_yaxes(type="log", title_text="share of IoU evaluations")
    return style(fig, title="Greedy NMS: most IoU evaluations compare boxes that do not overlap", height=440,
                 bargap=0, showlegend=True, legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))


PHASES = {"sort": ("sort", PALETTE[3]), "gather": ("gather candidates", PALETTE[1]),
          "iou": ("IoU and test", PALETTE[0]), "bookkeeping": ("bookkeeping", PALETTE[4])}


def plot_phase_profile(results: dict) -> go.Figure:
    """Compiled greedy and compiled ASAP on one proposal set: median time per phase (sort, gather, IoU,
    bookkeeping) as stacked horizontal bars, the whole call's median and the speed-up in the labels."""
    profile = results["phase_profile"]
    methods = {"greedy": "greedy, numba", "asap": "ASAP, numba"}
    labels = [f"{label}<br>{1e3 * profile[m]['total']:.2f} ms a call" for m, label in methods.items()]
    fig = go.Figure([go.Bar(y=labels, x=compact([1e3 * max(profile[m][phase], 0.0) for m in methods], 5),
                            orientation="h", name=name, marker_color=colour,
                            customdata=[f"{profile[m][phase] / profile[m]['total']:.0%}" for m in methods],
                            hovertemplate=f"{name}: %{{x:.3f}} ms (%{{customdata}} of the call)<extra></extra>")
                     for phase, (name, colour) in PHASES.items()])
    fig.update_xaxes(title_text="median thread time (ms)")
    fig.update_yaxes(autorange="reversed", showgrid=False, ticks="")
    speedup = profile["greedy"]["total"] / profile["asap"]["total"]
    return style(fig, title=f"Where compiled NMS spends its time at N = {profile['N']:,} "
                            f"(ASAP {speedup:.1f}× faster in this run)", height=300, barmode="stack",
                 legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right", traceorder="normal"),
                 margin=dict(l=150, t=90, b=50))


# ---- 4. sweeps -------------------------------------------------------------------------------------------

def _jaccard_range(rows: list[dict]) -> list[float]:
    """From a little below the lowest Jaccard (and at most 0.98, so the 0.99 target shows) to just above 1."""
    low = min([r["jaccard"] for r in rows] + [0.98])
    return [low - 0.1 * (1.0 - low), 1.0 + 0.1 * (1.0 - low)]


def _sweep_traces(rows: list[dict], key: str, refs_ratio: dict, refs_jaccard: dict, colour: str,
                  hover: list[str] | None = None) -> list[go.Scatter]:
    x = [r[key] for r in rows]
    extra = dict(customdata=hover, hovertemplate="%{customdata}<br>%{y:.4g}<extra></extra>") if hover else {}
    ratio = plots.errorbar_trace(x, [r["iou_ratio"] for r in rows], None, name="ASAP / greedy IoU evaluations",
                                 colour=colour, value_format=".4f", refs=refs_ratio).update(showlegend=False, **extra)
    jac = plots.errorbar_trace(x, [r["jaccard"] for r in rows], None, name="keep-set Jaccard", colour=GREEDY,
                               value_format=".4f", refs=refs_jaccard).update(showlegend=False, **extra)
    return [ratio, jac]


def plot_cutoff_sweep(results: dict) -> go.Figure:
    """IoU-evaluation ratio (log y) and keep-set Jaccard against θ_a; LUT size in the hover."""
    rows = sorted(results["cutoff_sweep"], key=lambda r: r["cutoff"])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["IoU evaluations, ASAP / greedy", "keep-set Jaccard with greedy"])
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    hover = [f"θ_a = {r['cutoff']:g}, mean |N| = {r['lut_size']:.1f}" for r in rows]
    fig.add_traces(_sweep_traces(rows, "cutoff", left, right, PALETTE[1], hover))
    x = [rows[0]["cutoff"], rows[-1]["cutoff"]] if rows else [0, 1]
    fig.add_trace(bound_trace(x, [0.1, 0.1], name="target ≤ 1/10 (E1)", refs=left, showlegend=False))
    fig.add_trace(bound_trace(x, [0.99, 0.99], name="target ≥ 0.99 (E2)", refs=right, showlegend=False))
    fig.update_xaxes(title_text="anchor IoU cutoff θ_a")
    fig.update_yaxes(type="log", title_text="ratio (log)", row=1, col=1)
    fig.update_yaxes(title_text="Jaccard", row=1, col=2, range=_jaccard_range(rows))
    return style(fig, title=f"Cutoff θ_a: fewer IoU evaluations, same keep set ({_sweep_setting(rows)}; "
                            f"dashed: targets)",
                 height=420)


def _sweep_setting(rows: list[dict]) -> str:
    """"N = 6,000, mean of 5 proposal sets", read from the sweep's own rows."""
    sizes = sorted({r["N"] for r in rows if "N" in r})
    scenes = sorted({len(r["jaccards"]) for r in rows if "jaccards" in r})
    text = "N = " + (", ".join(f"{x:,}" for x in sizes) or "?")
    if len(scenes) == 1:
        text += f", mean of {scenes[0]} proposal set{'s' if scenes[0] > 1 else ''}"
    return text


ABLATIONS = (("threshold_sweep", "t", "NMS threshold t"), ("drift_sweep", "delta_std", "regression drift (std)"),
             ("topk_sweep", "top_k", "post-NMS top-k"))


def plot_ablations(results: dict) -> go.Figure:
    """Ratio (top, log) and Jaccard (bottom) against the NMS threshold, regression drift and top-k."""
    fig = make_subplots(rows=2, cols=3, shared_xaxes="columns", vertical_spacing=0.08, horizontal_spacing=0.08,
                        subplot_titles=[title for *_, title in ABLATIONS])
    for col, (key, field, title) in enumerate(ABLATIONS, start=1):
        rows = sorted(results.get(key) or [], key=lambda r: r[field])
        if not rows:
            refs = {k.replace("axis", "ref"): f"{v} domain" for k, v in subplot_refs(fig, 1, col).items()}
            fig.add_annotation(text="not run", showarrow=False, font=dict(color="#777777"), x=0.5, y=0.5, **refs)
            continue
        fig.add_traces(_sweep_traces(rows, field, subplot_refs(fig, 1, col), subplot_refs(fig, 2, col),
                                     PALETTE[1]))
        fig.update_xaxes(title_text=title, row=2, col=col)
    fig.update_yaxes(type="log", row=1)
    fig.update_yaxes(title_text="IoU evals ASAP/greedy", row=1, col=1)
    fig.update_yaxes(title_text="keep-set Jaccard", row=2, col=1)
    fig.update_yaxes(range=_jaccard_range(sum((results.get(key) or [] for key, *_ in ABLATIONS), [])), row=2)
    rows = sum((results.get(key) or [] for key, *_ in ABLATIONS), [])
    return style(fig, title=f"Ablations at θ_a = {results['config'].get('cutoff', 0.2):g} ({_sweep_setting(rows)})",
                 height=520, showlegend=False)


# ---- 5. keep-set diff ----------------------------------------------------------------------------------

def plot_keep_diff(results: dict) -> go.Figure:
    """One scene's proposals: kept by both (light), only by greedy (red), only by ASAP (blue)."""
    diff = results["keep_diff"]
    boxes, size = np.asarray(diff["boxes"], float).reshape(-1, 4), float(diff["image_size"])
    fx, fy = _rectangles([[size / 2, size / 2]], [[size, size]])
    fig = go.Figure(go.Scatter(x=fx, y=fy, mode="lines", name="image frame", line=dict(color="#222222", width=2),
                               hoverinfo="skip"))
    for key, label, colour, width in (("both", "kept by both", rgba("#9CA3AF", 0.55), 1),
                                      ("greedy_only", "kept by greedy only", GREEDY, 2.5),
                                      ("asap_only", "kept by ASAP only", ASAP, 2.5)):
        chosen = boxes[np.asarray(diff[key], int)]
        x, y = _rectangles((chosen[:, :2] + chosen[:, 2:]) / 2, chosen[:, 2:] - chosen[:, :2])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{label} ({len(chosen)})", legendgroup=key,
                                 line=dict(color=colour, width=width), hoverinfo="skip"))
    pad = 0.05 * size
    fig.update_xaxes(range=[-pad, size + pad], title_text="x (px)", constrain="domain", showgrid=False)
    fig.update_yaxes(range=[size + pad, -pad], title_text="y (px)", scaleanchor="x", scaleratio=1,
                     constrain="domain", showgrid=False)
    same = not diff["greedy_only"] and not diff["asap_only"]
    return style(fig, title="Keep sets of one scene" + (": identical" if same else ": boxes kept by one method only"),
                 height=620, legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 6. speed-up at the same implementation level --------------------------------------------------

LEVELS = {"compiled (numba)": ("#F28E2B", "diamond"), "vectorized (torch)": ("#B8560F", "circle"),
          "pure Python": ("#7F3C8D", "square")}


def _interval_trace(x, rows: list[dict], *, name: str, colour: str, symbol: str, refs=None,
                    unit: str = "") -> go.Scatter:
    """Points with asymmetric error bars from each row's ``value``/``low``/``high`` (a 95 % interval)."""
    value = np.array([r["value"] for r in rows], float)
    low, high = np.array([r["low"] for r in rows], float), np.array([r["high"] for r in rows], float)
    # an infinite interval (one seed) draws no bar: the hover and an open marker say so
    bounded = np.isfinite(low) & np.isfinite(high)
    interval = [f"[{lo:.3g}, {hi:.3g}]" if ok else "no interval" for lo, hi, ok in zip(low, high, bounded)]
    return go.Scatter(x=list(x), y=compact(value), mode="markers+lines", name=name, customdata=interval,
                      line=dict(color=colour, width=2),
                      marker=dict(color=colour, size=10, symbol=[symbol if ok else f"{symbol}-open" for ok in bounded]),
                      error_y=dict(type="data", symmetric=False, array=compact(np.where(bounded, high - value, 0)),
                                   arrayminus=compact(np.where(bounded, value - low, 0)), color=colour, width=5),
                      hovertemplate=f"{html.escape(name)}<br>%{{x}}: %{{y:.3g}}{unit} %{{customdata}}<extra></extra>",
                      **dict(refs or {}))


SPEC_SPEEDUPS = {"compiled (numba)": [(6000, experiment.PAPER_SPEEDUP, "paper ≈ 11×")],
                 "vectorized (torch)": [(6000, 1.5, "spec ≥ 1.5×"), (12000, 2.5, "spec ≥ 2.5×")],
                 "pure Python": [(6000, 5.0, "spec ≥ 5×")]}


def plot_speedups(results: dict) -> go.Figure:
    """Greedy / ASAP median time at the same implementation level against N (log–log), with 95 %
    bootstrap intervals over repeated timings; the paper's and the spec's targets as short dashes."""
    rows = experiment.speedup_rows(results)
    fig = go.Figure()
    for level, (colour, symbol) in LEVELS.items():
        mine = [dict(r, value=r["speedup"]) for r in rows if r["level"] == level]
        if not mine:
            continue
        fig.add_trace(_interval_trace([r["N"] for r in mine], mine, name=level, colour=colour, symbol=symbol,
                                      unit="×").update(legendgroup=level))
        for n, target, label in SPEC_SPEEDUPS[level]:
            if n > max(r["N"] for r in rows):
                continue  # not timed at this budget
            fig.add_trace(go.Scatter(x=[n / 1.25, n * 1.25], y=[target, target], mode="lines", legendgroup=level,
                                     name=f"{level}: {label}", showlegend=False,
                                     line=dict(color=colour, dash="dash", width=2),
                                     hovertemplate=f"{html.escape(label)} at N = {n:,}<extra></extra>"))
    fig.add_trace(bound_trace([min((r["N"] for r in rows), default=1), max((r["N"] for r in rows), default=1)],
                              [1.0, 1.0], name="no speed-up (1×)", showlegend=False))
    fig.update_xaxes(type="log", title_text="proposals N", tickvals=sorted({r["N"] for r in rows}))
    fig.update_yaxes(type="log", title_text="speed-up of ASAP over greedy (×)")
    return style(fig, title="Speed-up at the same implementation level (bars: 95 % interval; dashes: targets)",
                 height=460, legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 7. other anchor settings: anchor size and drift ------------------------------------------------

BASELINE_LABELS = {"numba": ("over greedy, numba", "#2C4F75", None),
                   "simd": ("over greedy, SIMD numba", "#5F7A9A", "dash"),
                   "torchvision": ("over torchvision (C++)", "#9CA3AF", "dot")}


def _spread_trace(x, per_seed: list[list[float]], *, name: str, colour: str, dash=None, refs=None,
                  show: bool = True) -> go.Scatter:
    """Mean over proposal sets with min–max bars; ``per_seed[i]`` holds setting ``i``'s values."""
    values = [np.asarray(v, float) for v in per_seed]
    mean = np.array([v.mean() for v in values])
    return go.Scatter(x=list(x), y=compact(mean), mode="lines+markers", name=name, legendgroup=name, showlegend=show,
                      line=dict(color=colour, dash=dash, width=2.5), marker=dict(color=colour, size=8),
                      error_y=dict(type="data", symmetric=False, array=compact([v.max() for v in values] - mean),
                                   arrayminus=compact(mean - [v.min() for v in values]), color=colour, width=4),
                      hovertemplate=f"{html.escape(name)}<br>%{{x}}: %{{y:.4g}}<extra></extra>", **dict(refs or {}))


def plot_anchor_settings(results: dict) -> go.Figure:
    """Compiled ASAP's speed-up (top, log) and keep-set Jaccard (bottom) on an 800 × 1333 px image at
    stride 16, against the anchor side in strides (left) and the proposals' drift (right); mean over
    proposal sets, bars min–max, mean LUT size in the hover."""
    settings = results.get("settings")
    title = "ASAP on other anchor settings (800 × 1333 px, stride 16, N = 6,000)"
    if not settings:
        return plots.plot_message("the anchor-setting sweeps run at the full budget", title=title)
    fig = make_subplots(rows=2, cols=2, shared_xaxes="columns", vertical_spacing=0.1, horizontal_spacing=0.1,
                        subplot_titles=["anchor side / stride (one scale, 3 ratios)",
                                        "box-delta std (the paper's 128–512 px anchors)"])
    for col, (key, field) in enumerate((("anchor_side", "side_over_stride"), ("drift", "delta_std")), start=1):
        rows = settings[key]
        x = [r[field] for r in rows]
        for name, (label, colour, dash) in BASELINE_LABELS.items():
            if all(name in r["speedup"] for r in rows):
                fig.add_trace(_spread_trace(x, [r["speedup"][name] for r in rows], name=label, colour=colour,
                                            dash=dash, refs=subplot_refs(fig, 1, col), show=col == 1))
        fig.add_trace(_spread_trace(x, [r["jaccard"] for r in rows], name="keep-set Jaccard", colour=GREEDY,
                                    refs=subplot_refs(fig, 2, col), show=col == 1).update(
            customdata=[f"mean |N| = {r['lut_size']:.0f}" for r in rows],
            hovertemplate="Jaccard %{y:.4f} at %{x}<br>%{customdata}<extra></extra>"))
        fig.add_trace(bound_trace([min(x), max(x)], [0.99, 0.99], name="Jaccard 0.99", refs=subplot_refs(fig, 2, col),
                                  showlegend=False))
    fig.update_xaxes(type="log", dtick=math.log10(2), row=2, col=1, title_text="anchor side (strides)")
    fig.update_xaxes(type="log", dtick=math.log10(2), row=1, col=1)
    fig.update_xaxes(title_text="box-delta std (drift)", row=2, col=2)
    fig.update_yaxes(type="log", row=1, title_text="speed-up (×)")
    fig.update_yaxes(title_text="keep-set Jaccard", row=2)
    return style(fig, title=title, height=620, legend=dict(orientation="h", y=-0.12, x=0, yanchor="top"),
                 margin=dict(b=120))


# ---- 8. detector AP ------------------------------------------------------------------------------------

def plot_detector_ap(results: dict) -> go.Figure:
    """Left: AP of chapter 05's detector (first seed) against θ_a with ASAP in its RPN, greedy as lines,
    per post-NMS top-k. Right: AP(ASAP) − AP(greedy) at the chapter's θ_a per top-k, mean over seeds
    with its 95 % bootstrap interval (seeds × test images), against the parity margin."""
    detector = results.get("detector")
    title = "Chapter 05's detector: greedy vs ASAP-NMS inside the RPN"
    if not detector:
        return plots.plot_message("the detector comparison is not run at this budget", title=title)
    deltas, source = detector["deltas"], detector["source"]
    first = detector["rows"][0].get("seed")
    rows = [r for r in detector["rows"] if r.get("seed") == first]  # the θ_a sweep runs on the first seed
    seeds = len(source.get("seeds", [first]))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.14,
                        subplot_titles=[f"AP against θ_a, seed {first} (lines: greedy)",
                                        f"AP(ASAP) − AP(greedy) at θ_a = {results['config']['cutoff']:g}"])
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    cutoffs = sorted({r["cutoff"] for r in rows if r["nms"] == "asap"})
    span = [0.0, max(cutoffs) + 0.1]
    for (top_k, colour) in zip(sorted({r["top_k"] for r in rows}), (ASAP, "#59A14F", "#B07AA1")):
        asap = sorted((r for r in rows if r["top_k"] == top_k and r["nms"] == "asap"), key=lambda r: r["cutoff"])
        greedy = next(r for r in rows if r["top_k"] == top_k and r["nms"] == "greedy")
        fig.add_trace(go.Scatter(x=[r["cutoff"] for r in asap], y=compact([r["AP"] for r in asap]),
                                 mode="lines+markers", name=f"ASAP, top-{top_k:,}", line=dict(color=colour, width=2.5),
                                 marker=dict(size=9, color=colour),
                                 customdata=compact([r["rpn_jaccard"] for r in asap]),
                                 hovertemplate=f"top-{top_k:,}, θ_a = %{{x}}: AP %{{y:.3f}}<br>RPN keep-set Jaccard "
                                               "%{customdata:.4f}<extra></extra>", **left))
        fig.add_trace(bound_trace(span, [greedy["AP"]] * 2, name=f"greedy, top-{top_k:,}", colour=colour, refs=left))
    top_ks = [d["top_k"] for d in deltas]
    fig.add_trace(_interval_trace(top_ks, deltas, name="ASAP − greedy", colour=ASAP, symbol="diamond", refs=right,
                                  unit=" AP").update(mode="markers"))
    fig.add_trace(bound_trace(top_ks, [experiment.AP_MARGIN] * len(deltas), name=f"margin {experiment.AP_MARGIN:g} AP",
                              refs=right))
    fig.update_xaxes(title_text="anchor IoU cutoff θ_a", range=span, row=1, col=1)
    fig.update_xaxes(title_text="post-NMS top-k", type="category", row=1, col=2)
    fig.update_yaxes(title_text="box AP (points)", row=1, col=1)
    fig.update_yaxes(title_text="Δ AP (points)", row=1, col=2)
    return style(fig, title=f"{title} ({source['budget']} budget: {seeds} seed{'s' if seeds > 1 else ''} × "
                            f"{source['steps']:,} steps; {source['test_images']:,} test images)", height=480,
                 legend=dict(orientation="h", y=-0.25, x=0, yanchor="top"), margin=dict(b=130))

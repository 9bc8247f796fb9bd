"""Chapter 02 (knowledge evolution): the paper's views as plotly figures with static controls, the
chapter's result tables (``labkit.viz.tables``), and a live explorer that retrains through the
chapter's cache.

Figures take the results of ``labkit.experiments.knowledge_evolution.run`` and are built from
``labkit.viz.plots``; the explorer comes from ``labkit.viz.widgets``. KE is orange (the method), its
controls blues and greys; a slim (fit-hypothesis) curve is the dense curve's colour, dashed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.cache import cached_runs
from labkit.experiments import knowledge_evolution as experiment
from labkit.experiments.knowledge_evolution_runs import train_generations
from labkit.methods.knowledge_evolution import slim_width
from labkit.models import BACKBONES
from labkit.viz import plots, widgets
from labkit.viz.plots import COLOURS, band_traces, bound_trace, compact, style, subplot_refs
from labkit.viz.tables import Column, ResultTable, mean_std, result_table

MODE_COLOURS = {"ke": COLOURS["svmax"], "single": COLOURS["unrolled"], "restart_only": COLOURS["baseline"],
                "full_reset": "#9CA3AF"}
MODE_LABELS = {"ke": "KE", "single": "one run of G·e epochs", "restart_only": "restart only",
               "full_reset": "full reset"}
BACKBONE_LABELS = {"resnet": "mini-ResNet", "plain": "plain 3-conv net"}
FIT, RESET = COLOURS["svmax"], "#D1D5DB"  # mask cells: fit hypothesis orange, reset light grey
SPLIT_RATES = tuple(round(0.25 + 0.05 * i, 2) for i in range(11))  # the explorer's s_r slider


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n > 1)}"


def _accuracy_traces(runs: list[dict], key: str, name: str, colour: str, dash: str | None = None) -> list:
    """Mean (± std band when several seeds) of ``run[key]`` per generation, as lines with markers."""
    values = np.stack([np.asarray(r[key], dtype=float) for r in runs])  # (seeds, G)
    x = np.arange(1, values.shape[1] + 1)
    traces = band_traces(x, values.mean(0), values.std(0), name=name, colour=colour, dash=dash)
    traces[0].update(mode="lines")  # under 20 points plotly would mark the band's corners
    traces[1].update(mode="lines+markers", marker=dict(size=7))
    return traces if len(runs) > 1 else traces[1:]  # one seed: the band would have no area


def _chance_and_n1(run: dict, n1: float | None = None) -> list:
    G = len(run["dense"])
    traces = [bound_trace([1, G], [run["chance"]] * 2, name=f"chance ({run['chance']:.2f})", dash="dashdot")]
    if n1 is not None:
        traces.append(bound_trace([1, G], [n1] * 2, name=f"N1 dense ({n1:.3f})", dash="dot",
                                  colour=COLOURS["baseline"]))
    return traces


def _whole_epochs(run: dict) -> bool:
    return float(run["epochs_per_generation"]).is_integer()


def _generation_length(run: dict) -> str:
    """What one generation trains, and where the single run is read, for an axis title."""
    e, steps = run["epochs_per_generation"], run.get("steps_per_generation")
    if _whole_epochs(run):
        return f"{e:g} epoch{'s' * (e > 1)} each; the single run: epoch g·{e:g}"
    return f"{steps} SGD steps ≈ {e:.3g} epochs each; the single run: step g·{steps}"


def _main_traces(runs: list[dict]) -> list:
    by = {mode: [r for r in runs if r["mode"] == mode] for mode in experiment.CONTROLS}
    traces = []
    if by["single"]:
        run = by["single"][0]
        label = f"one run, checkpoint at epoch g·{run['epochs_per_generation']:g}" if _whole_epochs(run) \
            else f"one run, checkpoint every {run['steps_per_generation']} steps"
        traces += _accuracy_traces(by["single"], "dense", label, MODE_COLOURS["single"])
    if by["restart_only"]:
        traces += _accuracy_traces(by["restart_only"], "dense", "restart only dense", MODE_COLOURS["restart_only"])
        traces += _accuracy_traces(by["restart_only"], "slim", "restart only slim", MODE_COLOURS["restart_only"],
                                   dash="dash")
    if by["full_reset"]:
        traces += _accuracy_traces(by["full_reset"], "dense", "full reset dense", MODE_COLOURS["full_reset"],
                                   dash="dot")
    if by["ke"]:  # drawn last, so on top of the controls; listed first in the legend
        ke_traces = _accuracy_traces(by["ke"], "dense", "KE dense", MODE_COLOURS["ke"])
        ke_traces += _accuracy_traces(by["ke"], "slim", "KE slim", MODE_COLOURS["ke"], dash="dash")
        for rank, trace in enumerate(ke_traces):
            trace.legendrank = 900 + rank
        traces += ke_traces
    return traces + _chance_and_n1(runs[0])


def _ke_vs_n1_traces(runs: list[dict]) -> list:
    """One KE run (dense, slim when it has one) against its own N1 and, if present, a single run."""
    ke_run = next(r for r in runs if r["mode"] == "ke")
    traces = _accuracy_traces([ke_run], "dense", "KE dense", MODE_COLOURS["ke"])
    if not np.isnan(np.asarray(ke_run["slim"], dtype=float)).all():
        traces += _accuracy_traces([ke_run], "slim", "KE slim", MODE_COLOURS["ke"], dash="dash")
    for single in (r for r in runs if r["mode"] == "single"):
        traces += _accuracy_traces([single], "dense", "one run of G·e epochs", MODE_COLOURS["single"])
    return traces + _chance_and_n1(ke_run, float(ke_run["dense"][0]))


def _describe(run: dict) -> str:
    backbone = BACKBONE_LABELS.get(run["backbone"], run["backbone"])
    return (f"{run['dataset']}, {run['samples_per_class']}/class, {backbone}, "
            f"{run['split_kind'].upper()} s_r {run['split_rate']:g}")


def plot_generations(results: dict) -> go.Figure:
    """Test accuracy after each generation: KE dense and slim, the three controls, chance.

    With ablation rows or glyph runs (full budget), a dropdown also offers each of them as one KE
    run against its own N1.
    """
    main = results["main"]
    groups = {f"main: {_describe(main[0])} ({_seeds(len({r['seed'] for r in main}))})": _main_traces(main)}
    firsts = [main[0]]
    for label, run in zip(results.get("ablation_labels", []), results.get("ablation", [])):
        groups[f"ablation: {label}"] = _ke_vs_n1_traces([run])
        firsts.append(run)
    for n in sorted({r["samples_per_class"] for r in results.get("sizes", [])}):
        runs = [r for r in results["sizes"] if r["samples_per_class"] == n]
        groups[f"data size: {n}/class, KE and one run of the same steps ({_seeds(len({r['seed'] for r in runs}))})"] \
            = _main_traces(runs)
        firsts.append(runs[0])
    if results.get("glyphs"):
        glyphs = results["glyphs"]
        groups[f"glyphs: {glyphs[0]['num_classes']} classes, {glyphs[0]['samples_per_class']}/class"] = \
            _ke_vs_n1_traces(glyphs)
        firsts.append(glyphs[0])
    axis_titles = [{"xaxis.title.text": f"generation g ({_generation_length(run)})"} for run in firsts]
    if len(groups) > 1:
        fig = plots.figure_with_dropdown(groups, y=1.04, layout_updates=axis_titles)
    else:
        fig = go.Figure(next(iter(groups.values()))).update_layout(axis_titles[0])
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(title_text="test accuracy", range=[0, 1.02])
    return style(fig, title="Test accuracy after each generation", height=520,
                 margin=dict(t=110 if len(groups) > 1 else 70), legend=dict(orientation="h", y=-0.18, x=0))


def plot_train_test(results: dict) -> go.Figure:
    """Train (dotted) against test (solid) accuracy per generation for KE and restart-only."""
    traces = []
    for mode in ("restart_only", "ke"):  # KE on top
        runs = [r for r in results["main"] if r["mode"] == mode]
        if runs:
            traces += _accuracy_traces(runs, "train", f"{MODE_LABELS[mode]} train", MODE_COLOURS[mode], dash="dot")
            traces += _accuracy_traces(runs, "dense", f"{MODE_LABELS[mode]} test", MODE_COLOURS[mode])
    fig = go.Figure(traces + _chance_and_n1(results["main"][0]))
    fig.update_xaxes(title_text="generation g", dtick=1)
    fig.update_yaxes(title_text="accuracy (dense network)", range=[0, 1.02])
    return style(fig, title="Train against test accuracy: the gap KE is meant to close", height=460,
                 legend=dict(orientation="h", y=-0.2, x=0))


# ---- slim cost ----------------------------------------------------------------------------------

def ratio_text(ratio: float) -> str:
    """How a slim/dense ratio is written on its bar: three significant digits and ×."""
    return f"{ratio:.3g}×"


def plot_slim_cost(results: dict) -> go.Figure:
    """Parameters and MACs of the dense net and the slim net at each s_r, the ratio on each slim bar
    and s_r² × dense marked; a dropdown over backbones."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["parameters", "multiply–accumulates (MACs)"],
                        horizontal_spacing=0.12)
    groups = {}
    for backbone in dict.fromkeys(row["backbone"] for row in results["costs"]):
        rows = [row for row in results["costs"] if row["backbone"] == backbone]
        categories = ["dense"] + [f"slim s_r {row['split_rate']:g}" for row in rows]
        traces = []
        for col, (key, unit) in enumerate((("params", "parameters"), ("macs", "MACs")), start=1):
            refs = subplot_refs(fig, 1, col)
            dense = rows[0][f"dense_{key}"]
            values = [dense] + [row[f"slim_{key}"] for row in rows]
            conv = [row[f"conv_{key}_ratio"] for row in rows]
            traces.append(go.Bar(x=categories, y=values, name=unit, showlegend=False, cliponaxis=False,
                                 marker=dict(color=[COLOURS["baseline"]] + [FIT] * len(rows)),
                                 text=[""] + [ratio_text(v / dense) for v in values[1:]], textposition="outside",
                                 customdata=[1.0] + conv,
                                 hovertemplate=f"%{{x}}: %{{y:,}} {unit}<br>conv layers: %{{customdata:.3f}}"
                                               f" of dense<extra></extra>", **refs))
            traces.append(go.Scatter(x=categories[1:], y=[row["split_rate"] ** 2 * dense for row in rows],
                                     mode="markers", name="s_r² × dense", showlegend=col == 1,
                                     marker=dict(symbol="line-ew", size=46, line=dict(width=3, color="#333333")),
                                     hovertemplate="s_r² × dense: %{y:,.0f}<extra></extra>", **refs))
        groups[f"backbone: {BACKBONE_LABELS.get(backbone, backbone)}"] = traces
    fig = plots.figure_with_dropdown(groups, fig=fig, y=1.1)
    fig.update_yaxes(rangemode="tozero", title_standoff=4)
    fig.update_xaxes(showgrid=False, ticks="")
    fig.update_annotations(yshift=4)
    return style(fig, title="Cost of the dense net and of the slim net (ratio to dense on each bar)", height=480,
                 margin=dict(t=130), bargap=0.35, legend=dict(orientation="h", x=1, xanchor="right", y=1.1,
                                                              yanchor="bottom"))


def plot_slim_tradeoff(results: dict) -> go.Figure:
    """Slim accuracy at the last generation against the slim net's MACs (a fraction of dense), one
    point per split rate, beside the dense net of the same runs (at 1)."""
    rows = experiment.slim_tradeoff(results)
    x = [row["macs_fraction"] for row in rows]
    spread = [row["slim_std"] for row in rows]
    slim = go.Scatter(x=x, y=[row["slim_accuracy"] for row in rows], mode="lines+markers+text", name="slim net",
                      text=[f"s_r {row['split_rate']:g}" for row in rows], textposition="top left",
                      line=dict(color=FIT, width=2.5), marker=dict(size=10),
                      error_y=dict(array=spread, visible=True) if None not in spread else None,
                      customdata=[[row["slim_macs"], row["split_rate"]] for row in rows],
                      hovertemplate="s_r %{customdata[1]}: %{customdata[0]:,} MACs (%{x:.3f} of dense), "
                                    "accuracy %{y:.3f}<extra>slim</extra>")
    dense = go.Scatter(x=[1.0] * len(rows), y=[row["dense_accuracy"] for row in rows], mode="markers",
                       name="dense net of the same run",
                       marker=dict(symbol="diamond", size=10, color=COLOURS["baseline"]),
                       customdata=[row["split_rate"] for row in rows],
                       hovertemplate="dense net of the s_r %{customdata} run: %{y:.3f}<extra></extra>")
    fig = go.Figure([dense, slim])
    fig.update_xaxes(title_text="MACs per image, fraction of the dense net (counted by forward hooks)",
                     range=[0, 1.08])
    fig.update_yaxes(title_text=f"test accuracy after generation {rows[0]['generations']}")
    return style(fig, title=f"Slim cost against slim accuracy ({rows[0]['source']}, "
                            f"{_seeds(rows[0]['num_seeds'])} per point)", height=440,
                 legend=dict(orientation="h", y=-0.2, x=0))


# ---- result tables -------------------------------------------------------------------------------------

ACCURACY = "test accuracy"
GENERATION_COLUMNS = {"ke_dense": "KE dense", "ke_slim": "KE slim", "compute_matched": "one run of G·e epochs",
                      "restart_only": "restart-only dense", "restart_only_slim": "restart-only slim",
                      "full_reset": "full-reset dense"}


def generation_result_table(results: dict) -> ResultTable:
    """Test accuracy after each generation, KE and its controls, mean ± std over seeds."""
    rows = experiment.generation_table(results)
    seeds = len(experiment.runs_of(results, "ke"))
    cells = [{"generation": row["generation"]} | {key: mean_std(row[key], row[f"{key}_std"] if seeds > 1 else None)
                                                   for key in GENERATION_COLUMNS} for row in rows]
    columns = {"generation": "generation g"} | {k: Column(header, ACCURACY) for k, header in GENERATION_COLUMNS.items()}
    spread = f"Mean ± std over {seeds} seeds" if seeds > 1 else "One seed, so no spread"
    return result_table(cells, columns, title="Test accuracy after each generation",
                        note=f"{spread}; the single run is read where each generation ends.")


def size_result_table(results: dict) -> ResultTable:
    """Per training-set size: KE, its compute-matched run and both gains, mean ± std over seeds."""
    rows = experiment.size_table(results)
    cells = [dict(row, **{key: mean_std(row[key], row[f"{key}_std"]) for key in
                          ("n1", "final", "matched", "gain_n1", "gain_matched")}) for row in rows]
    columns = {"samples_per_class": Column("training images", "per class"),
               "steps_per_generation": Column("SGD steps", "per generation"),
               "epochs_per_generation": Column("epochs", "per generation", digits=1),
               "n1": Column("KE dense at N1", ACCURACY), "final": Column("KE dense at N_G", ACCURACY),
               "matched": Column("one run of the same steps", ACCURACY),
               "gain_n1": Column("KE gain over N1", "accuracy"),
               "gain_matched": Column("KE gain over the compute-matched run", "accuracy"),
               "num_seeds": "seeds"}
    note = ("Every size trains the same SGD steps per generation and is scored on the same test images. "
            "Mean ± std over seeds." if rows else "The data-size sweep runs at the full budget.")
    return result_table(cells, columns, title="Training-set size: KE against one run of the same steps", note=note)


# ---- masks and weight magnitudes --------------------------------------------------------------------

def plot_masks(results: dict) -> go.Figure:
    """One conv layer's C_o × C_i mask, KELS (a block) beside WELS (scattered); slider over s_r."""
    masks = results["masks"]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=["KELS: a block of kernels (a slim layer)", "WELS: each weight on its own"])
    steps, titles = [], []
    for rate, kels, wels in zip(masks["split_rates"], masks["kels"], masks["wels"]):
        kels, wels = _mask_image(kels), _mask_image(wels)
        traces = [go.Heatmap(z=z, colorscale=[[0, RESET], [1, FIT]], zmin=0, zmax=1, showscale=False, xgap=0.5,
                             ygap=0.5, name=kind, hovertemplate=f"{kind}: filter o=%{{y}}, kernel i=%{{x}}: "
                                                                "fit %{z}<extra></extra>", **subplot_refs(fig, 1, col))
                  for col, (kind, z) in enumerate((("KELS", kels), ("WELS", wels)), start=1)]
        steps.append((f"{rate:g}", traces))
        C_o, C_i = kels.shape
        titles.append({"title.subtitle.text": f"s_r = {rate:g}: KELS keeps {slim_width(C_o, rate)} × "
                                              f"{slim_width(C_i, rate)} of {C_o} × {C_i} kernels ({kels.mean():.0%}); "
                                              + (f"WELS: {wels.mean():.0%} of kernels hold a fit weight"
                                                 if wels.dtype == np.uint8 else
                                                 f"WELS keeps {wels.mean():.0%} of the weights, scattered")})
    active = masks["split_rates"].index(0.5) if 0.5 in masks["split_rates"] else 0
    fig = plots.figure_with_slider(steps, fig=fig, prefix="split rate s_r = ", layout_updates=titles,
                                   active=active)
    fig.update_xaxes(title_text="input channel i (kernel)", showgrid=False, ticks="", constrain="domain")
    fig.update_yaxes(title_text="output channel o (filter)", autorange="reversed", showgrid=False, ticks="")
    for col in (1, 2):
        axis = fig.get_subplot(1, col)
        axis.yaxis.update(scaleanchor=axis.xaxis.plotly_name.replace("axis", ""), constrain="domain")
    return style(fig, height=620, margin=dict(t=110),
                 title_text=f"Fit hypothesis (orange) of {masks['layer']} (C_o × C_i)",
                 title_subtitle=dict(font=dict(size=14, color="#555555")))


def _mask_image(mask: Any) -> np.ndarray:
    """A (C_o, C_i) mask as uint8 0/1, or per-kernel fit fractions (mean over k×k) as float32."""
    mask = np.asarray(mask)
    return mask.astype(np.uint8) if mask.dtype == bool else compact(mask, 3)


def _pick_run(results: dict, mode: str, seed: int | None, section: str = "main") -> dict:
    runs = [r for r in results[section] if r["mode"] == mode]
    if not runs:
        raise ValueError(f"no {mode!r} runs; the {section} runs have modes "
                         f"{sorted({r['mode'] for r in results[section]})}")
    seed = runs[0]["seed"] if seed is None else seed
    run = next((r for r in runs if r["seed"] == seed), None)
    if run is None:
        raise ValueError(f"no {mode!r} run with seed {seed}; seeds are {sorted(r['seed'] for r in runs)}")
    return run


def plot_weight_magnitude(results: dict, mode: str = "ke", seed: int | None = None) -> go.Figure:
    """Mean |w| over k×k of the watched conv after each generation (KELS fit block outlined) and
    the fit against the reset block's mean |w|; a slider over generations (frames)."""
    run = _pick_run(results, mode, seed)
    magnitude = np.asarray(run["magnitude"], dtype=float)  # (G, C_o, C_i)
    fit, reset = np.asarray(run["fit_magnitude"], float), np.asarray(run["reset_magnitude"], float)
    G, C_o, C_i = magnitude.shape
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.2,
                        subplot_titles=[f"{run['watched_layer']}: mean |w| per kernel",
                                        "mean |w|: fit block against the rest"])
    top = float(np.quantile(magnitude, 0.995))  # one colour scale for every generation
    fig.add_trace(go.Heatmap(z=compact(magnitude[-1]), zmin=0, zmax=top, colorscale="Viridis",
                             colorbar=dict(title=dict(text="|w|", side="right"), thickness=12, x=0.39, len=0.9),
                             hovertemplate="filter o=%{y}, kernel i=%{x}: |w| = %{z:.4f}<extra></extra>",
                             **subplot_refs(fig, 1, 1)))
    x = np.arange(1, G + 1)
    right = subplot_refs(fig, 1, 2)
    for name, values, colour in (("fit block", fit, FIT), ("reset part", reset, COLOURS["baseline"])):
        fig.add_trace(go.Scatter(x=x, y=compact(values), mode="lines+markers", name=name,
                                 line=dict(color=colour, width=2.5),
                                 hovertemplate=f"{name}, generation %{{x}}: %{{y:.4f}}<extra></extra>", **right))
    fig.add_trace(go.Scatter(x=[G, G], y=compact([fit[-1], reset[-1]]), mode="markers", showlegend=False,
                             marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(width=2.5, color="#222222")),
                             hoverinfo="skip", **right))
    steps = [(str(g + 1), [{"z": compact(magnitude[g])}, {"x": [g + 1, g + 1], "y": compact([fit[g], reset[g]])}])
             for g in range(G)]
    fig = plots.figure_with_frames(fig, steps, traces=[0, 3], prefix="after generation ", active=G - 1)
    if run["split_kind"] == "kels":
        keep_out, keep_in = slim_width(C_o, run["split_rate"]), slim_width(C_i, run["split_rate"])
        fig.add_shape(type="rect", x0=-0.5, x1=keep_in - 0.5, y0=-0.5, y1=keep_out - 0.5, xref="x", yref="y",
                      line=dict(color=FIT, width=3))
    fig.update_xaxes(title_text="input channel i", showgrid=False, ticks="", row=1, col=1)
    fig.update_yaxes(title_text="output channel o", autorange="reversed", showgrid=False, ticks="", row=1, col=1)
    fig.update_xaxes(title_text="generation", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="mean |w|", rangemode="tozero", row=1, col=2)
    return style(fig, title=f"Weight magnitudes under {MODE_LABELS[mode]} (seed {run['seed']}, "
                            f"s_r {run['split_rate']:g}, fit block outlined)", height=560,
                 legend=dict(x=1, xanchor="right", y=0.02, yanchor="bottom"))


def plot_fit_reset_magnitude(results: dict) -> go.Figure:
    """Mean |w| of the watched conv's fit block (solid) and the rest (dashed) per generation, for KE,
    restart-only and full reset (mean ± std over seeds)."""
    traces = []
    for rank, mode in enumerate(("full_reset", "restart_only", "ke")):  # KE drawn last, listed first
        runs = [r for r in results["main"] if r["mode"] == mode]
        if runs:
            pair = _accuracy_traces(runs, "fit_magnitude", f"{MODE_LABELS[mode]}: fit block", MODE_COLOURS[mode])
            pair += _accuracy_traces(runs, "reset_magnitude", f"{MODE_LABELS[mode]}: reset part",
                                     MODE_COLOURS[mode], dash="dash")
            for trace in pair:
                trace.legendrank = 1000 - 10 * rank
            traces += pair
    for trace in traces:
        trace.hovertemplate = trace.hovertemplate and trace.hovertemplate.replace(":.3f", ":.4f")
    fig = go.Figure(traces)
    fig.update_xaxes(title_text="generation g", dtick=1)
    fig.update_yaxes(title_text=f"mean |w| of {results['main'][0]['watched_layer']}", rangemode="tozero")
    return style(fig, title="Fit block against reset part: mean |w| after each generation", height=440,
                 legend=dict(orientation="h", y=-0.2, x=0))


# ---- ablations ----------------------------------------------------------------------------------------

def _wrap(label: str, width: int = 34) -> str:
    """Break a long label after commas so that it fits beside a horizontal bar."""
    lines = [""]
    for part in label.split(", "):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += (", " if lines[-1] else "") + part
    return "<br>".join(lines)


def plot_ablation(results: dict) -> go.Figure:
    """Final dense accuracy (N1 marked) and its gain over N1 for each ablation row."""
    table = experiment.ablation_table(results)
    if not table:
        return plots.plot_message("ablations run at the full budget", title="Ablations")
    labels = [_wrap(row["row"]) for row in table]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.6, 0.4], horizontal_spacing=0.04,
                        subplot_titles=["dense accuracy at N_G (◆ = N1)", "gain over N1"])
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    fig.add_trace(go.Bar(y=labels, x=compact([r["final_dense"] for r in table], 4), orientation="h",
                         marker_color=FIT, name="KE dense at N_G", texttemplate="%{x:.3f}", textposition="inside",
                         hovertemplate="%{y}: %{x:.3f}<extra>dense N_G</extra>", **left))
    fig.add_trace(go.Scatter(y=labels, x=compact([r["n1_dense"] for r in table], 4), mode="markers", name="N1",
                             marker=dict(symbol="diamond", size=11, color="#333333"),
                             hovertemplate="%{y}: %{x:.3f}<extra>dense N1</extra>", **left))
    gains = [r["gain"] for r in table]
    fig.add_trace(go.Bar(y=labels, x=compact(gains, 4), orientation="h", name="gain",
                         marker_color=[FIT if g >= 0 else COLOURS["baseline"] for g in gains],
                         texttemplate="%{x:+.3f}", textposition="outside", cliponaxis=False,
                         hovertemplate="%{y}: %{x:+.3f}<extra>gain over N1</extra>", **right))
    fig.update_yaxes(autorange="reversed", showgrid=False, ticks="")
    fig.update_xaxes(range=[0, 1], title_text="test accuracy", row=1, col=1)
    limit = max(0.02, max(abs(g) for g in gains)) * 1.35
    fig.update_xaxes(range=[min(0.0, min(gains)) * 1.35 - 0.005, limit], title_text="Δ accuracy",
                     zeroline=True, zerolinecolor="#9CA3AF", row=1, col=2)
    return style(fig, title="Ablations: one KE run per row (one seed)", height=140 + 46 * len(table),
                 showlegend=False, margin=dict(l=260))


# ---- the live explorer -----------------------------------------------------------------------------------

def _run_figure(run: dict, title: str, reference: dict | None = None) -> go.Figure:
    """Dense and slim accuracy of one run (and faint, the chapter's run), the summary as subtitle."""
    traces = []
    if reference is not None:
        traces += _accuracy_traces([reference], "dense", "the chapter's KE run: dense", "#BAB0AC")
        traces += _accuracy_traces([reference], "slim", "the chapter's KE run: slim", "#BAB0AC", dash="dash")
    traces += _accuracy_traces([run], "dense", "dense", MODE_COLOURS["ke"])
    traces += _accuracy_traces([run], "slim", "slim (fit hypothesis)", MODE_COLOURS["ke"], dash="dash")
    fig = go.Figure(traces + _chance_and_n1(run))
    fig.update_xaxes(title_text="generation g", dtick=1)
    fig.update_yaxes(title_text="test accuracy", range=[0, 1.02])
    return style(fig, height=460, margin=dict(t=100), legend=dict(orientation="h", y=-0.2, x=0),
                 title_text=title, title_subtitle=dict(text=_summary(run), font=dict(size=14, color="#555555")))


def _summary(run: dict) -> str:
    G = len(run["dense"])
    e = run["epochs_per_generation"]
    return (f"{G} generations × {e} epoch{'s' * (e > 1)}, s_r {run['split_rate']:g}, "
            f"{BACKBONE_LABELS.get(run['backbone'], run['backbone'])}: dense {run['dense'][0]:.3f} → "
            f"{run['dense'][-1]:.3f}, slim {run['slim'][0]:.3f} → {run['slim'][-1]:.3f}")


def explorer_run(results: dict, num_generations: int, epochs_per_generation: int, split_rate: float,
                 backbone: str) -> dict[str, Any]:
    """The ``train_generations`` arguments the explorer trains: the chapter's KE run (sizes, seed)
    with the reader's generations, epochs, s_r and backbone."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()}
    cfg = experiment.KEConfig(**config)
    template = next(r for r in experiment.main_runs(cfg) if r["mode"] == "ke" and r["seed"] == cfg.seed)
    return template | dict(num_generations=int(num_generations), epochs_per_generation=int(epochs_per_generation),
                           split_rate=float(split_rate), backbone=backbone)


def ke_explorer(results: dict) -> widgets.Explorer:
    """Generations, epochs per generation, s_r and backbone → press Train: dense and slim accuracy of
    that KE run, beside the chapter's. Runs go through the "ke-generations" cache; nothing trains
    until the button is pressed (the panel opens on the chapter's own run)."""
    config = results["config"]
    G, e = config["num_generations"], config["epochs_per_generation"]
    rates = sorted(set(SPLIT_RATES) | {float(config["split_rate"])})
    controls = {"num_generations": widgets.int_slider("generations", G, min(2, G), max(8, G)),
                "epochs_per_generation": widgets.int_slider("epochs / generation", e, min(5, e), max(30, e)),
                "split_rate": widgets.selection_slider("split rate s_r", rates, float(config["split_rate"])),
                "backbone": widgets.dropdown("backbone", list(BACKBONES), config["backbone"])}
    chapter = _pick_run(results, "ke", config["seed"])

    def render(**values: Any) -> go.Figure:
        run, = cached_runs("ke-generations", train_generations, [explorer_run(results, **values)], workers=1)
        return _run_figure(run, "Your KE run (grey: the chapter's)", reference=chapter)

    panel = widgets.explorer(controls, render, button="Train", render_now=False,
                             title="Retrain knowledge evolution (the chapter's data and seed)")
    panel.items = [_run_figure(chapter, "The chapter's KE run (press Train for yours)")]
    widgets.show_in(panel.output, panel.items)
    return panel

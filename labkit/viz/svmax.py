"""Chapter 03 (SVMax): the paper's views as plotly figures with static controls, plus live explorers.

Figures take the results of ``labkit.experiments.svmax.run`` (or plain arguments) and are built
from ``labkit.viz.plots``; explorers come from ``labkit.viz.widgets``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.cache import cached_runs
from labkit.data import mixture_centres
from labkit.experiments import svmax as experiment
from labkit.experiments.svmax_runs import VARIANTS, train_retrieval
from labkit.methods import svmax
from labkit.viz import plots, widgets
from labkit.viz.tables import Column, ResultTable, mean_std, result_table
from labkit.viz.plots import COLOURS, PALETTE, bound_trace, compact, style, subplot_refs

VARIANT_LABELS = {"vanilla": "vanilla", "svmax": "SVMax", "svmax_plain": "SVMax plain (Eq. 1)",
                  "spread_out": "spread-out", "svmax_unnormalized": "SVMax on unnormalized"}
BOUND_DIMS = (2, 4, 8, 16, 32, 64)
MAX_BATCH = 256
# The bounds explorer's three batches: builder, colour, marker, legend label.
BATCH_KINDS = {
    "collapsed": (svmax.collapsed_batch, "#E15759", "x", "collapsed (rank 1)"),
    "random": (svmax.random_unit_batch, "#4E79A7", "circle", "random unit rows"),
    "isotropic": (svmax.isotropic_batch, "#59A14F", "diamond", "isotropic (stacked bases)"),
}
GAN_ROWS = {(False, False): "vanilla", (False, True): "vanilla + SVMax",
            (True, False): "unrolled", (True, True): "unrolled + SVMax"}
# Zero counts white, so the empty plane reads as paper and the modes as ink.
DENSITY_SCALE = [[0.0, "#FFFFFF"], [0.02, "#FFF7D6"], [0.3, "#FDB863"], [0.6, "#E8731A"], [0.85, "#A0360F"],
                 [1.0, "#4A1205"]]
# Digit colours for the unit circle: a discrete scale over 0..9.
DIGIT_SCALE = [[stop, PALETTE[i]] for i in range(10) for stop in (i / 10, (i + 1) / 10)]


def _s_mu(kind: str, b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    E = BATCH_KINDS[kind][0](b, d, torch.Generator().manual_seed(seed))
    return E, float(svmax.mean_singular_value(E))


def _batch_sizes(d: int, max_batch: int) -> np.ndarray:
    """About 16 log-spaced b from d to max_batch, rounded to multiples of d (so isotropic = U)."""
    sizes = np.round(np.geomspace(d, max_batch, 16) / d).astype(int) * d
    return np.unique(sizes[sizes <= max_batch])


# ---- 1. the bounds ---------------------------------------------------------------------------------

def plot_bounds(dims: tuple[int, ...] = BOUND_DIMS, max_batch: int = MAX_BATCH, seed: int = 0) -> go.Figure:
    """s_μ of collapsed / random / isotropic unit-row batches against b, between L and U; slider over d."""
    steps, titles = [], []
    for d in dims:
        dense = np.geomspace(d, max_batch, 60)
        low, high = np.sqrt(dense) / d, np.sqrt(dense / d)
        traces = [go.Scatter(x=compact(np.r_[dense, dense[::-1]]), y=compact(np.r_[high, low[::-1]]), fill="toself",
                             fillcolor="rgba(150,150,150,0.12)", line=dict(width=0), hoverinfo="skip",
                             showlegend=False),
                  bound_trace(dense, high, name="U = √(b/d)", dash="dash"),
                  bound_trace(dense, low, name="L = √b / d", dash="dot")]
        sizes = _batch_sizes(d, max_batch)
        # isotropic drawn first, so that random batches close to U stay visible on top of it
        for rank, kind in sorted(enumerate(BATCH_KINDS), key=lambda item: item[1] != "isotropic"):
            _, colour, symbol, label = BATCH_KINDS[kind]
            values = [_s_mu(kind, int(b), d, seed)[1] for b in sizes]
            traces.append(go.Scatter(x=sizes, y=compact(values), mode="markers", name=label, legendgroup=kind,
                                     legendrank=1001 + rank,
                                     marker=dict(color=colour, symbol=symbol, size=9,
                                                 line=dict(width=1, color="white")),
                                     hovertemplate=f"{label}<br>b=%{{x}}: s_μ=%{{y:.4f}}<extra></extra>"))
        steps.append((str(d), traces))
        titles.append({"title.text": f"Mean singular value s_μ of b unit rows in d = {d} dimensions"})
    fig = plots.figure_with_slider(steps, prefix="embedding size d = ", layout_updates=titles,
                                   active=min(3, len(dims) - 1))
    fig.update_xaxes(type="log", title_text="batch size b", tickvals=[2 ** k for k in range(1, 9)])
    fig.update_yaxes(title_text="s_μ", rangemode="tozero")
    return style(fig, height=520, legend=dict(x=0.01, y=0.99))


def _bounds_view(b: int, d: int, kind: str) -> list[Any]:
    E, s_mu = _s_mu(kind, b, d)  # raises ValueError with the method's own message when b < d
    low, high = svmax.lower_bound(b, d), svmax.upper_bound(b, d)
    singular = torch.linalg.svdvals(E).numpy()
    spread = f", spread (s_μ − L)/(U − L) = {(s_mu - low) / (high - low):.3f}" if high > low else ""
    fig = make_subplots(rows=2, cols=1, row_heights=[0.2, 0.8], vertical_spacing=0.2,
                        subplot_titles=["where s_μ lies between L and U", "singular values of E, largest first"])
    gauge, spectrum = subplot_refs(fig, 1, 1), subplot_refs(fig, 2, 1)
    fig.add_trace(go.Scatter(x=[low, high], y=[0, 0], mode="lines+markers+text", line=dict(color="#D1D5DB", width=14),
                             marker=dict(size=14, color="#333333", symbol="line-ns-open"),
                             text=[f"L = {low:.3f}", f"U = {high:.3f}"], textposition=["bottom center"] * 2,
                             hoverinfo="skip", showlegend=False, **gauge))
    fig.add_trace(go.Scatter(x=[s_mu], y=[0], mode="markers+text", text=[f"s_μ = {s_mu:.3f}"],
                             textposition="top center",
                             marker=dict(size=18, color=COLOURS["svmax"], symbol="diamond"), showlegend=False,
                             hovertemplate="s_μ = %{x:.4f}<extra></extra>", **gauge))
    index = np.arange(1, len(singular) + 1)
    fig.add_trace(go.Bar(x=index, y=compact(singular), marker_color=BATCH_KINDS[kind][1], name="s_i",
                         hovertemplate="s_%{x} = %{y:.4f}<extra></extra>", showlegend=False, **spectrum))
    fig.add_trace(bound_trace([0.5, len(index) + 0.5], [math.sqrt(b / d)] * 2, name="isotropic: every s_i = √(b/d)",
                              refs=spectrum))
    fig.add_trace(bound_trace([0.5, len(index) + 0.5], [s_mu] * 2, name="s_μ (their mean)", dash="dot",
                              colour=COLOURS["svmax"], refs=spectrum))
    pad = 0.08 * high
    fig.update_xaxes(range=[min(low, s_mu) - pad, max(high, s_mu) + pad], showgrid=False, row=1, col=1)
    fig.update_yaxes(visible=False, range=[-1, 1], row=1, col=1)
    fig.update_xaxes(title_text="index i", row=2, col=1)
    fig.update_yaxes(title_text="s_i", rangemode="tozero", row=2, col=1)
    style(fig, title=f"{kind} batch, b = {b}, d = {d}{spread}", height=540, legend=dict(orientation="h", y=-0.16))
    return [fig]


def bounds_explorer(b: int = 150, d: int = 16, kind: str = "random") -> widgets.Explorer:
    """Sliders for b and d, buttons for the batch kind: s_μ between L and U, and the spectrum."""
    controls = {"b": widgets.int_slider("batch size b", b, 1, MAX_BATCH),
                "d": widgets.int_slider("embedding size d", d, 1, 64),
                "kind": widgets.toggle("batch", list(BATCH_KINDS), kind)}
    return widgets.explorer(controls, _bounds_view)


# ---- 2–3. spectra and the unit circle ---------------------------------------------------------------

def _grid_runs(results: dict, loss: str, lr: float, variant: str) -> list[dict]:
    lam = 0.0 if variant == "vanilla" else experiment.PAPER_LAMBDA[loss]
    return [r for r in results["grid"] if r["loss"] == loss and r["lr"] == lr and r["variant"] == variant
            and (variant == "vanilla" or r["lam"] == lam)]


def plot_spectrum(results: dict, loss: str = "contrastive", lr: float | None = None,
                  seed: int | None = None) -> go.Figure:
    """Sorted singular values of one test batch at each checkpoint; vanilla vs SVMax, slider over steps."""
    lr = max(results["config"]["lrs"]) if lr is None else lr
    runs = {v: _grid_runs(results, loss, lr, v) for v in ("vanilla", "svmax")}
    if not all(runs.values()):
        raise ValueError(f"no {loss} runs at lr {lr}; the grid has lrs {sorted({r['lr'] for r in results['grid']})}")
    seed = runs["vanilla"][0]["seed"] if seed is None else seed
    runs = {v: next(r for r in rs if r["seed"] == seed) for v, rs in runs.items()}
    spectra = {v: np.asarray(r["spectra"], dtype=float) for v, r in runs.items()}
    d = spectra["vanilla"].shape[1]
    b = int(round(float((spectra["vanilla"][0] ** 2).sum())))  # unit rows: Σ s_i² = ‖E‖_F² = b
    index = np.arange(1, d + 1)
    steps = []
    for i, step in enumerate(runs["vanilla"]["spectrum_steps"]):
        steps.append((str(step), [go.Bar(x=index, y=compact(spectra[v][i], 4), marker_color=COLOURS[v],
                                         name=f"{VARIANT_LABELS[v]}  (s_μ = {spectra[v][i].mean():.2f})",
                                         hovertemplate="s_%{x} = %{y:.3f}") for v in spectra]))
    fig = go.Figure([bound_trace([0.5, d + 0.5], [math.sqrt(b / d)] * 2, name="isotropic: every s_i = √(b/d)")])
    fig = plots.figure_with_slider(steps, fig=fig, prefix="training step ", active=len(steps) - 1)
    top = max(float(s.max()) for s in spectra.values()) * 1.05
    fig.update_xaxes(title_text="index i (largest first)", dtick=1 if d <= 32 else None)
    fig.update_yaxes(title_text="singular value s_i", range=[0, top])
    return style(fig, title=f"Spectrum of a test batch (b = {b}, d = {d}): {loss}, lr {lr}, seed {seed}", height=500,
                 barmode="group", bargap=0.2, legend=dict(x=0.99, xanchor="right", y=0.99))


def plot_unit_circle(results: dict) -> go.Figure:
    """Ten digits embedded on the unit circle (d = 2), vanilla | SVMax side by side; slider over epochs."""
    circle = {r["variant"]: r for r in results["circle"]}
    names = [v for v in ("vanilla", "svmax") if v in circle]
    fig = make_subplots(rows=1, cols=len(names), specs=[[{"type": "polar"}] * len(names)],
                        subplot_titles=[VARIANT_LABELS[v] for v in names], horizontal_spacing=0.12)
    for col, v in enumerate(names, start=1):  # colours and radii once; the frames move the angles only
        fig.add_trace(go.Scatterpolar(r=compact(np.ones(len(circle[v]["labels"]), dtype=int)), mode="markers",
                                      name=VARIANT_LABELS[v], showlegend=False,
                                      marker=dict(color=compact(circle[v]["labels"]), coloraxis="coloraxis", size=8,
                                                  opacity=0.55, line=dict(width=0)),
                                      hovertemplate="digit %{marker.color}<br>angle %{theta:.0f}°<extra></extra>",
                                      **subplot_refs(fig, 1, col)))
    # rows are unit vectors: a whole-degree angle (int16; a degree is ~3 px here) places each one
    angles = {v: np.round(np.degrees(np.arctan2(E[..., 1], E[..., 0]))).astype(np.int16)
              for v in names for E in [np.asarray(circle[v]["embeddings"], dtype=float)]}  # (epochs + 1, n)
    steps = [(str(epoch), [{"theta": angles[v][epoch]} for v in names]) for epoch in range(len(angles[names[0]]))]
    fig = plots.figure_with_frames(fig, steps, prefix="epoch ", active=len(steps) - 1)
    fig.update_polars(radialaxis=dict(range=[0, 1.12], showticklabels=False, ticks="", showgrid=False, showline=False),
                      angularaxis=dict(showticklabels=False, ticks="", dtick=45))
    fig.update_annotations(yshift=12)
    return style(fig, title="Digits on the unit circle (d = 2), coloured by class", height=540,
                 coloraxis=dict(colorscale=DIGIT_SCALE, cmin=-0.5, cmax=9.5,
                                colorbar=dict(title="digit", tickvals=list(range(10)), thickness=14, len=0.8)))


# ---- 4. retrieval ------------------------------------------------------------------------------------

def plot_recall_vs_lr(results: dict) -> go.Figure:
    """R@1 against the learning rate (log axis), ± std over seeds, per variant and λ; dropdown over losses."""
    table = experiment.grid_table(results)
    groups = {}
    for loss in dict.fromkeys(row["loss"] for row in table):
        traces = []
        for variant, lam in dict.fromkeys((row["variant"], row["lam"]) for row in table if row["loss"] == loss):
            rows = sorted((row for row in table
                           if row["loss"] == loss and row["variant"] == variant and row["lam"] == lam),
                          key=lambda row: row["lr"])
            paper = variant == "vanilla" or lam == experiment.PAPER_LAMBDA[loss]
            traces.append(plots.errorbar_trace([row["lr"] for row in rows], [row["r1"] for row in rows],
                                               [row["r1_std"] for row in rows],
                                               name="vanilla" if variant == "vanilla" else f"SVMax λ={lam:g}",
                                               colour=COLOURS[variant] if paper else COLOURS["unrolled + svmax"],
                                               dash=None if paper else "dash", symbol="circle" if paper else "square"))
        groups[loss] = traces
    fig = plots.figure_with_dropdown({f"{loss} loss": traces for loss, traces in groups.items()}, y=1.04)
    fig.update_xaxes(type="log", title_text="learning rate (SGD, momentum 0.9)",
                     tickvals=sorted({row["lr"] for row in table}))
    low = float(np.nanmin([row["r1"] - np.nan_to_num(row["r1_std"]) for row in table]))
    fig.update_yaxes(title_text="Recall@1 on held-out digits 5–9", range=[max(0.0, low - 0.05), 1.0])
    seeds = max(row["seeds"] for row in table)
    return style(fig, title=f"R@1 against learning rate (mean ± std over {seeds} seed{'s' * (seeds > 1)})", height=480,
                 margin=dict(t=110),
                 legend=dict(x=0.01, y=0.02, yanchor="bottom"))


def _curve_traces(runs: list[dict], key: str, name: str, colour: str, refs: dict, showlegend: bool) -> list:
    steps = runs[0]["history"][key]["step"]
    values = np.array([r["history"][key]["value"] for r in runs], dtype=float)
    return plots.band_traces(steps, values.mean(0), values.std(0), name=name, colour=colour, refs=refs,
                             showlegend=showlegend)


def _training_figure(groups: dict[str, dict[str, list[dict]]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=["task loss (ranking)", "s_μ of the training batch"],
                        horizontal_spacing=0.1)
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    any_run = next(iter(next(iter(groups.values())).values()))[0]
    b, d = any_run["batch_size"], any_run["embedding_dim"]
    steps = any_run["history"]["s_mu"]["step"]
    if b >= d:  # the bounds hold for b >= d only
        for name, value, dash in ((f"U = √(b/d) = {svmax.upper_bound(b, d):.2f}", svmax.upper_bound(b, d), "dash"),
                                  (f"L = √b / d = {svmax.lower_bound(b, d):.2f}", svmax.lower_bound(b, d), "dot")):
            fig.add_trace(bound_trace([steps[0], steps[-1]], [value] * 2, name=name, dash=dash, refs=right))
    traces = {}
    for label, runs in groups.items():
        traces[label] = sum((_curve_traces(rs, "task", VARIANT_LABELS[v], COLOURS[v], left, True)
                             + _curve_traces(rs, "s_mu", VARIANT_LABELS[v], COLOURS[v], right, False)
                             for v, rs in runs.items()), [])
    if len(traces) == 1:
        fig.add_traces(next(iter(traces.values())))
    else:
        fig = plots.figure_with_dropdown(traces, fig=fig, y=1.13)
        fig.update_layout(margin=dict(t=120))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(rangemode="tozero")
    return fig


def plot_training_curves(results: dict, loss: str | None = None, lr: float | None = None) -> go.Figure:
    """Task loss and s_μ over steps, vanilla vs SVMax (mean ± std over seeds).

    ``loss`` / ``lr`` fix one panel; left as None, a dropdown offers every (loss, lr) of the grid.
    """
    pairs = dict.fromkeys((r["loss"], r["lr"]) for r in results["grid"]
                          if (loss is None or r["loss"] == loss) and (lr is None or r["lr"] == lr))
    if not pairs:
        raise ValueError(f"no grid runs for loss={loss!r}, lr={lr!r}")
    groups = {f"{lo} · lr {rate:g}": {v: _grid_runs(results, lo, rate, v) for v in ("vanilla", "svmax")}
              for lo, rate in pairs}
    seeds = len(next(iter(groups.values()))["vanilla"])
    title = "Training curves" + (f": {next(iter(groups))}" if len(groups) == 1 else "")
    return style(_training_figure(groups), title=f"{title} (mean ± std over {seeds} seed{'s' * (seeds > 1)})",
                 height=440, legend=dict(orientation="h", y=-0.2))


def _run_label(run: dict) -> str:
    return "vanilla" if run["variant"] == "vanilla" else f"{VARIANT_LABELS[run['variant']]}, λ={run['lam']:g}"


def _retrieval_view(results: dict, loss: str, variant: str, lr: float, lam: float, seed: int) -> list[Any]:
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()}
    # the chapter's own run arguments (sizes, steps), so a run the chapter trained is a cache hit
    template = experiment.grid_runs(experiment.SVMaxConfig(**config))[0]
    chosen = template | dict(loss=loss, lr=lr, seed=seed, variant=variant, lam=0.0 if variant == "vanilla" else lam)
    baseline = template | dict(loss=loss, lr=lr, seed=seed, variant="vanilla", lam=0.0)
    runs = cached_runs("svmax-retrieval", train_retrieval, [baseline, chosen] if variant != "vanilla" else [baseline],
                       workers=1)
    rows = [dict(run=_run_label(r), r1=r["recall"]["1"], r8=r["recall"]["8"], nmi=r["nmi"], spread=r["spread"],
                 note="diverged" if r["diverged"] else "; ".join(r["warnings"])[:80] or None) for r in runs]
    table = result_table(rows, {"run": "run", "r1": RECALL_1, "r8": Column("Recall@8 on digits 5–9"),
                                "nmi": NMI, "spread": SPREAD, "note": "note"}, title=f"one training run, seed {seed}")
    groups = {"run": {r["variant"]: [r] for r in runs}}
    curves = style(_training_figure(groups), title=f"{loss}, lr {lr:g}, seed {seed}", height=400,
                   legend=dict(orientation="h", y=-0.22))
    return [table, curves]


def retrieval_explorer(results: dict) -> widgets.Explorer:
    """Pick a loss, a regularizer, lr, λ and seed, press Train: metrics and curves beside vanilla.

    Runs go through the chapter's cache ("svmax-retrieval"), so configurations the chapter trained
    come back at once; a new one takes the chapter's per-run time (a second or two at quick).
    """
    config = results["config"]
    losses = list(dict.fromkeys([*config["losses"], *experiment.PAPER_LAMBDA]))  # the chapter's losses first
    lrs = sorted(set(config["lrs"]) | {0.001, 0.01, 0.1, 1.0})
    controls = {"loss": widgets.dropdown("loss", losses),
                "variant": widgets.dropdown("regularizer", VARIANTS, "svmax"),
                "lr": widgets.selection_slider("lr", lrs, max(config["lrs"])),
                "lam": widgets.log_slider("λ", experiment.PAPER_LAMBDA[losses[0]], -3, 1),
                "seed": widgets.int_slider("seed", config["seed"], 0, 9)}

    def paper_lambda(change: dict) -> None:  # a new loss starts at its paper λ
        controls["lam"].value = experiment.PAPER_LAMBDA[change["new"]]

    controls["loss"].observe(paper_lambda, names="value")
    return widgets.explorer(controls, lambda **values: _retrieval_view(results, **values), button="Train",
                            title="Train one retrieval model (digits 0–4 → test on 5–9)")


# ---- 5. the ring GAN ----------------------------------------------------------------------------------

def _gan_row(run: dict) -> tuple[bool, bool]:
    return bool(run["unroll_steps"]), bool(run["lam"])


def plot_gan_grid(results: dict, max_seeds: int = 4) -> go.Figure:
    """Generator sample density: rows = variants, columns = checkpoints; one dropdown over (lr, seed)."""
    gan = results["gan"]
    keys = [key for key in GAN_ROWS if any(_gan_row(r) == key for r in gan)]
    steps = gan[0]["checkpoint_steps"]
    extent, bins = float(gan[0]["extent"]), gan[0]["heatmaps"].shape[-1]
    fig = make_subplots(rows=len(keys), cols=len(steps), row_titles=[GAN_ROWS[k] for k in keys],
                        column_titles=[f"step {s:,}" for s in steps], horizontal_spacing=0.012, vertical_spacing=0.03)
    cells = {(row, col): subplot_refs(fig, row + 1, col + 1) for row in range(len(keys)) for col in range(len(steps))}
    centres = np.asarray(mixture_centres("ring"), dtype=float)  # (8, 2)
    for refs in cells.values():  # the 8 true modes, faint, in every cell and under every option
        fig.add_trace(go.Scatter(x=centres[:, 0], y=centres[:, 1], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(size=11, symbol="circle-open", color="rgba(60,60,60,0.45)"), **refs))
    groups = {}
    for lr in sorted({r["lr"] for r in gan}, reverse=True):
        for seed in sorted({r["seed"] for r in gan if r["lr"] == lr})[:max_seeds]:
            traces = []
            for row, key in enumerate(keys):
                run = next((r for r in gan if r["lr"] == lr and r["seed"] == seed and _gan_row(r) == key), None)
                if run is None:
                    traces.append(go.Scatter(x=[0], y=[0], mode="text", text=["not run"], hoverinfo="skip",
                                             showlegend=False, **cells[row, len(steps) // 2]))
                    continue
                for col, counts in enumerate(run["heatmaps"]):
                    traces.append(go.Heatmap(z=plots.log_count_levels(counts), x0=-extent + extent / bins,
                                             dx=2 * extent / bins, y0=-extent + extent / bins, dy=2 * extent / bins,
                                             coloraxis="coloraxis", hoverinfo="skip", **cells[row, col]))
                    traces.append(go.Scatter(x=[-0.93 * extent], y=[0.9 * extent], mode="text", showlegend=False,
                                             text=[f"{int(run['modes_covered'][col])}/8"], textposition="middle right",
                                             hoverinfo="skip", textfont=dict(size=11, color="#333"), **cells[row, col]))
            groups[f"lr {lr:g} · seed {seed}"] = traces
    height, top, bottom = 170 * len(keys) + 200, 140, 60
    # the menu sits 40 px above the cells whatever the number of rows (y is in plot-area units)
    fig = plots.figure_with_dropdown(groups, fig=fig, y=1 + 40 / (height - top - bottom), x=0.0)
    max_count = max(float(np.max(r["heatmaps"])) for r in gan)
    for row, col in cells:
        axis = fig.get_subplot(row + 1, col + 1)
        axis.yaxis.update(scaleanchor=axis.xaxis.plotly_name.replace("axis", ""), scaleratio=1, constrain="domain")
        axis.xaxis.update(constrain="domain")
    bare = dict(range=[-extent, extent], showticklabels=False, ticks="", showgrid=False, showline=True, mirror=True)
    fig.update_xaxes(bare)
    fig.update_yaxes(bare)
    fig.update_annotations(font_size=13)
    return style(fig, title="Ring GAN: where the generator's samples land (modes covered of 8 in each corner)",
                 height=height, margin=dict(t=top, b=bottom, r=110),
                 coloraxis=plots.log_count_coloraxis(max_count, colorscale=DENSITY_SCALE, title="samples"))


def plot_gan_modes(results: dict) -> go.Figure:
    """Modes covered (of 8) ± std over seeds, averaged over the last checkpoints, per variant and lr."""
    table = experiment.gan_table(results)
    series = {}
    for name in dict.fromkeys(GAN_ROWS[(bool(row["unroll_steps"]), bool(row["lam"]))] for row in table):
        rows = [row for row in table if row["row"] == name]
        series[name] = ([f"lr {row['lr']:g}" for row in rows], [row["modes"] for row in rows],
                        [row["modes_std"] for row in rows])
    seeds = max(row["seeds"] for row in table)
    fig = plots.plot_bars(series, title=f"Ring GAN: modes covered (mean ± std over {seeds} seed{'s' * (seeds > 1)})",
                          value_title="modes covered (of 8)", category_title="learning rate (G and D, Adam)",
                          value_format=".1f", value_range=[0, 8.6], height=420,
                          colours={name: COLOURS[name.lower()] for name in series})
    fig.add_hline(y=8, line=dict(color="#333", dash="dash", width=1), annotation_text="all 8 modes",
                  annotation_position="top left")
    return fig.update_layout(showlegend=True,
                             legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))


# ---- ablations and the b/d sweep ---------------------------------------------------------------------

def plot_ablation(results: dict) -> go.Figure:
    """R@1 ± std per ablation row (contrastive, largest lr); rows that warned are marked ⚠."""
    table = experiment.ablation_table(results)
    labels = [("⚠ " if row["warning"] else "") + row["row"] for row in table]
    colours = [COLOURS.get(variant, PALETTE[i]) for i, (_, variant, *_rest) in enumerate(experiment.ABLATIONS)]
    hover = [row["warning"] or f"NMI {row['nmi']:.3f}, spread {row['spread']:.3f}" for row in table]
    lr = max(results["config"]["lrs"])
    fig = plots.plot_bars({"R@1": (labels, [row["r1"] for row in table], [row["r1_std"] for row in table])},
                          horizontal=True, colours={"R@1": colours}, hovertext={"R@1": hover},
                          title=f"Ablations: contrastive loss at lr {lr:g}", value_title="Recall@1 on digits 5–9",
                          value_range=[0, 1], height=110 + 48 * len(table))
    fig.add_vline(x=table[0]["r1"], line=dict(color=COLOURS["vanilla"], dash="dot", width=1.5))
    return fig.update_layout(margin=dict(l=250))


def plot_sweep(results: dict) -> go.Figure:
    """SVMax − vanilla R@1 (mean of per-seed differences) over batch size b and embedding size d, one λ."""
    table = experiment.sweep_table(results)
    if not table:
        return plots.plot_message("b/d sweep runs at the full budget", title="One λ for every b and d")
    bs, ds = sorted({row["b"] for row in table}), sorted({row["d"] for row in table})
    gain = np.full((len(ds), len(bs)), np.nan)
    for row in table:
        gain[ds.index(row["d"]), bs.index(row["b"])] = row["gain"]
    limit = max(float(np.nanmax(np.abs(gain))), 1e-3)
    scale = [[0.0, COLOURS["unrolled"]], [0.5, "#F7F7F7"], [1.0, COLOURS["unrolled + svmax"]]]
    fig = plots.plot_heatmap(gain, [f"b = {b}" for b in bs], [f"d = {d}" for d in ds], zmid=0.0, colorscale=scale,
                             value_format="+.2f", x_title="batch size", y_title="embedding size",
                             value_title="Δ R@1", title="One λ for every b and d: SVMax − vanilla R@1")
    return fig.update_traces(zmin=-limit, zmax=limit)


# ---- result tables --------------------------------------------------------------------------------

RECALL_1, NMI = Column("Recall@1 on digits 5–9"), Column("NMI of k-means on digits 5–9")
SPREAD = Column("normalized spread (s_μ − L)/(U − L) on test batches")
METRICS = {"r1": RECALL_1, "nmi": NMI, "spread": SPREAD, "seeds": Column("training seeds")}
STD_NOTE = "Mean ± sample std over training seeds (one seed: the mean alone)."


def _metrics(row: dict, *names: str, scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """``{name: "mean ± std"}`` from a summary row's ``name`` and ``name_std``, plus its seed count."""
    return {n: mean_std(scale * row[n], scale * row[f"{n}_std"], digits) for n in names} | {"seeds": row["seeds"]}


def retrieval_table(results: dict) -> ResultTable:
    """The retrieval grid: every loss × lr × regularizer, mean ± std over seeds."""
    rows = [dict(loss=row["loss"], lr=f"{row['lr']:g}", run=_run_label(row), **_metrics(row, "r1", "nmi", "spread"))
            for row in experiment.grid_table(results)]
    return result_table(rows, {"loss": "ranking loss", "lr": "learning rate (SGD)", "run": "regularizer"} | METRICS,
                        title="Retrieval on held-out digits", note=STD_NOTE)


def ablation_results(results: dict) -> ResultTable:
    """The ablation rows (contrastive, largest lr) with the warning each one raised."""
    rows = [dict(row=row["row"], warning=row["warning"].split(". ")[0] or None, **_metrics(row, "r1", "nmi", "spread"))
            for row in experiment.ablation_table(results)]
    return result_table(rows, {"row": "ablation row"} | METRICS | {"warning": "warning raised"},
                        title=f"Ablations: contrastive loss at lr {max(results['config']['lrs']):g}", note=STD_NOTE)


def gan_results(results: dict) -> ResultTable:
    """Modes covered and high-quality fraction per GAN row, mean ± std over seeds."""
    rows = [dict(lr=f"{row['lr']:g}", row=row["row"], **_metrics(row, "modes", digits=2),
                 quality=mean_std(100 * row["quality"], 100 * row["quality_std"], 1))
            for row in experiment.gan_table(results)]
    return result_table(rows, {"lr": "learning rate (Adam, G and D)", "row": "GAN", "modes": "modes covered (of 8)",
                               "quality": Column("samples within 3σ of a mode", unit="%"), "seeds": METRICS["seeds"]},
                        title="Ring GAN", note=f"Each seed averaged over its last {experiment.LAST_CHECKPOINTS} "
                                                f"checkpoints. {STD_NOTE}")


def cells_table(results: dict) -> ResultTable:
    """Each cell of the every-cell claims (3, 4a, 4b, 5): paired difference, 95 % interval, verdict."""
    rows = [dict(row, interval=f"[{row['low']:+.3f}, {row['high']:+.3f}]" if math.isfinite(row["low"])
                 else "none (one seed, or no spread)") for row in experiment.cell_table(results)]
    return result_table(rows, {"claim": "claim", "cell": "cell", "difference": Column("paired difference (mean)"),
                               "interval": "95 % interval over seeds", "check": "claimed side",
                               "seeds": METRICS["seeds"], "verdict": "cell verdict"},
                        title="The cells behind the every-cell claims",
                        note="Per-seed differences SVMax − vanilla (4a: λ=1 − λ=0.1) of R@1, or of the normalized "
                             "spread for claim 3.")

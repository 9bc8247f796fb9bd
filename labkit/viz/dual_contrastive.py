"""Chapter 01 (dual contrastive loss and attention for GANs): the paper's views as plotly figures with
static controls, plus live explorers that sample the stored generators.

Figures take the results of ``labkit.experiments.dual_contrastive.run`` and work at every budget:
ablation bars (a dropdown over the measured metrics), classifier-FD during training, every row's
samples side by side (seed slider), D's raw logits on reals and fakes (row dropdown, checkpoint
slider: DCL's common drift shows), G's and D's attention (row and image dropdown, a slider over a
3×3 grid of query cells), the 8-Gaussian ring (seed dropdown, checkpoint slider) and the losses.
A slider that restyles the same traces uses animation frames, so it combines with a dropdown that
switches visibility. A view whose rows did not run returns a message naming the rows it needs.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.data import mixture_centres
from labkit.experiments import dual_contrastive as experiment
from labkit.methods.dual_contrastive import SelfAttention2d
from labkit.models import ImageGenerator
from labkit.models.toy_gan import TRUNK_RESOLUTION  # D's attention acts on its trunk's 8×8 output
from labkit.viz import plots, tables, widgets
from labkit.viz.plots import PALETTE, compact, style, subplot_refs

# baselines blue-grey, DCL (the paper's loss) orange, attention rows darker or warmer shades
ROW_COLOURS = {"ns": "#5F7A9A", "hinge": "#9C755F", "dcl": "#F28E2B", "ns+g-attn": "#2C4F75",
               "dcl+g-attn": "#B8560F", "dcl+g-attn+d-self": "#B07AA1", "dcl+g-attn+d-ref": "#E15759"}
METRIC_LABELS = {"fd": "classifier-FD (lower is better)", "precision": "precision", "recall": "recall",
                 "validity": "composition validity", "probe": "probe accuracy of D's features"}
LOGIT_COLOURS = {"real": "#4E79A7", "fake": "#E15759"}
NUM_ATTENTION_IMAGES = 4  # generated images per row in the static G-attention view
QUERY_FRACTIONS = (0.25, 0.5, 0.75)  # the 3×3 query grid, as fractions of the attention grid's side
GRID_COLUMNS = 6
LOG_BOTTOM = 0.8  # the log count axis starts just below 1, so single counts show
MARKER = dict(symbol="square-open", size=13, color="#00E5FF", line=dict(width=3))  # visible on dark and light


def _colour(row: str, index: int = 0) -> str:
    return ROW_COLOURS.get(row, PALETTE[index % len(PALETTE)])


# which rows a view needs, read from a ``results["rows"]`` entry
ATTENTION = {"G attention": lambda spec: bool(spec["g_attention"]),
             "D attention": lambda spec: spec["d_attention"] != "none"}


def _rows(results: dict, needs: str | None = None) -> list[str]:
    """The trained rows, in the run's order (only those with ``needs``, a key of ``ATTENTION``)."""
    return [row for row, entries in results["runs"].items()
            if entries and (needs is None or ATTENTION[needs](results["rows"][row]))]


def _needs(what: str) -> str:
    rows = [row for row, spec in experiment.ROWS.items()
            if ATTENTION[what](dict(zip(("loss", "g_attention", "d_attention"), spec)))]
    return f"no row with {what} in these results: it needs one of {', '.join(rows)} (all run at the full budget)"


# ---- images -------------------------------------------------------------------------------------

def _rgb(images: Any) -> np.ndarray:
    """uint8 images ``(..., C, S, S)`` with C = 1 or 3 as ``(..., 3, S, S)`` (PNG wants colour)."""
    images = np.asarray(images, dtype=np.uint8)
    return np.repeat(images, 3, axis=-3) if images.shape[-3] == 1 else images


def sample_grid(samples: Any, columns: int = GRID_COLUMNS, gap: int = 1) -> np.ndarray:
    """Tile uint8 samples ``(n, C, S, S)`` into one ``(3, H, W)`` image, row-major, white gaps."""
    images = _rgb(samples)
    n, _, size, _ = images.shape
    step = size + gap
    grid = np.full((3, -(-n // columns) * step - gap, columns * step - gap), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[:, r * step:r * step + size, c * step:c * step + size] = image
    return grid


def _image_axes(fig: go.Figure, height: int, width: int | None = None) -> None:
    """Square pixels, y down, no ticks, in every cell of the figure."""
    fig.update_xaxes(range=[-0.5, (width or height) - 0.5], showticklabels=False, showgrid=False, ticks="",
                     constrain="domain", zeroline=False)
    fig.update_yaxes(range=[height - 0.5, -0.5], showticklabels=False, showgrid=False, ticks="", constrain="domain",
                     zeroline=False)
    fig.for_each_yaxis(lambda axis: axis.update(scaleanchor=axis.anchor or "x"))


def _image(pixels: np.ndarray, refs: dict, name: str = "") -> go.Image:
    return go.Image(source=plots.png_source(_rgb(pixels)), name=name, hoverinfo="skip", **refs)


def _caption(text: str, x: float, y: float, refs: dict, colour: str = "#222222") -> go.Scatter:
    return go.Scatter(x=[x], y=[y], text=[text], mode="text", textposition="bottom center", cliponaxis=False,
                      showlegend=False, hoverinfo="skip", textfont=dict(size=13, color=colour), **refs)


# ---- 1. ablation bars ---------------------------------------------------------------------------

def _metric_traces(results: dict, table: list[dict], metric: str) -> list[go.BaseTraceType]:
    """Bars of the mean ± std over seeds, one dot per seed, and the metric's reference line."""
    rows = [t["row"] for t in table]
    traces = [go.Bar(x=list(range(len(rows))), y=compact([t[f"{metric}_mean"] for t in table]),
                     name=METRIC_LABELS[metric], customdata=rows, showlegend=False,
                     marker=dict(color=[_colour(r, k) for k, r in enumerate(rows)], line=dict(width=0)),
                     error_y=dict(type="data", array=compact(np.nan_to_num([t[f"{metric}_std"] for t in table])),
                                  color="#333333", thickness=1.5),
                     hovertemplate="%{customdata}: %{y:.3f}<extra>mean over seeds</extra>")]
    dots = []  # (x, seed, value): a row's seeds side by side within its bar
    for k, row in enumerate(rows):
        found = [(r["seed"], float(r[metric])) for r in results["runs"][row] if r.get(metric) is not None]
        shifts = np.linspace(-0.15, 0.15, len(found)) if len(found) > 1 else [0.0]
        dots += [(k + shift, seed, value) for shift, (seed, value) in zip(shifts, found)]
    traces.append(go.Scatter(x=compact([d[0] for d in dots]), y=compact([d[2] for d in dots]), mode="markers",
                             name="one seed", customdata=[d[1] for d in dots],
                             marker=dict(color="#222222", size=7, symbol="circle-open"),
                             hovertemplate="seed %{customdata}: %{y:.3f}<extra></extra>"))
    if metric == "fd":
        floor = float(results["floor"])
        traces.append(plots.bound_trace([-0.5, len(rows) - 0.5], [floor] * 2, name=f"real vs real ({floor:.3g})"))
    if metric == "probe":  # the same probe on D before training: what the features gained
        init = [np.mean([r["probe_init"] for r in results["runs"][row] if r.get("probe_init") is not None] or [np.nan])
                for row in rows]
        traces.append(go.Scatter(x=list(range(len(rows))), y=compact(init), mode="markers", name="D at init",
                                 marker=dict(symbol="line-ew-open", size=28, color="#333333", line=dict(width=2)),
                                 hovertemplate="D at initialisation: %{y:.3f}<extra></extra>"))
    return traces


def plot_ablation(results: dict) -> go.Figure:
    """Per ablation row, the mean ± std over seeds of a metric (dropdown: only the measured ones),
    each seed a dot; the real-vs-real floor dashed under classifier-FD (log axis)."""
    table = [t for t in experiment.ablation_table(results) if t["row"] in results["runs"]]
    metrics = [m for m in experiment.METRICS if np.isfinite([t[f"{m}_mean"] for t in table]).any()]
    updates = [{"yaxis.title.text": METRIC_LABELS[m], "yaxis.type": "log" if m == "fd" else "linear",
                "yaxis.autorange": True, "title.text": f"Ablation: {METRIC_LABELS[m]}, mean ± std over "
                                                       f"{results['config']['seeds']} seed(s)"} for m in metrics]
    fig = plots.figure_with_dropdown({METRIC_LABELS[m]: _metric_traces(results, table, m) for m in metrics},
                                     layout_updates=updates, y=1.02)
    fig.update_xaxes(tickvals=list(range(len(table))), ticktext=[t["row"] for t in table], showgrid=False, ticks="",
                     title_text="ablation row (loss + attention)")
    return style(fig, height=480, margin=dict(t=120), legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 1b. result tables --------------------------------------------------------------------------

def _cell(mean: float, std: float, digits: int = 3) -> str | None:
    """``mean ± std`` for a table cell; None (a dropped column when all are) when not measured."""
    return None if not np.isfinite(mean) else tables.mean_std(mean, std, digits)


def ablation_result_table(results: dict) -> tables.ResultTable:
    """The ablation as a readable table: mean ± std over seeds per measured metric, the floor last."""
    rows = []
    for t in experiment.ablation_table(results):
        floor = t["seeds"] == 0
        rows.append(dict(row=t["row"], loss=t["loss"] or None, g=None if floor else ("yes" if t["g_attention"] else "no"),
                         d=t["d_attention"] or None, seeds=t["seeds"] or None,
                         **{m: _cell(t[f"{m}_mean"], t[f"{m}_std"], 1 if m == "fd" else 3)
                            for m in experiment.METRICS}))
    columns = {"row": "ablation row", "loss": "loss", "g": "G attention", "d": "D attention", "seeds": "seeds",
               "fd": tables.Column("classifier-FD", unit="lower is better"), "precision": "k-NN precision",
               "recall": "k-NN recall", "validity": "composition validity", "probe": "probe accuracy of D"}
    return tables.result_table(rows, columns, title="Ablation: mean ± std over seeds",
                               note="The last row is the real-vs-real floor: no generator can go below it.")


def convergence_result_table(results: dict) -> tables.ResultTable:
    """Per row: final FD, in floors, its change over the last third of training, and our verdict."""
    rows = [dict(row=c["row"], fd=c["fd"], in_floors=c["in_floors"], change=c["change"],
                 converged="yes" if c["converged"] else "no") for c in experiment.convergence_table(results)]
    columns = {"row": "ablation row", "fd": tables.Column("final classifier-FD", digits=1, unit="mean over seeds"),
               "in_floors": tables.Column("FD / floor", digits=1),
               "change": tables.Column("FD change over the last third", percent=True, digits=3),
               "converged": "converged"}
    return tables.result_table(rows, columns, title="Convergence check (ours)",
                               note=f"A row has converged when its seed-mean FD curve moved by at most "
                                    f"±{100 * experiment.CONVERGENCE_TOL:.0f} % over the last third of training "
                                    f"(a least-squares line through the checkpoints there) or ended within "
                                    f"{experiment.FLOOR_FACTOR:g}× the real-vs-real floor.")


def ring_result_table(results: dict) -> tables.ResultTable:
    """Per ring loss: modes covered per seed, their mean ± std, and the high-quality share."""
    rows = [dict(loss=t["loss"], modes=", ".join(str(m) for m in t["modes"]), mean=_cell(t["modes_mean"], t["modes_std"], 2),
                 quality=t["high_quality_mean"]) for t in experiment.ring_table(results)]
    columns = {"loss": "loss", "modes": "modes covered per seed (of 8)", "mean": "modes, mean ± std",
               "quality": tables.Column("high-quality samples", percent=True, digits=3)}
    return tables.result_table(rows, columns, title="The 8-Gaussian ring at the last checkpoint")


# ---- 2. classifier-FD during training ------------------------------------------------------------

def _row_line(x: Any, series: list[list[float]], *, name: str, colour: str, refs: dict | None = None,
              showlegend: bool = True) -> list[go.Scatter]:
    """The mean over seeds of ``series`` (on the steps every seed logged), with a ± std band when
    there is more than one seed."""
    values = np.asarray([s[:min(map(len, series))] for s in series], dtype=float)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    traces = plots.band_traces(x[:values.shape[1]], values.mean(0), std, name=name, colour=colour, refs=refs,
                               showlegend=showlegend)
    return traces if len(values) > 1 else traces[1:]


def plot_fd_curves(results: dict) -> go.Figure:
    """Classifier-FD against the training step, one line per row (mean ± std band over seeds), the
    real-vs-real floor dashed; log y axis."""
    fig = go.Figure()
    for k, (row, entries) in enumerate(results["runs"].items()):
        fig.add_traces(_row_line(entries[0]["curve"]["step"], [r["curve"]["fd"] for r in entries], name=row,
                                 colour=_colour(row, k)))
    floor, steps = float(results["floor"]), results["config"]["steps"]
    fig.add_trace(plots.bound_trace([0, steps], [floor] * 2, name=f"real vs real ({floor:.3g})"))
    factor = experiment.FLOOR_FACTOR
    fig.add_trace(plots.bound_trace([0, steps], [factor * floor] * 2, name=f"{factor:g}× the floor", dash="dot"))
    # where our convergence check reads the curves
    fig.add_vrect(x0=steps * (1 - experiment.CONVERGENCE_WINDOW), x1=steps, fillcolor="#888888", opacity=0.12,
                  line_width=0, annotation_text="convergence window", annotation_position="top left")
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="classifier-FD", type="log")
    return style(fig, title="Classifier-FD during training (band: ± std over seeds)", height=440,
                 legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 3. sample grids ----------------------------------------------------------------------------

def plot_samples(results: dict) -> go.Figure:
    """The 36 stored samples of every row as 6 × 6 grids side by side (at most 4 to a line), each
    captioned with its classifier-FD; a slider picks the seed."""
    rows = _rows(results)
    cols = min(len(rows), 4)
    lines = -(-len(rows) // cols)
    fig = make_subplots(rows=lines, cols=cols, subplot_titles=rows, horizontal_spacing=0.02,
                        vertical_spacing=0.12 if lines > 1 else 0.0)
    refs = [subplot_refs(fig, 1 + k // cols, 1 + k % cols) for k in range(len(rows))]
    height, width = sample_grid(results["runs"][rows[0]][0]["samples"]).shape[1:]
    steps = []
    for k, seed in enumerate(r["seed"] for r in results["runs"][rows[0]]):
        runs = [results["runs"][row][k] for row in rows]
        steps.append((str(seed), [trace for run, row, ref in zip(runs, rows, refs) for trace in (
            _image(sample_grid(run["samples"]), ref, row),
            _caption(f"classifier-FD {run['fd']:.3g}", (width - 1) / 2, height, ref))]))
    fig = plots.figure_with_slider(steps, fig=fig, prefix="seed: ")
    _image_axes(fig, height, width)
    fig.update_yaxes(range=[1.1 * height, -0.5])  # room for the caption under each grid
    return style(fig, title=f"Samples after {results['config']['steps']} steps (fixed latents)",
                 height=120 + 330 * lines, margin=dict(t=90, b=100))


# ---- 4. logit histograms ------------------------------------------------------------------------

def _histogram_traces(hist: dict, logits: dict[str, np.ndarray], top: float, x_mid: float) -> list:
    """Bars of the real and fake counts, a dashed line at each mean, and a caption of the means."""
    edges = np.asarray(hist["edges"], float)
    centres, width = (edges[1:] + edges[:-1]) / 2, float(edges[1] - edges[0])
    means = {kind: float(np.mean(values)) for kind, values in logits.items()}
    traces = [go.Bar(x=compact(centres), y=compact(hist[kind]), width=width, name=f"{kind} logits",
                     marker=dict(color=LOGIT_COLOURS[kind], opacity=0.6, line=dict(width=0)), legendgroup=kind,
                     hovertemplate=f"{kind}: %{{y}} at %{{x:.2f}}<extra></extra>") for kind in logits]
    traces += [go.Scatter(x=compact([mean, mean]), y=[LOG_BOTTOM, top], mode="lines", name=f"mean {kind}",
                          legendgroup=kind, showlegend=False, line=dict(color=LOGIT_COLOURS[kind], dash="dash"),
                          hovertemplate=f"mean {kind} logit %{{x:.3f}}<extra></extra>") for kind, mean in means.items()]
    text = f"step {hist['step']}: mean real {means['real']:+.3f}, mean fake {means['fake']:+.3f}"
    return traces + [_caption(text, x_mid, 1.4 * top, {})]


def plot_logit_histograms(results: dict, bins: int = 40) -> go.Figure:
    """Histograms of D's raw logits on 256 fixed reals and fakes at each checkpoint (slider), one row
    at a time (dropdown); dashed: the means. The x axis spans all checkpoints of the row, so a common
    drift of both (which the DCL loss cannot see) moves the histograms; log counts, because the
    untrained D's logits at step 0 pile into a few bins."""
    rows = _rows(results)
    made, updates = {}, []
    for row in rows:
        run = results["runs"][row][0]
        hists = experiment.logit_histograms(run, bins)
        lo, hi = min(float(h["edges"][0]) for h in hists), max(float(h["edges"][-1]) for h in hists)
        top = 1.1 * max(int(np.max(h[kind])) for h in hists for kind in LOGIT_COLOURS)
        made[row] = [_histogram_traces(h, {kind: run["logits"][kind][k] for kind in LOGIT_COLOURS}, top, (lo + hi) / 2)
                     for k, h in enumerate(hists)]
        updates.append({"xaxis.range": [lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)],
                        "yaxis.range": [np.log10(LOG_BOTTOM), np.log10(1.5 * top)],
                        "title.text": f"D's logits on fixed reals and fakes: {row}, seed {run['seed']}"})
    fig = plots.figure_with_dropdown({row: made[row][0] for row in rows}, layout_updates=updates, y=1.04)
    moving = ("x", "y", "width", "text")  # what a checkpoint changes in a bar, mean line or caption
    steps = [(str(step), [{key: value for key, value in trace.to_plotly_json().items() if key in moving}
                          for row in rows for trace in made[row][k]])
             for k, step in enumerate(results["runs"][rows[0]][0]["logits"]["step"])]
    # opens on the last checkpoint: the trained D is what the section is about
    plots.figure_with_frames(fig, steps, active=len(steps) - 1, prefix="training step: ")
    fig.update_xaxes(title_text="D's logit (raw)")
    fig.update_yaxes(title_text="count (of 256, log)", type="log")
    return style(fig, height=480, barmode="overlay", bargap=0, margin=dict(t=110),
                 legend=dict(x=1.02, y=1, xanchor="left"))


# ---- 5–6. attention maps ------------------------------------------------------------------------

def query_grid(resolution: int) -> list[tuple[int, int]]:
    """A 3×3 grid of query cells ``(y, x)`` on a ``resolution`` × ``resolution`` attention grid."""
    ticks = [int(resolution * f) for f in QUERY_FRACTIONS]
    return [(y, x) for y in ticks for x in ticks]


def _cell_centre(index: int, scale: float) -> float:
    """Pixel coordinate of the centre of attention cell ``index`` (cells ``scale`` pixels wide)."""
    return (index + 0.5) * scale - 0.5


def _attention_traces(primary: np.ndarray, keys_image: np.ndarray, weights: np.ndarray, resolution: int,
                      left: dict, right: dict) -> list[go.BaseTraceType]:
    """The primary image; the image the keys live in, under a heatmap of one query's weights (r²,)."""
    scale = primary.shape[-1] / resolution
    return [_image(primary, left), _image(keys_image, right),
            go.Heatmap(z=compact(weights.reshape(resolution, resolution)), x0=_cell_centre(0, scale), dx=scale,
                       y0=_cell_centre(0, scale), dy=scale, colorscale="Inferno", opacity=0.65,
                       colorbar=dict(title=dict(text="attention weight", side="right"), thickness=14, len=0.8),
                       hovertemplate="key (%{x:.0f}, %{y:.0f}) px: %{z:.4f}<extra></extra>", **right)]


def _query_marker(query: tuple[int, int], scale: float, refs: dict) -> go.Scatter:
    return go.Scatter(x=[_cell_centre(query[1], scale)], y=[_cell_centre(query[0], scale)], mode="markers",
                      marker=MARKER, name="query", showlegend=False, hoverinfo="skip", **refs)


def _attention_figure(groups: dict[str, tuple], resolution: int, titles: dict[str, str],
                      key_titles: dict[str, str], mark_keys: bool) -> go.Figure:
    """``groups``: label → (primary, keys image, maps (r², r²)); a dropdown picks the group, a
    slider (animation frames) the query, marked on the primary (and on the keys when
    ``mark_keys``: self-attention, where the keys are the primary's own positions)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06, subplot_titles=["query image", "keys"])
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    size = next(iter(groups.values()))[0].shape[-1]
    scale, queries = size / resolution, query_grid(resolution)
    markers = [left, right] if mark_keys else [left]
    fig.add_traces([_query_marker(queries[0], scale, refs) for refs in markers])
    first = resolution * queries[0][0] + queries[0][1]
    fig = plots.figure_with_dropdown(
        {label: _attention_traces(p, k, maps[first], resolution, left, right)
         for label, (p, k, maps) in groups.items()},
        fig=fig, y=1.08, layout_updates=[{"title.text": titles[label], "annotations[1].text": key_titles[label]}
                                         for label in groups])
    steps = [(f"({x}, {y})", [{"x": [_cell_centre(x, scale)], "y": [_cell_centre(y, scale)]}] * len(markers)
              + [{"z": compact(maps[resolution * y + x].reshape(resolution, resolution))} for _, _, maps in
                 groups.values()]) for y, x in queries]
    heatmaps = [i for i, trace in enumerate(fig.data) if isinstance(trace, go.Heatmap)]
    plots.figure_with_frames(fig, steps, traces=[*range(len(markers)), *heatmaps],
                             prefix=f"query cell (x, y) on the {resolution}² grid: ")
    _image_axes(fig, size)
    return style(fig, height=520, margin=dict(t=140, r=110))


def load_generator(run: dict) -> ImageGenerator:
    """The run's stored generator, in eval mode (BatchNorm on running statistics)."""
    spec = run["generator"]["spec"]
    G = ImageGenerator(**{k: v for k, v in spec.items() if k != "attention"},
                       attention=SelfAttention2d if spec["attention"] else None)
    G.load_state_dict(run["generator"]["state"])
    return G.eval()


def generate(G: ImageGenerator, latent_seed: int, num_images: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images ``(n, C, S, S)`` from latents drawn with ``latent_seed``, and G's attention maps
    ``(n, r², r²)`` at ``r = S/2`` (None without attention)."""
    z = torch.randn(num_images, G.latent_dim, generator=torch.Generator().manual_seed(int(latent_seed)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few small images gain nothing from threads, and a busy machine made them 30× slower
    try:
        with torch.no_grad():
            images = (G(z).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            maps = None if G.attention is None else G.attention.attention_map(G.features_before_attention(z)).numpy()
    finally:
        torch.set_num_threads(threads)
    return images, maps


def plot_g_attention(results: dict, latent_seed: int = 0) -> go.Figure:
    """G's self-attention at S/2: for 4 generated images (fixed latents) of each row with G attention
    (dropdown), the weights of one query cell (slider, marked) over every key position."""
    rows = _rows(results, "G attention")
    title = "Self-attention in the generator"
    if not rows:
        return plots.plot_message(_needs("G attention"), title=title)
    groups, titles = {}, {}
    for row in rows:
        run = results["runs"][row][0]
        G = load_generator(run)
        images, maps = generate(G, latent_seed, NUM_ATTENTION_IMAGES)
        gamma = float(G.attention.gamma.detach())  # the gate: how much of the attention G mixes in
        for k in range(NUM_ATTENTION_IMAGES):
            groups[f"{row} · image {k + 1}"] = (images[k], images[k], maps[k])
            titles[f"{row} · image {k + 1}"] = f"{title}: {row}, seed {run['seed']} (gate γ = {gamma:.3g})"
    return _attention_figure(groups, G.attention_resolution, titles,
                             dict.fromkeys(groups, "weights over key positions"), mark_keys=True)


def plot_d_attention(results: dict) -> go.Figure:
    """D's attention on its 8×8 trunk grid for a real and a fake primary (dropdown, with the row):
    one query cell's weights (slider, marked on the primary) over the reference image's positions
    (reference attention) or the primary's own (self-attention)."""
    rows = _rows(results, "D attention")
    title = "Attention in the discriminator"
    if not rows:
        return plots.plot_message(_needs("D attention"), title=title)
    groups, titles, key_titles = {}, {}, {}
    for row in rows:
        run = results["runs"][row][0]
        d_maps, own = run["d_maps"], run["d_maps"]["kind"] == "self"
        for k, primary in enumerate(("real", "fake")):
            label = f"{row} · {primary} primary"
            keys = d_maps["primary"][k] if own else d_maps["reference"]
            groups[label] = (np.asarray(d_maps["primary"][k]), np.asarray(keys), np.asarray(d_maps["maps"][k]))
            titles[label] = f"{title}: {row} ({d_maps['kind']}), seed {run['seed']} (gate γ = {d_maps['gamma']:.3g})"
            key_titles[label] = "keys: the primary itself" if own else "keys: a real reference image"
    return _attention_figure(groups, TRUNK_RESOLUTION, titles, key_titles, mark_keys=False)


# ---- 7. the ring --------------------------------------------------------------------------------

def plot_ring(results: dict) -> go.Figure:
    """Where NS and DCL generators put 2,500 samples on the 8-Gaussian ring (log counts), at each
    checkpoint (slider), one seed at a time (dropdown); the mode centres marked."""
    ring = {loss: (results.get("ring") or {}).get(loss) or [] for loss in experiment.RING_LOSSES}
    title = "The 8-Gaussian ring: NS against DCL"
    if not all(ring.values()):
        return plots.plot_message("no ring runs in these results (ring_steps = 0)", title=title)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=["NS loss", "DCL loss"])
    refs = [subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)]
    centres = mixture_centres("ring").numpy()
    fig.add_traces([go.Scatter(x=compact(centres[:, 0]), y=compact(centres[:, 1]), mode="markers", name="modes",
                               marker=dict(symbol="circle-open", size=14, color="#FFFFFF", line=dict(width=1.5)),
                               hoverinfo="skip", showlegend=False, **ref) for ref in refs])
    first = ring["ns"][0]
    extent = float(first["extent"])
    width = 2 * extent / np.asarray(first["heatmaps"]).shape[-1]

    def traces(pair: tuple[dict, dict], k: int) -> list[go.BaseTraceType]:
        """Both losses' heatmaps at checkpoint ``k``, then their captions."""
        maps = [go.Heatmap(z=plots.log_count_levels(run["heatmaps"][k]), x0=-extent + width / 2, dx=width,
                           y0=-extent + width / 2, dy=width, coloraxis="coloraxis",
                           hovertemplate="(%{x:.2f}, %{y:.2f})<extra></extra>", **ref) for run, ref in zip(pair, refs)]
        return maps + [_caption(f"{run['modes_covered'][k]}/8 modes · {run['high_quality'][k]:.0%} high quality", 0,
                                0.97 * extent, ref, "#FFFFFF") for run, ref in zip(pair, refs)]

    pairs = list(zip(ring["ns"], ring["dcl"]))
    fig = plots.figure_with_dropdown({f"seed {ns['seed']}": traces((ns, dcl), 0) for ns, dcl in pairs}, fig=fig,
                                     y=1.08)
    steps = [(str(step), [{"z": t.z} if isinstance(t, go.Heatmap) else {"text": t.text}
                          for pair in pairs for t in traces(pair, k)])
             for k, step in enumerate(first["checkpoint_steps"])]
    plots.figure_with_frames(fig, steps, traces=range(len(refs), len(fig.data)), active=len(steps) - 1,
                             prefix="training step: ")
    peak = max(float(np.max(r["heatmaps"])) for runs in ring.values() for r in runs)
    fig.update_layout(coloraxis=plots.log_count_coloraxis(peak, title="samples"))
    fig.update_xaxes(range=[-extent, extent], showgrid=False, constrain="domain")
    fig.update_yaxes(range=[-extent, extent], showgrid=False, constrain="domain")
    fig.for_each_yaxis(lambda axis: axis.update(scaleanchor=axis.anchor))
    return style(fig, title=title, height=520, margin=dict(t=140))


# ---- 8. losses ----------------------------------------------------------------------------------

LOSS_PANELS = {"d_loss": "D loss", "g_loss": "G loss", "mean_logit": "D's mean logit on reals"}


def plot_losses(results: dict) -> go.Figure:
    """D loss, G loss and D's mean logit on reals during training, one line per row (mean over seeds):
    the DCL losses cannot see a common shift of the logits, so their mean logit is free to drift."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=list(LOSS_PANELS.values()))
    for k, (row, entries) in enumerate(results["runs"].items()):
        for col, key in enumerate(LOSS_PANELS, start=1):
            series = [r["history"][key] for r in entries if key in r["history"]]
            if series:
                fig.add_traces(_row_line(series[0]["step"], [s["value"] for s in series], name=row,
                                         colour=_colour(row, k), refs=subplot_refs(fig, 1, col), showlegend=col == 1))
    fig.update_xaxes(title_text="training step")
    return style(fig, title="Training losses and D's mean logit (logged every 10 steps)", height=420,
                 legend=dict(orientation="h", x=0, y=-0.22, yanchor="top"), margin=dict(b=120))


# ---- 9. live explorers --------------------------------------------------------------------------

def _generators(results: dict) -> Callable[[str], ImageGenerator]:
    """``row -> generator`` of the row's first seed, built once: a control change rebuilds nothing."""
    @functools.lru_cache(maxsize=None)
    def get(row: str) -> ImageGenerator:
        if not results["runs"].get(row):
            raise ValueError(f"no trained row {row!r}; these results have: {', '.join(_rows(results))}")
        return load_generator(results["runs"][row][0])
    return get


def g_attention_explorer(results: dict) -> widgets.Explorer:
    """Live: a row with G attention, a latent seed and a query cell → a fresh sample with the query
    marked, and that query's attention weights over the image."""
    rows = _rows(results, "G attention")
    if not rows:
        message = _needs("G attention")
        return widgets.explorer({}, lambda: widgets.Message(message), title="G's self-attention, live")
    get = _generators(results)
    resolution = get(rows[0]).attention_resolution

    def render(row: str, latent_seed: int, query_x: int, query_y: int) -> go.Figure:
        if row not in rows:
            raise ValueError(f"row {row!r} has no G attention; choose one of {', '.join(rows)}")
        if not (0 <= query_x < resolution and 0 <= query_y < resolution):
            raise ValueError(f"the query ({query_x}, {query_y}) is off the {resolution}×{resolution} attention grid")
        images, maps = generate(get(row), latent_seed, 1)
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06,
                            subplot_titles=["generated image", "attention weights of the query"])
        left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
        fig.add_traces(_attention_traces(images[0], images[0], maps[0, resolution * query_y + query_x], resolution,
                                         left, right))
        scale = images.shape[-1] / resolution
        fig.add_traces([_query_marker((query_y, query_x), scale, refs) for refs in (left, right)])
        _image_axes(fig, images.shape[-1])
        return style(fig, height=460, margin=dict(t=90, r=110), title=f"{row}, latent seed {latent_seed}: query "
                     f"({query_x}, {query_y}), gate γ = {float(get(row).attention.gamma.detach()):.3g}")

    controls = {"row": widgets.dropdown("row", rows), "latent_seed": widgets.int_slider("latent seed", 0, 0, 999),
                "query_x": widgets.int_slider("query x", resolution // 2, 0, resolution - 1),
                "query_y": widgets.int_slider("query y", resolution // 2, 0, resolution - 1)}
    return widgets.explorer(controls, render, title="G's self-attention, live")


def sample_explorer(results: dict) -> widgets.Explorer:
    """Live: a row and a latent seed → a fresh 6 × 6 grid from the row's stored generator."""
    rows, get = _rows(results), _generators(results)

    def render(row: str, latent_seed: int) -> go.Figure:
        grid = sample_grid(generate(get(row), latent_seed, GRID_COLUMNS ** 2)[0])
        fig = go.Figure(_image(grid, {}, row))
        _image_axes(fig, grid.shape[1], grid.shape[2])
        seed = results["runs"][row][0]["seed"]
        return style(fig, height=520, title=f"{row} (trained with seed {seed}), latent seed {latent_seed}")

    controls = {"row": widgets.dropdown("row", rows), "latent_seed": widgets.int_slider("latent seed", 0, 0, 999)}
    return widgets.explorer(controls, render, title="Sample the trained generators")

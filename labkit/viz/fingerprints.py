"""Chapter 04 (scalable GAN fingerprinting): the paper's views as plotly figures with static controls,
plus a live bit-toggle explorer that runs the stored generator and decoder.

Figures take the results of ``labkit.experiments.fingerprints.run`` and work at every budget:
curves against step (metric dropdown), bit accuracy against d_c, the ablation bars (metric
dropdown), single-bit flips of one fingerprint (slider: the image, the decoded bits green/red and
the ×10 difference map against the all-zeros fingerprint), the "same z, different c" and "same c,
different z" grids (dropdown), robustness curves and the perturbed images (strength slider), the
Hamming-distance histogram and the attribution confusion.
"""
from __future__ import annotations

import ipywidgets
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.experiments import fingerprints as experiment
from labkit.experiments import fingerprints_runs as runs
from labkit.methods import fingerprints as fp
from labkit.viz import plots, tables, widgets
from labkit.viz.plots import PALETTE, compact, style, subplot_refs

ROW_COLOURS = {experiment.MAIN: "#F28E2B", experiment.UNFINGERPRINTED: "#5F7A9A", "λ_const = 0": "#E15759",
               "λ_z = 0": "#B07AA1", "c concatenated to z": "#59A14F", "modulation at 4² only": "#76B7B2",
               "no R1": "#9C755F"}
CURVE_METRICS = {"bit_accuracy": "bit accuracy", "fd": "classifier-FD (lower is better)",
                 "same_z": "same-z difference |G(z, c) − G(z, c′)|"}
GRID = 6
GREEN, RED = "#2CA02C", "#D62728"
DIFF_GAIN = 10  # the ×10 difference map
BELOW = dict(orientation="h", x=0, xanchor="left", y=-0.18, yanchor="top")  # a legend under the plot


def _colour(row: str, index: int = 0) -> str:
    return ROW_COLOURS.get(row, PALETTE[index % len(PALETTE)])


# ---- images -------------------------------------------------------------------------------------

def _pixels(x: torch.Tensor) -> np.ndarray:
    """G's units ``(n, 1, S, S)`` → uint8 ``(n, S, S)``."""
    return (runs.to_unit(x)[:, 0] * 255).round().to(torch.uint8).numpy()


def tile(images: np.ndarray, columns: int = GRID, gap: int = 1) -> np.ndarray:
    """uint8 ``(n, S, S)`` → one ``(3, H, W)`` grid, row-major, white gaps."""
    n, size, _ = images.shape
    step = size + gap
    grid = np.full((-(-n // columns) * step - gap, columns * step - gap), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * step:r * step + size, c * step:c * step + size] = image
    return np.repeat(grid[None], 3, axis=0)


def _image(pixels: np.ndarray, refs: dict | None = None, name: str = "") -> go.Image:
    rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[None], 3, axis=0)
    return go.Image(source=plots.png_source(rgb), name=name, hoverinfo="skip", **(refs or {}))


def _image_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="", zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, ticks="", zeroline=False, constrain="domain")
    fig.for_each_yaxis(lambda axis: axis.update(scaleanchor=axis.anchor or "x"))


# ---- the stored nets ----------------------------------------------------------------------------

_NETS: dict[int, tuple] = {}  # id of a run's state → (the state, kept alive so the id stays its own; the nets)


def main_nets(results: dict):
    """``(G, F)`` of the main row's first seed, rebuilt once per run."""
    entry = results["runs"][experiment.MAIN][0]
    key = id(entry["state"])
    if key not in _NETS:
        _NETS[key] = (entry["state"], runs.load_nets(entry["spec"], entry["state"]))
    return _NETS[key][1]


def _latents(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, runs.LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def _codes(seed: int, n: int, d_c: int) -> torch.Tensor:
    return fp.sample_fingerprints(n, d_c, torch.Generator().manual_seed(seed + 1))


# ---- 1. curves against step ---------------------------------------------------------------------

def _curve_traces(results: dict, metric: str) -> list:
    traces = []
    rows = [r for r in results["runs"] if not r.startswith("d_c")]
    for index, row in enumerate(rows):
        entries = results["runs"][row]
        length = min(len(e["curve"]["step"]) for e in entries)
        values = np.array([e["curve"][metric][:length] for e in entries], dtype=float)
        if not np.isfinite(values).any():
            continue
        std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(length)
        traces += plots.band_traces(entries[0]["curve"]["step"][:length], values.mean(0), std,
                                    name=f"{row} ({len(entries)} seed{'s' * (len(entries) > 1)})",
                                    colour=_colour(row, index))
    steps = results["runs"][experiment.MAIN][0]["curve"]["step"]
    if metric == "fd":
        traces.append(plots.bound_trace([0, steps[-1]], [results["floor"]] * 2, name="real vs real (floor)"))
    if metric == "bit_accuracy":
        traces.append(plots.bound_trace([0, steps[-1]], [0.5, 0.5], name="chance", dash="dot"))
    return traces


def plot_curves(results: dict) -> go.Figure:
    """Bit accuracy, classifier-FD and the same-z difference against step (dropdown), mean ± std."""
    groups = {label: _curve_traces(results, metric) for metric, label in CURVE_METRICS.items()}
    updates = [dict(yaxis=dict(title_text=label, type="log" if metric == "fd" else "linear"))
               for metric, label in CURVE_METRICS.items()]
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.08)
    fig.update_xaxes(title_text="training step")
    return style(fig, height=560, margin=dict(t=110), legend=BELOW, title="During training (mean ± std over seeds)")


# ---- 2. capacity ----------------------------------------------------------------------------------

def plot_capacity(results: dict) -> go.Figure:
    """Bit accuracy at ``short_steps`` against d_c, mean ± std over seeds, one dot per seed."""
    table = experiment.capacity_table(results)
    dims = [t["fingerprint_dim"] for t in table]
    fig = go.Figure([plots.errorbar_trace(dims, [t["bit_accuracy_mean"] for t in table],
                                          [t["bit_accuracy_std"] for t in table], name="mean ± std", colour="#F28E2B")])
    dots = [(t["fingerprint_dim"], v) for t in table for v in t["per_seed"]]
    fig.add_trace(go.Scatter(x=[d for d, _ in dots], y=compact([v for _, v in dots], 4), mode="markers",
                             name="one seed", marker=dict(color="#222222", size=7, symbol="circle-open")))
    fig.add_trace(plots.bound_trace([dims[0], dims[-1]], [0.5, 0.5], name="chance", dash="dot"))
    fig.update_xaxes(title_text="fingerprint bits d_c", type="log", tickvals=dims, ticktext=[str(d) for d in dims])
    fig.update_yaxes(title_text="bit accuracy")
    return style(fig, height=420, title=f"Capacity: bit accuracy after {results['config']['short_steps']} steps")


# ---- 3. ablation bars -----------------------------------------------------------------------------

def plot_ablation(results: dict) -> go.Figure:
    """The ablation rows at ``short_steps`` (metric dropdown): bars of the mean, ± std whiskers."""
    table = experiment.ablation_table(results)
    if len(table) < 2:
        return plots.plot_message(f"No ablation row ran at this budget: the full budget runs {', '.join(experiment.ABLATIONS)}"
                                  " (or pass ablations=... to ex.from_budget).", title="Ablations")
    rows = [t["row"] for t in table]
    groups = {}
    for metric, label in CURVE_METRICS.items():
        groups[label] = [go.Bar(y=rows, x=compact([t[f"{metric}_mean"] for t in table]), orientation="h",
                                showlegend=False, marker=dict(color=[_colour(r, k) for k, r in enumerate(rows)]),
                                error_x=dict(type="data", array=compact(np.nan_to_num([t[f"{metric}_std"] for t in table])),
                                             color="#333333", thickness=1.5),
                                customdata=[t["seeds"] for t in table],
                                hovertemplate="%{y}: %{x:.3f} (%{customdata} seed(s))<extra></extra>")]
    updates = [dict(xaxis=dict(title_text=label)) for label in CURVE_METRICS.values()]
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.08)
    fig.update_yaxes(autorange="reversed")
    return style(fig, height=460, margin=dict(t=110, l=170),
                 title=f"Ablations after {results['config']['short_steps']} steps (mean ± std over seeds)")


def _cell(mean: float, std: float, digits: int = 3) -> str | None:
    return None if not np.isfinite(mean) else tables.mean_std(mean, std, digits)


def ablation_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(row=t["row"], seeds=t["seeds"], bits=_cell(t["bit_accuracy_mean"], t["bit_accuracy_std"]),
                 same=_cell(t["same_z_mean"], t["same_z_std"], 4), fd=_cell(t["fd_mean"], t["fd_std"], 1))
            for t in experiment.ablation_table(results)]
    return tables.result_table(rows, {"row": "row", "seeds": "seeds", "bits": "bit accuracy",
                                      "same": "same-z difference", "fd": "classifier-FD"},
                               title=f"Ablations after {results['config']['short_steps']} steps (mean ± std)",
                               note="The fingerprinted G's row is the main run's checkpoint at the same step.")


def capacity_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(dim=t["fingerprint_dim"], models=t["models"], seeds=t["seeds"],
                 bits=_cell(t["bit_accuracy_mean"], t["bit_accuracy_std"]), fd=_cell(t["fd_mean"], np.nan, 1))
            for t in experiment.capacity_table(results)]
    return tables.result_table(rows, {"dim": "d_c", "models": "distinct models", "seeds": "seeds",
                                      "bits": "bit accuracy", "fd": "classifier-FD (mean)"},
                               title=f"Capacity after {results['config']['short_steps']} steps")


def main_result_table(results: dict) -> tables.ResultTable:
    rows = []
    for t in experiment.main_table(results):
        rows.append(dict(row=t["row"], seeds=t["seeds"] or None,
                         bits=_cell(t.get("bit_accuracy_mean", np.nan), t.get("bit_accuracy_std", np.nan)),
                         fd=_cell(t["fd_mean"], t["fd_std"], 2),
                         attribution=_cell(t.get("attribution_mean", np.nan), t.get("attribution_std", np.nan)),
                         tpr=_cell(t.get("tpr_mean", np.nan), t.get("tpr_std", np.nan)),
                         fpr=_cell(t.get("fpr_mean", np.nan), t.get("fpr_std", np.nan)),
                         real=_cell(t.get("real_bit_accuracy_mean", np.nan), t.get("real_bit_accuracy_std", np.nan))))
    columns = {"row": "row", "seeds": "seeds", "bits": "bit accuracy", "fd": "classifier-FD",
               "attribution": "attribution (100 models)", "tpr": "detection TPR", "fpr": "detection FPR (reals)",
               "real": "bit accuracy of real digits"}
    return tables.result_table(rows, columns, title=f"After {results['config']['steps']} steps (mean ± std over seeds)",
                               note="The last row is the real-vs-real floor.")


# ---- 4. single-bit flips (static) and the live bit toggles -----------------------------------------

@torch.no_grad()
def flip_panels(G, F_net, z: torch.Tensor, c: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one ``z (1, d_z)`` and ``c (1, d_c)``: the image (uint8 S×S), per bit whether it decodes
    right ``(d_c,)`` and ×10 |G(z, c) − G(z, 0)| as uint8 S×S."""
    x = G(z, c)
    zero = G(z, torch.zeros_like(c))
    correct = (fp.decode_bits(F_net(x)[1]) == c)[0].numpy()
    diff = (DIFF_GAIN * (x - zero).abs()[0, 0] / 2).clamp(0, 1)  # G's units span 2
    return _pixels(x)[0], correct, (255 * (1 - diff)).round().to(torch.uint8).numpy()


def _flip_traces(fig: go.Figure, image: np.ndarray, correct: np.ndarray, diff: np.ndarray, c: np.ndarray) -> list:
    bits = go.Heatmap(z=[correct.astype(int).tolist()], text=[[str(int(b)) for b in c]], texttemplate="%{text}",
                      colorscale=[[0, RED], [1, GREEN]], zmin=0, zmax=1, showscale=False, xgap=2,
                      hovertemplate="bit %{x}: %{text}<extra></extra>", **subplot_refs(fig, 2, 1))
    return [_image(image, subplot_refs(fig, 1, 1)), _image(np.repeat(diff[None], 3, 0), subplot_refs(fig, 1, 2)), bits]


def _flip_figure(d_c: int) -> go.Figure:
    fig = make_subplots(rows=2, cols=2, specs=[[{}, {}], [{"colspan": 2}, None]], row_heights=[0.8, 0.2],
                        vertical_spacing=0.08, subplot_titles=["G(z, c)", f"×{DIFF_GAIN} |G(z, c) − G(z, 0)| (dark: changed)",
                                                               "decoded bits (green right, red wrong)"])
    fig.update_xaxes(showticklabels=False, showgrid=False, row=1)
    fig.update_yaxes(showticklabels=False, showgrid=False, row=1)
    fig.for_each_yaxis(lambda axis: axis.update(scaleanchor=axis.anchor) if axis.anchor in ("x", "x2") else None)
    fig.update_yaxes(showticklabels=False, row=2, col=1)
    fig.update_xaxes(title_text="bit", dtick=1 if d_c <= 32 else 8, row=2, col=1)
    return fig


def plot_bit_flips(results: dict, latent_seed: int = 0) -> go.Figure:
    """One z and one fingerprint c; a slider flips one bit at a time (the static stand-in for the
    live toggles)."""
    G, F_net = main_nets(results)
    d_c = G.fingerprint_dim
    z, c = _latents(latent_seed, 1), _codes(latent_seed, 1, d_c)
    fig = _flip_figure(d_c)
    steps = []
    for k in range(-1, d_c):
        code = c.clone()
        if k >= 0:
            code[0, k] = 1 - code[0, k]
        steps.append(("none" if k < 0 else str(k), _flip_traces(fig, *flip_panels(G, F_net, z, code), code[0].numpy())))
    fig = plots.figure_with_slider(steps, fig=fig, prefix="flipped bit: ")
    return style(fig, height=560, title=f"One fingerprint, one bit flipped at a time (d_c = {d_c}, seed "
                                        f"{results['runs'][experiment.MAIN][0]['seed']})")


def bit_toggle_explorer(results: dict) -> widgets.Explorer:
    """Live: a toggle per bit and a latent seed → the image, the decoded bits and the ×10 difference."""
    G, F_net = main_nets(results)
    d_c = G.fingerprint_dim
    start = _codes(0, 1, d_c)[0]
    controls = {f"bit_{k}": ipywidgets.ToggleButton(value=bool(start[k]), description=str(k),
                                                    layout=ipywidgets.Layout(width="42px"))
                for k in range(d_c)}
    controls["latent_seed"] = widgets.int_slider("latent seed", 0, 0, 999)

    def render(latent_seed: int, **bits: bool) -> go.Figure:
        c = torch.tensor([[float(bits[f"bit_{k}"]) for k in range(d_c)]])
        fig = _flip_figure(d_c)
        fig.add_traces(_flip_traces(fig, *flip_panels(G, F_net, _latents(latent_seed, 1), c), c[0].numpy()))
        return style(fig, height=520, title=f"c = {''.join(str(int(b)) for b in c[0])}, latent seed {latent_seed}")

    return widgets.explorer(controls, render, title="Toggle the fingerprint's bits")


# ---- 5. the two diagnostic grids -------------------------------------------------------------------

@torch.no_grad()
def plot_grids(results: dict, latent_seed: int = 0) -> go.Figure:
    """"Same z, different c" (each row one z, columns different fingerprints) and "same c,
    different z" (each row one c): only the second should change the content."""
    G, _ = main_nets(results)
    z, c = _latents(latent_seed, GRID), _codes(latent_seed, GRID, G.fingerprint_dim)
    same_z = _pixels(G(z.repeat_interleave(GRID, 0), c.repeat(GRID, 1)))  # row i: z_i with c_0..c_5
    same_c = _pixels(G(z.repeat(GRID, 1), c.repeat_interleave(GRID, 0)))  # row i: c_i with z_0..z_5
    groups = {"same z per row, a different c per column": [_image(tile(same_z), name="same z")],
              "same c per row, a different z per column": [_image(tile(same_c), name="same c")]}
    fig = plots.figure_with_dropdown(groups, y=1.04)
    _image_axes(fig)
    return style(fig, height=560, margin=dict(t=100), title="What the fingerprint changes, and what z changes")


# ---- 6. robustness -----------------------------------------------------------------------------------

ROBUSTNESS_LABELS = {"noise": "Gaussian noise σ", "blur": "blur σ (pixels)", "jpeg": "JPEG quality",
                     "shift": "shift (pixels)"}


def plot_robustness(results: dict) -> go.Figure:
    """Bit accuracy against the strength of each post-processing (mean ± std over seeds)."""
    found = [a["robustness"] for a in experiment.analyses(results)]
    kinds = list(runs.PERTURBATIONS)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[ROBUSTNESS_LABELS[k] for k in kinds],
                        shared_yaxes=True, horizontal_spacing=0.04)
    for col, kind in enumerate(kinds, start=1):
        values = np.array([f[kind]["bit_accuracy"] for f in found])
        x = found[0][kind]["strength"]
        std = values.std(0, ddof=1) if len(values) > 1 else None
        refs = subplot_refs(fig, 1, col)
        fig.add_trace(plots.errorbar_trace(x, values.mean(0), std, name=kind, colour=PALETTE[col - 1], refs=refs))
        fig.add_trace(plots.bound_trace([min(x), max(x)], [0.5, 0.5], name="chance", dash="dot", refs=refs,
                                        showlegend=col == 1))
        if kind == "jpeg":
            fig.update_xaxes(autorange="reversed", row=1, col=col)
    fig.update_yaxes(title_text="bit accuracy", row=1, col=1)
    return style(fig, height=400, showlegend=False, title="Robustness: no augmentation in training")


def plot_perturbed(results: dict) -> go.Figure:
    """The same generated image under each post-processing; a slider sets the strength, and each
    panel's title gives the strength and the bit accuracy there (mean over 1,000 images, first seed)."""
    example = experiment.analyses(results)[0]["robustness"]
    kinds = list(runs.PERTURBATIONS)
    fig = make_subplots(rows=1, cols=len(kinds), horizontal_spacing=0.03, subplot_titles=kinds)
    titles = [a.to_plotly_json() for a in fig.layout.annotations]
    steps, updates = [], []
    for level in range(len(runs.PERTURBATIONS["noise"])):
        steps.append((str(level), [_image(example[k]["examples"][level], subplot_refs(fig, 1, col))
                                   for col, k in enumerate(kinds, 1)]))
        updates.append(dict(annotations=[dict(title, text=f"{ROBUSTNESS_LABELS[k]} {example[k]['strength'][level]}"
                                                         f"<br>bit accuracy {example[k]['bit_accuracy'][level]:.2f}")
                                         for title, k in zip(titles, kinds)]))
    fig = plots.figure_with_slider(steps, fig=fig, prefix="strength level: ", layout_updates=updates)
    _image_axes(fig)
    fig.update_annotations(font_size=12)
    return style(fig, height=400, margin=dict(t=120, b=20), title="One image under each post-processing")


# ---- 7. detection and attribution --------------------------------------------------------------------

def plot_hamming(results: dict) -> go.Figure:
    """Hamming distance from the decoded bits to: the image's own fingerprint, the nearest other
    registered one, and (real digits) the nearest registered one; the detection threshold."""
    found = experiment.analyses(results)
    d_c = results["config"]["fingerprint_dim"]
    series = {"generated → own fingerprint": "hamming_own", "generated → nearest other model": "hamming_other",
              "real digit → nearest registered": "hamming_real"}
    fig = go.Figure()
    bins = np.arange(d_c + 2)
    for index, (name, key) in enumerate(series.items()):
        values = np.concatenate([a[key] for a in found])
        counts = np.histogram(values, bins=bins)[0] / len(values)
        fig.add_trace(go.Bar(x=bins[:-1], y=compact(counts, 4), name=name, marker_color=PALETTE[index], opacity=0.75))
    limit = d_c - found[0]["threshold"] + 0.5
    fig.add_vline(x=limit, line=dict(color="#333333", dash="dash"), annotation_position="top right",
                  annotation_text=f"← detected: ≥ {found[0]['threshold']} bits match (α = {found[0]['alpha']})")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="Hamming distance (bits)")
    fig.update_yaxes(title_text="share of images")
    return style(fig, height=500, legend=dict(BELOW, y=-0.2), title=f"Hamming distances, {found[0]['num_models']} registered models "
                                        f"({len(found)} trained model(s))")


def plot_confusion(results: dict) -> go.Figure:
    """Attribution among the registered models: true model (rows) against the nearest code (columns)."""
    confusion = experiment.analyses(results)[0]["confusion"]
    fig = go.Figure(go.Heatmap(z=compact(confusion), colorscale="Blues", colorbar=dict(title="images"),
                               hovertemplate="true %{y}, attributed %{x}: %{z}<extra></extra>"))
    fig.update_xaxes(title_text="attributed model")
    fig.update_yaxes(title_text="true model", autorange="reversed", scaleanchor="x")
    accuracy = np.trace(confusion) / confusion.sum()
    return style(fig, height=560, title=f"Attribution confusion (seed {results['runs'][experiment.MAIN][0]['seed']}): "
                                        f"{100 * accuracy:.1f} % on the diagonal")

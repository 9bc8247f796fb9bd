"""Chapter 10 (L2-CAF): the attention maps as plotly figures with static controls, the result
tables and two live explorers.

1. every method's map of test images side by side, with the true box and each method's box (an
   image slider and a threshold slider);
2. the filter during its optimisation, every 50 iterations, and the loss;
3. localization accuracy against τ, and MaxBoxAcc / accuracy at τ = 0.2 / pointing as bars;
4. two-object images explained for each of their classes; the retrieval network's maps;
5. the ablations and the tables;
6. live (``l2_caf_live``, re-exported here): class-specific L2-CAF on a two-object image, and L2-CAF
   with any settings on a test image.

Every map is drawn as it is scored: ``localization.normalise_maps`` (bilinear to the image, min–max)
and boxes from ``localization.box_from_heatmap``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.basedatatypes import BaseTraceType
from plotly.subplots import make_subplots

from labkit.experiments import l2_caf as ex
from labkit.experiments import l2_caf_runs as runs
from labkit.experiments.l2_caf_runs import CAM, CENTRE, CLASSES, GRAD_CAM, OBLIVIOUS, SPECIFIC
from labkit.metrics import localization as loc
from labkit.viz import plots, tables
from labkit.viz.plots import compact, style, subplot_refs

METHOD_COLOURS = {SPECIFIC: "#F28E2B", OBLIVIOUS: "#B8560F", GRAD_CAM: "#4E79A7", CAM: "#59A14F", CENTRE: "#9CA3AF"}
METRICS = {"maxboxacc": ("MaxBoxAcc", "#2C4F75"), "acc_at_0.2": (f"accuracy at τ = {loc.CAM_TAU}", "#76B7B2"),
           "pointing": ("pointing game", "#F28E2B")}
SHORT_NAMES = {SPECIFIC: "L2-CAF spec.", runs.SPECIFIC_POSITIVE: "L2-CAF f⁺ (ours)", OBLIVIOUS: "L2-CAF obl."}
TRUTH, PREDICTED = "#2CA02C", "#111111"
PAIR_COLOURS = ("#F28E2B", "#7B3FA0")  # the boxes of class A and class B of a two-object image
# heat is drawn as uint8 levels (a quarter of float32's bytes in every frame); the colour bar reads [0, 1]
HEAT_AXIS = dict(colorscale="RdBu_r", cmin=0, cmax=255, colorbar=dict(
    title=dict(text="heat", side="right"), thickness=12, len=0.8, tickvals=[0, 51, 102, 153, 204, 255],
    ticktext=["0", "0.2", "0.4", "0.6", "0.8", "1"]))
HEAT_OPACITY = 0.55
CHECK_EVERY = 50  # L2-CAF checks its loss (and run_network keeps a snapshot) every 50 iterations
SIZES = ("all", "medium", "large")

__all__ = ["plot_scenes", "quality_result_table", "default_images", "plot_heatmap_grid", "plot_convergence",
           "plot_threshold_sweep", "plot_localization_bars", "plot_ablation_bars", "plot_pairs", "plot_retrieval",
           "localization_result_table", "ablation_result_table", "pair_result_table", "pair_explorer", "caf_explorer"]

Slot = tuple[BaseTraceType, Callable[[int], dict]]  # a trace and the data it shows at slider step k


# ---- shared pieces --------------------------------------------------------------------------------

def _entry(results: dict, kind: str, seed_index: int = 0) -> dict | None:
    found = results["nets"].get(kind, [])
    return found[seed_index] if 0 <= seed_index < len(found) else None


def _colour(method: str, index: int) -> str:
    return METHOD_COLOURS.get(method, plots.PALETTE[(index + 4) % len(plots.PALETTE)])


def _missing(kind: str, seed_index: int) -> go.Figure:
    return plots.plot_message(f"No {kind} network (seed index {seed_index}) at this budget.")


def _heat(maps, size: int) -> np.ndarray:
    """Low-resolution maps ``(n, h, w)`` → ``(n, size, size)`` heat in [0, 1], exactly as scored."""
    return loc.normalise_maps(torch.as_tensor(np.asarray(maps)), (size, size)).numpy()


def _levels(heat: np.ndarray) -> np.ndarray:
    return np.round(255 * heat).astype(np.uint8)


def _outline(box) -> dict:
    """A box ``(x0, y0, x1, y1)`` in pixel edges → its closed outline in plot coordinates, where
    pixel i is centred on i (as go.Image and go.Heatmap draw it); no box (no pixel passes τ) → none."""
    if box is None:
        return dict(x=[], y=[])
    x0, y0, x1, y1 = (float(v) - 0.5 for v in box)
    return dict(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0])


def _peak(heat: np.ndarray) -> dict:
    """The peak pixel, first on ties, as ``pointing_hits`` takes it."""
    y, x = divmod(int(np.argmax(heat)), heat.shape[-1])
    return dict(x=[x], y=[y])


def _source(image: torch.Tensor) -> str:
    """A JPEG data URI (quality 90): every animation frame re-sends its images, and the scenes' noisy
    textures make PNGs three times larger, for no difference visible at this size. (Local, not in
    ``plots``: changing ``plots`` would stale every chapter's reproduction.)"""
    import base64
    import io

    from PIL import Image

    pixels = np.clip(np.round(255 * image.permute(1, 2, 0).numpy()), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_trace(refs: dict, **data) -> go.Image:
    return go.Image(hoverinfo="skip", **refs, **data)


def _heat_trace(refs: dict, **data) -> go.Heatmap:
    return go.Heatmap(coloraxis="coloraxis", opacity=HEAT_OPACITY,
                      hovertemplate="(%{x}, %{y}): heat %{z}/255<extra></extra>", **refs, **data)


def _box_trace(refs: dict, colour: str, name: str, *, dash: str | None = None, visible: bool = True,
               showlegend: bool = False, **data) -> go.Scatter:
    return go.Scatter(mode="lines", line=dict(color=colour, width=2, dash=dash), name=name, legendgroup=name,
                      showlegend=showlegend, visible=visible, hovertemplate=f"{name}<extra></extra>", **refs, **data)


def _peak_trace(refs: dict, showlegend: bool = False, **data) -> go.Scatter:
    return go.Scatter(mode="markers", name="peak of the map", showlegend=showlegend, hoverinfo="skip",
                      marker=dict(symbol="x", size=10, color="#111111", line=dict(color="white", width=1)),
                      **refs, **data)


def _framed(fig: go.Figure, slots: Sequence[Slot], labels: Sequence[str], prefix: str) -> go.Figure:
    """Add the slots' traces and one animation frame per label that sets only their data."""
    start = len(fig.data)
    fig.add_traces([trace for trace, _ in slots])
    steps = [(label, [data(k) for _, data in slots]) for k, label in enumerate(labels)]
    fig = plots.figure_with_frames(fig, steps, traces=range(start, start + len(slots)), prefix=prefix)
    fig.layout.sliders[0].pad = dict(t=15, b=10)
    return fig


def _image_axes(fig: go.Figure, size: int, row: int | None = None) -> None:
    """Square pixels, y down, no ticks (in ``row`` only, when given)."""
    where = dict(row=row) if row is not None else {}
    common = dict(showticklabels=False, showgrid=False, ticks="", zeroline=False, constrain="domain")
    fig.update_xaxes(range=[-0.5, size - 0.5], **common, **where)
    fig.update_yaxes(range=[size - 0.5, -0.5], **common, **where)
    fig.for_each_yaxis(lambda axis: axis.update(scaleanchor=axis.anchor or "x"), **where)


def _strip(fig: go.Figure, size: int, *, height: int, bottom: int, title: str) -> go.Figure:
    """The house look of a row of image panels."""
    _image_axes(fig, size)
    fig.update_annotations(font_size=13)
    fig.update_layout(coloraxis=HEAT_AXIS, showlegend=False)
    return style(fig, height=height, margin=dict(t=110, l=10, r=10, b=bottom), title=title)


def default_images(results: dict) -> list[int]:
    """The test images the chapter traced (``ex.view_images``): half medium, half large."""
    return ex.view_images(results["config"]["num_test"], results["config"]["keep"])


# ---- 0. the data and the networks ---------------------------------------------------------------------

def plot_scenes(sets: runs.Sets, per_row: int = 6) -> go.Figure:
    """Test images with their boxes (a row of medium, a row of large objects) and two-object images
    with both boxes, titled by class."""
    half = len(sets.test_x) // 2
    rows = [("medium", list(range(min(per_row, half)))), ("large", list(range(half, min(half + per_row, len(sets.test_x)))))]
    pairs = list(range(min(per_row, len(sets.pair_x))))
    titles = [f"{CLASSES[int(sets.test_y[i])]} ({size})" for size, shown in rows for i in shown]
    titles += [f"{CLASSES[int(a)]} + {CLASSES[int(b)]}" for a, b in sets.pair_y[pairs].tolist()]
    fig = make_subplots(rows=3, cols=per_row, horizontal_spacing=0.01, vertical_spacing=0.06, subplot_titles=titles)
    cells = [(r + 1, c + 1) for r, (_, shown) in enumerate(rows) for c in range(len(shown))]
    for (row, col), i in zip(cells, [i for _, shown in rows for i in shown]):
        refs = subplot_refs(fig, row, col)
        fig.add_trace(_image_trace(refs, source=_source(sets.test_x[i])))
        fig.add_trace(_box_trace(refs, TRUTH, "box", **_outline(sets.test_boxes[i].tolist())))
    for col, i in enumerate(pairs, start=1):
        refs = subplot_refs(fig, 3, col)
        fig.add_trace(_image_trace(refs, source=_source(sets.pair_x[i])))
        for j in range(2):
            fig.add_trace(_box_trace(refs, PAIR_COLOURS[j], "box", **_outline(sets.pair_boxes[i, j].tolist())))
    return _strip(fig, sets.test_x.shape[-1], height=560, bottom=10,
                  title="Test scenes with their boxes: medium objects, large objects, two objects")


def quality_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(network=t["network"], metric=t["metric"], seeds=t["seeds"],
                 value=tables.mean_std(t["mean"], t["std"], 3)) for t in ex.quality_table(results)]
    return tables.result_table(rows, {"network": "network", "metric": "metric", "seeds": "seeds",
                                      "value": "test value (mean ± std)"},
                               title="The trained networks on the test images (half medium, half large objects)")


# ---- 1. the maps side by side ---------------------------------------------------------------------------

def _map_grid(results: dict, entry: dict, images: Sequence[int], taus: dict[str, Sequence[float]],
              shown_tau: float | None) -> tuple[go.Figure, list[int], list[float]]:
    """The image with its box, then per method of ``taus``: the heat over the image, the true box and
    one predicted box per τ of ``taus[method]`` (only ``shown_tau``'s visible, or the only one); an
    image slider (frames). Returns the figure, the predicted-box trace indices and their τ."""
    sets, size = ex.chapter_sets(results), results["config"]["image_size"]
    heat = {m: _heat(entry["methods"][m]["maps"][list(images)], size) for m in taus}
    sources = [_source(sets.test_x[i]) for i in images]
    truth = [_outline(sets.test_boxes[i].tolist()) for i in images]
    titles = ["image<br><sup>green: true box · dashed: predicted</sup>"]
    for m in taus:
        accuracy, best = loc.max_box_accuracy(entry["methods"][m]["hits"])
        titles.append(f"{m}<br><sup>MaxBoxAcc {accuracy:.2f} at τ = {best:.1f}</sup>")
    fig = make_subplots(rows=1, cols=1 + len(taus), horizontal_spacing=0.012, subplot_titles=titles)
    slots: list[Slot] = []
    box_indices, box_taus = [], []
    for col, m in enumerate([None, *taus], start=1):
        refs = subplot_refs(fig, 1, col)
        slots.append((_image_trace(refs), lambda k: dict(source=sources[k])))
        if m is not None:
            slots.append((_heat_trace(refs), lambda k, m=m: dict(z=_levels(heat[m][k]))))
        slots.append((_box_trace(refs, TRUTH, "ground-truth box"), lambda k: truth[k]))
        for tau in taus.get(m, ()):
            box_indices.append(len(slots))
            box_taus.append(tau)
            visible = len(taus[m]) == 1 or tau == shown_tau
            slots.append((_box_trace(refs, PREDICTED, f"predicted box, τ = {tau:.1f}", dash="dash", visible=visible),
                          lambda k, m=m, tau=tau: _outline(loc.box_from_heatmap(heat[m][k], tau))))
    fig = _framed(fig, slots, [f"{i} ({sets.test_size[i]})" for i in images], prefix="test image ")
    return fig, box_indices, box_taus


def _tau_slider(box_indices: list[int], box_taus: list[float], active: float, y: float) -> dict:
    """Steps that restyle only the predicted boxes' ``visible``: the image frames set only data, so
    the two sliders never undo each other."""
    steps = [dict(label=f"{tau:.1f}", method="restyle", args=[{"visible": [t == tau for t in box_taus]}, box_indices])
             for tau in loc.TAUS]
    return dict(steps=steps, active=loc.TAUS.index(active), x=0.02, len=0.96, y=y, yanchor="top",
                pad=dict(t=10, b=10), currentvalue=dict(prefix="threshold τ = ", font=dict(size=14)),
                font=dict(size=12), bordercolor="#9CA3AF", tickcolor="#9CA3AF")


def plot_heatmap_grid(results: dict, kind: str = "cam", seed_index: int = 0,
                      images: Sequence[int] | None = None) -> go.Figure:
    """Every method's map of test images (default: ``default_images``) side by side over the image,
    with the true box (green) and the method's box at a threshold τ (dashed); a slider over the
    images (frames) and one over τ (it shows one of nine precomputed boxes per method)."""
    entry = _entry(results, kind, seed_index)
    if entry is None:
        return _missing(kind, seed_index)
    images = default_images(results) if images is None else [int(i) for i in images]
    if not images or not all(0 <= i < results["config"]["num_test"] for i in images):
        raise ValueError(f"images must be test image indices in [0, {results['config']['num_test']}); got {images}")
    fig, box_indices, box_taus = _map_grid(results, entry, images, {m: loc.TAUS for m in entry["methods"]},
                                           shown_tau=loc.CAM_TAU)
    height, top, bottom = 520, 110, 190
    tau_slider = _tau_slider(box_indices, box_taus, loc.CAM_TAU, y=-90 / (height - top - bottom))  # 90 px below
    fig.update_layout(sliders=[*fig.layout.sliders, tau_slider])
    return _strip(fig, results["config"]["image_size"], height=height, bottom=bottom,
                  title=f"Maps of the {kind} network, methods side by side (a method menu would fight the sliders)")


# ---- 2. convergence ------------------------------------------------------------------------------------

def plot_convergence(results: dict, kind: str = "cam", image: int = 0, seed_index: int = 0) -> go.Figure:
    """The constrained filter |f̂| of the ``image``-th traced test image (``ex.view_images``) every 50
    iterations (normalised as scored) over the image, and its loss below with the current iteration
    marked."""
    entry = _entry(results, kind, seed_index)
    if entry is None:
        return _missing(kind, seed_index)
    trace = entry["convergence"]
    snapshots, losses = np.asarray(trace["snapshots"]), np.asarray(trace["losses"])
    if not 0 <= image < snapshots.shape[1]:
        raise ValueError(f"image={image} has no convergence trace; pass 0..{snapshots.shape[1] - 1}")
    sets, size = ex.chapter_sets(results), results["config"]["image_size"]
    index = int(trace["images"][image])  # the test image shown
    heat = _heat(np.abs(snapshots[:, image]), size)
    iterations = CHECK_EVERY * np.arange(len(snapshots))
    fig = make_subplots(rows=2, cols=1, row_heights=[0.64, 0.36], vertical_spacing=0.1,
                        subplot_titles=[f"|f̂| over the image ({sets.test_size[index]} object)", "loss"])
    top, bottom = subplot_refs(fig, 1, 1), subplot_refs(fig, 2, 1)
    fig.add_trace(_image_trace(top, source=_source(sets.test_x[index])))
    fig.add_trace(_loss_trace(iterations, losses[:, image], _colour(trace["method"], 0), bottom))
    truth = _outline(sets.test_boxes[index].tolist())
    marker = go.Scatter(mode="markers", marker=dict(size=13, color="#111111"), showlegend=False, hoverinfo="skip",
                        **bottom)
    slots: list[Slot] = [(_heat_trace(top), lambda k: dict(z=_levels(heat[k]))),
                         (_box_trace(top, TRUTH, "ground-truth box"), lambda k: truth),
                         (marker, lambda k: dict(x=[int(iterations[k])], y=[float(losses[k, image])]))]
    fig = _framed(fig, slots, [str(i) for i in iterations], prefix="iteration ")
    fig.layout.sliders[0].pad.t = 70  # below the loss axis' title
    _image_axes(fig, size, row=1)
    fig.update_xaxes(title_text="iteration", row=2, col=1)
    fig.update_layout(coloraxis=HEAT_AXIS)
    return style(fig, height=700, margin=dict(t=90, b=150),
                 title=f"{trace['method']} on test image {index} ({kind} network), every {CHECK_EVERY} iterations")


# ---- 3. accuracy against τ, and bars --------------------------------------------------------------------

def _sweep_curves(results: dict, kind: str, size: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method: accuracy (IoU ≥ 0.5) at each τ, mean and std over seeds (NaN std for one seed).
    ``ex.sweep`` gives the mean only."""
    mask, entries = ex.size_mask(results, size), results["nets"][kind]
    curves = {}
    for m in entries[0]["methods"]:
        per_seed = np.array([e["methods"][m]["hits"][mask].mean(0) for e in entries])
        curves[m] = per_seed.mean(0), per_seed.std(0, ddof=1) if len(per_seed) > 1 else np.full(len(loc.TAUS), np.nan)
    return curves


def plot_threshold_sweep(results: dict) -> go.Figure:
    """Localization accuracy against τ per method (mean ± std over seeds as a band); a dropdown
    picks the network and the object size. Dashed: CAM's fixed τ = 0.2."""
    groups, updates = {}, []
    for kind in results["nets"]:
        for size in SIZES:
            curves = _sweep_curves(results, kind, size).items()
            groups[f"{kind} · {size}"] = [trace for index, (m, (mean, std)) in enumerate(curves) for trace in
                                          plots.band_traces(loc.TAUS, mean, std, name=m, colour=_colour(m, index))]
            updates.append(dict(title=dict(text=f"Localization accuracy against τ: {kind} network, {size} objects")))
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    fig.add_vline(x=loc.CAM_TAU, line=dict(color="#333333", dash="dash", width=1.5),
                  annotation_text=f"CAM's τ = {loc.CAM_TAU}", annotation_position="top right")
    fig.update_xaxes(title_text="threshold τ", tickvals=list(loc.TAUS))
    fig.update_yaxes(title_text="accuracy (IoU ≥ 0.5)", range=[0, 1.02])
    return style(fig, height=460, margin=dict(t=100), legend=dict(orientation="h", y=-0.18))


def _metric_bars(rows: list[dict], categories: list, keys: Sequence[str], title: str, height: int) -> go.Figure:
    """Horizontal bars of ``keys`` (of ``METRICS``) per row, mean ± std over seeds."""
    series = {METRICS[key][0]: (categories, [t[key] for t in rows], [t[f"{key}_std"] for t in rows]) for key in keys}
    fig = plots.plot_bars(series, horizontal=True, value_range=[0, 1], value_title="fraction of test images",
                          colours={label: colour for label, colour in METRICS.values()}, value_format=".2f",
                          height=height, title=title)
    return fig.update_layout(legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"))


def plot_localization_bars(results: dict, size: str = "all") -> go.Figure:
    """MaxBoxAcc, accuracy at τ = 0.2 and the pointing game per network and method, mean ± std
    over seeds."""
    table = ex.localization_table(results, size)
    networks_and_methods = [[t["network"] for t in table], [t["method"] for t in table]]  # a two-level axis
    fig = _metric_bars(table, networks_and_methods, list(METRICS), height=160 + 46 * len(table),
                       title=f"Localization, {size} test objects (mean ± std over seeds)")
    return fig.update_layout(margin=dict(t=110, l=230))


def plot_ablation_bars(results: dict) -> go.Figure:
    """MaxBoxAcc and pointing of L2-CAF's ablations on the CAM network beside its two main L2-CAF
    rows, mean ± std over seeds."""
    table = ex.ablation_table(results)
    if not table:
        return plots.plot_message("No CAM network at this budget: no ablations.")
    fig = _metric_bars(table, [t["variant"] for t in table], ("maxboxacc", "pointing"), height=170 + 48 * len(table),
                       title="Ablations of L2-CAF on the CAM network (mean ± std over seeds)")
    return fig.update_layout(margin=dict(t=110, l=260))


# ---- 4. two-object images and the retrieval network ------------------------------------------------------

def plot_pairs(results: dict, kind: str = "cam", seed_index: int = 0,
               methods: Sequence[str] = (SPECIFIC, GRAD_CAM)) -> go.Figure:
    """The first ``keep`` two-object images (every PNG is repeated in each panel and frame: all of
    them would make the page heavy): the image with both boxes (A orange, B purple), then each of
    ``methods`` (of ``entry["pairs"]``) explaining class A and class B, with its peak (×)."""
    entry = _entry(results, kind, seed_index)
    if entry is None or "pairs" not in entry:
        return plots.plot_message(f"No {kind} classifier (seed index {seed_index}) at this budget: no class maps.")
    sets, size, pairs = ex.chapter_sets(results), results["config"]["image_size"], entry["pairs"]
    total, shown = len(sets.pair_x), min(len(sets.pair_x), results["config"]["keep"])
    panels = [(m, j) for m in methods for j in range(2)]  # (method, class slot A/B)
    heat = {m: _heat(pairs[m]["maps"][:shown].reshape(2 * shown, *pairs[m]["maps"].shape[2:]), size)
            .reshape(shown, 2, size, size) for m in methods}
    sources = [_source(x) for x in sets.pair_x[:shown]]
    boxes = [[_outline(sets.pair_boxes[i, j].tolist()) for j in range(2)] for i in range(shown)]
    titles = ["image<br><sup>boxes: A orange, B purple; ×: peak</sup>"] + [
        f"{SHORT_NAMES.get(m, m)} → {'AB'[j]}<br><sup>peak on {'AB'[j]} in {int(pairs[m]['on_queried'][:, j].sum())}/{total}</sup>"
        for m, j in panels]
    fig = make_subplots(rows=1, cols=1 + len(panels), horizontal_spacing=0.012, subplot_titles=titles)
    slots: list[Slot] = []
    for col, panel in enumerate([None, *panels], start=1):
        refs = subplot_refs(fig, 1, col)
        slots.append((_image_trace(refs), lambda k: dict(source=sources[k])))
        if panel is not None:
            slots.append((_heat_trace(refs), lambda k, m=panel[0], j=panel[1]: dict(z=_levels(heat[m][k, j]))))
        slots += [(_box_trace(refs, PAIR_COLOURS[j], f"class {'AB'[j]} box"), lambda k, j=j: boxes[k][j])
                  for j in range(2)]
        if panel is not None:
            slots.append((_peak_trace(refs), lambda k, m=panel[0], j=panel[1]: _peak(heat[m][k, j])))
    labels = [f"{i}: A {CLASSES[a]} · B {CLASSES[b]}" for i, (a, b) in enumerate(sets.pair_y[:shown].tolist())]
    fig = _framed(fig, slots, labels, prefix="two-object image ")
    # long labels: shown once above the slider, not under every tick
    fig.layout.sliders[0].update(font_color="rgba(0,0,0,0)", currentvalue_font_color="#222222")
    return _strip(fig, size, height=440, bottom=90, title=f"Two objects, each class explained ({kind} network)")


def plot_retrieval(results: dict, seed_index: int = 0) -> go.Figure:
    """The retrieval network on ``default_images``: class-oblivious L2-CAF and Grad-CAM of the
    embedding, each with its box at its own MaxBoxAcc τ; an image slider."""
    entry = _entry(results, "retrieval", seed_index)
    if entry is None:
        return plots.plot_message("The retrieval network was not trained at this budget.")
    taus = {m: [loc.max_box_accuracy(entry["methods"][m]["hits"])[1]] for m in (OBLIVIOUS, GRAD_CAM)}
    fig, _, _ = _map_grid(results, entry, default_images(results), taus, shown_tau=None)
    return _strip(fig, results["config"]["image_size"], height=470, bottom=100,
                  title=f"Retrieval network (Recall@1 {entry['quality']['recall_at_1']:.2f}): "
                        f"boxes at each method's MaxBoxAcc τ")


# ---- 5. tables -----------------------------------------------------------------------------------------

def _cell(row: dict, key: str, digits: int = 3) -> str | None:
    mean = row.get(key, float("nan"))
    return None if not np.isfinite(mean) else tables.mean_std(mean, row.get(f"{key}_std"), digits)


SUMMARY_COLUMNS = {"seeds": "seeds", "maxboxacc": "MaxBoxAcc", "best_tau": tables.Column("τ of MaxBoxAcc", digits=1),
                   "acc_at_0.2": f"accuracy at τ = {loc.CAM_TAU}", "pointing": "pointing game",
                   "top1_loc": "top-1 localization", "iterations": tables.Column("L2-CAF iterations", digits=0),
                   "ms_per_image": tables.Column("time per image", unit="ms", digits=2)}


def _summary_row(t: dict) -> dict:
    return dict(seeds=t["seeds"], best_tau=t["best_tau"], iterations=t.get("iterations"),
                ms_per_image=t["ms_per_image"],
                **{key: _cell(t, key) for key in ("maxboxacc", "acc_at_0.2", "pointing", "top1_loc")})


def localization_result_table(results: dict, size: str = "all") -> tables.ResultTable:
    rows = [dict(network=t["network"], method=t["method"], **_summary_row(t))
            for t in ex.localization_table(results, size)]
    return tables.result_table(rows, {"network": "network", "method": "method", **SUMMARY_COLUMNS},
                               title=f"Localization of the test images, {size} objects (mean ± std over seeds)",
                               note="A box is correct at IoU ≥ 0.5; MaxBoxAcc takes the best τ on the test set "
                                    "itself (the τ shown maximises the mean over seeds). Top-1 localization also "
                                    "needs the right class. Time: the batched run, per image.")


def ablation_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(variant=t["variant"], **_summary_row(t)) for t in ex.ablation_table(results)]
    return tables.result_table(rows, {"variant": "L2-CAF variant (CAM network)", **SUMMARY_COLUMNS},
                               title="Ablations of L2-CAF (mean ± std over seeds)",
                               note="Class-specific unless named oblivious; one setting changed from the main row.")


def pair_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(network=t["network"], method=t["method"], seeds=t["seeds"], on_queried=_cell(t, "on_queried"),
                 on_other=_cell(t, "on_other")) for t in ex.pair_table(results)]
    return tables.result_table(rows, {"network": "network", "method": "method", "seeds": "seeds",
                                      "on_queried": "peak on the explained object",
                                      "on_other": "peak on the other object"},
                               title="Two-object images, each explained for each of its classes",
                               note="The class-oblivious map ignores the class asked for: its row is the baseline.")


def _loss_trace(iterations, losses, colour: str, refs: dict) -> go.Scatter:
    return go.Scatter(x=compact(iterations), y=compact(losses), mode="lines+markers", name="loss", showlegend=False,
                      line=dict(color=colour, width=2), hovertemplate="iteration %{x}: loss %{y:.4g}<extra></extra>",
                      **refs)


from labkit.viz.l2_caf_live import caf_explorer, pair_explorer  # noqa: E402  (they draw with the pieces above)

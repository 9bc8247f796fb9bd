"""Chapter 10 (L2-CAF), live in JupyterLab: class-specific L2-CAF on a two-object image for the
class you pick, and L2-CAF with any settings on a test image. Each re-runs the optimisation on one
image (a fraction of a second) and draws it with the chapter's own figure pieces
(``labkit.viz.l2_caf``), post-processed as the chapter scores it."""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torchvision.ops import box_iou

from labkit.experiments import l2_caf as ex
from labkit.experiments import l2_caf_runs as runs
from labkit.experiments.l2_caf_runs import CLASSES, OBLIVIOUS, SPECIFIC
from labkit.methods import l2_caf
from labkit.metrics import localization as loc
from labkit.viz import widgets
from labkit.viz.l2_caf import (CHECK_EVERY, HEAT_AXIS, PAIR_COLOURS, PREDICTED, TRUTH, _box_trace, _colour, _entry,
                               _heat, _heat_trace, _image_axes, _image_trace, _levels, _loss_trace, _outline, _peak,
                               _peak_trace, _source)
from labkit.viz.plots import style, subplot_refs

__all__ = ["pair_explorer", "caf_explorer"]


def _map_panels(fig: go.Figure, image: torch.Tensor, heat: np.ndarray,
                boxes: Sequence[tuple[dict, str, str, str | None]], peak: bool = False) -> go.Figure:
    """Into cells (1, 1) and (1, 2): the image, and the heat over it; both with ``boxes`` (outline,
    colour, name, dash), and the heat's peak (×) if asked."""
    for col in (1, 2):
        refs = subplot_refs(fig, 1, col)
        fig.add_trace(_image_trace(refs, source=_source(image)))
        if col == 2:
            fig.add_trace(_heat_trace(refs, z=_levels(heat)))
        fig.add_traces([_box_trace(refs, colour, name, dash=dash, showlegend=col == 1, **outline)
                        for outline, colour, name, dash in boxes])
    if peak:
        fig.add_trace(_peak_trace(subplot_refs(fig, 1, 2), showlegend=True, **_peak(heat)))
    _image_axes(fig, heat.shape[-1], row=1)
    return fig.update_layout(coloraxis=HEAT_AXIS, legend=dict(orientation="h", x=0, y=-0.08))


def _no_explorer(message: str, title: str) -> widgets.Explorer:
    return widgets.explorer({}, lambda: widgets.Message(message), title=title)


def pair_explorer(results: dict, kind: str = "cam", seed_index: int = 0) -> widgets.Explorer:
    """Live: a two-object image and one of its two classes → class-specific L2-CAF re-run on that
    image (the chapter's iteration budget and tolerance), with both boxes and the map's peak."""
    entry, title = _entry(results, kind, seed_index), "Class-specific L2-CAF on two objects, live"
    if entry is None or "pairs" not in entry:
        return _no_explorer(f"No {kind} classifier at this budget: no class-specific maps.", title)
    net, sets, cfg = ex.trained_net(results, kind, seed_index), ex.chapter_sets(results), results["config"]

    @functools.lru_cache(maxsize=64)  # a new image renders twice (its class list changes too): compute once
    def heat(image: int, cls: int) -> np.ndarray:
        out = runs.attention_maps(net, sets.pair_x[image:image + 1], torch.tensor([cls]), SPECIFIC, seed=0,
                                  max_iters=cfg["max_iters"], tolerance=cfg["tolerance"])
        return _heat(out["maps"], cfg["image_size"])[0]

    def classes(image: int) -> list[tuple[str, int]]:
        return [(CLASSES[c], c) for c in sets.pair_y[image].tolist()]

    def render(image: int, cls: int) -> go.Figure:
        pair = sets.pair_y[image].tolist()
        if cls not in pair:
            raise ValueError(f"two-object image {image} shows a {CLASSES[pair[0]]} and a {CLASSES[pair[1]]}, "
                             f"not a {CLASSES[cls]}")
        found = heat(image, cls)
        boxes = [(_outline(sets.pair_boxes[image, j].tolist()), PAIR_COLOURS[j], f"{CLASSES[c]} box", None)
                 for j, c in enumerate(pair)]
        hit = loc.pointing_hits(torch.as_tensor(found)[None], [sets.pair_boxes[image, pair.index(cls)]])[0]
        fig = _map_panels(make_subplots(rows=1, cols=2, horizontal_spacing=0.03, subplot_titles=["image", "map"]),
                          sets.pair_x[image], found, boxes, peak=True)
        return style(fig, height=440,
                     margin=dict(t=90, l=10, r=10), title=f"Image {image}, explaining the {CLASSES[cls]}: "
                                                          f"the peak is {'on' if hit else 'off'} it")

    image = widgets.int_slider("two-object image", 0, 0, len(sets.pair_x) - 1)
    cls = widgets.dropdown("explain class", classes(0), classes(0)[0][1])
    # observed before the explorer's own observer is added, so a new image renders with its own classes
    image.observe(lambda change: setattr(cls, "options", classes(change["new"])), names="value")
    return widgets.explorer({"image": image, "cls": cls}, render, title=title)


def caf_explorer(results: dict, kind: str = "cam", seed_index: int = 0) -> widgets.Explorer:
    """Live: L2-CAF with any lr, iteration budget, constraint, layer and objective on one test
    image → the map with the true box and the box at the chapter's MaxBoxAcc τ, and the loss."""
    entry, title = _entry(results, kind, seed_index), f"L2-CAF on the {kind} network, live"
    if entry is None:
        return _no_explorer(f"No {kind} network (seed index {seed_index}) at this budget.", title)
    net, sets, cfg = ex.trained_net(results, kind, seed_index), ex.chapter_sets(results), results["config"]

    def render(lr: float, max_iters: int, constraint: str, layer: str, objective: str, image: int) -> go.Figure:
        method = SPECIFIC if objective == "specific" else OBLIVIOUS
        if method not in entry["methods"]:
            raise ValueError(f"the {kind} network has no classes: only the class-oblivious objective applies")
        out = runs.attention_maps(net, sets.test_x[image:image + 1], sets.test_y[image:image + 1], method, layer=layer,
                                  seed=0, lr=lr, max_iters=max_iters, constraint=constraint, tolerance=cfg["tolerance"])
        heat = _heat(out["maps"], cfg["image_size"])[0]
        tau = loc.max_box_accuracy(entry["methods"][method]["hits"])[1]  # the τ the chapter scores it at
        box = loc.box_from_heatmap(heat, tau)
        truth = sets.test_boxes[image:image + 1]
        iou = 0.0 if box is None else float(box_iou(torch.tensor([box], dtype=truth.dtype), truth)[0, 0])
        boxes = [(_outline(sets.test_boxes[image].tolist()), TRUTH, "ground-truth box", None),
                 (_outline(box), PREDICTED, f"box at τ = {tau:.1f} (the chapter's MaxBoxAcc τ)", "dash")]
        fig = make_subplots(rows=2, cols=2, specs=[[{}, {}], [{"colspan": 2}, None]], row_heights=[0.66, 0.34],
                            horizontal_spacing=0.03, vertical_spacing=0.1,
                            subplot_titles=["image", "map", f"loss (checked every {CHECK_EVERY} iterations)"])
        fig = _map_panels(fig, sets.test_x[image], heat, boxes)
        losses = [check[0] for check in out["losses"]]
        fig.add_trace(_loss_trace(CHECK_EVERY * np.arange(len(losses)), losses, _colour(method, 0),
                                  subplot_refs(fig, 2, 1)))
        fig.update_xaxes(title_text="iteration", range=[-10, max_iters + 10], row=2, col=1)
        return style(fig, height=660, margin=dict(t=90, l=60, r=20, b=60), legend_y=-0.14,
                     title=f"{method} on test image {image} ({sets.test_size[image]}): stopped after "
                           f"{int(out['iterations'][0])} iterations; IoU {iou:.2f}")

    iterations = int(np.clip(round(cfg["max_iters"] / 50) * 50, 50, 1000))
    controls = {"lr": widgets.log_slider("lr", 0.5, np.log10(0.005), np.log10(50)),
                "max_iters": widgets.int_slider("max iterations", iterations, 50, 1000, step=50),
                "constraint": widgets.dropdown("constraint", l2_caf.CONSTRAINTS, "l2"),
                "layer": widgets.dropdown("layer", runs.LAYERS, "last"),
                "objective": widgets.dropdown("objective", l2_caf.OBJECTIVES,
                                              "oblivious" if kind == "retrieval" else "specific"),
                "image": widgets.int_slider("test image", 0, 0, cfg["num_test"] - 1)}
    return widgets.explorer(controls, render, title=title)

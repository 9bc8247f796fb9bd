r"""Weakly supervised localization: one post-processing for every attention map.

The protocol (CAM's, as the L2-CAF paper uses it), fixed here so that every method is scored the
same way:

1. the map ``(h, w)`` is upsampled bilinearly to the image and min–max normalised
   (``normalise_maps``);
2. it is thresholded at $\tau$ and the box of the largest 4-connected component is taken
   (``box_from_heatmap``, ``scipy.ndimage.label``);
3. the box is correct when its IoU with a ground-truth box is at least 0.5 (``torchvision.ops``).

``localization_hits`` scores every image at every $\tau$ of ``TAUS``; MaxBoxAcc (Choe et al.,
CVPR 2020) is the best accuracy over $\tau$, chosen on the scored set itself, so it is an
optimistic number for every method alike. The pointing game asks only whether the map's peak
falls inside a ground-truth box.

Boxes are ``(x0, y0, x1, y1)`` in pixel edges: a box holding only pixel column 3 has ``x0 = 3,
x1 = 4``, as in ``labkit.data.scenes``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_range

__all__ = ["TAUS", "CAM_TAU", "normalise_maps", "box_from_heatmap", "localization_hits", "pointing_hits",
           "max_box_accuracy"]

TAUS = tuple(round(0.1 * k, 1) for k in range(1, 10))  # 0.1 … 0.9, the spec's grid
CAM_TAU = 0.2  # CAM's fixed threshold


def normalise_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(b, h, w)`` maps upsampled bilinearly to ``size`` and min–max normalised per map to [0, 1]
    (a constant map becomes all zeros)."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (b, h, w); got shape {tuple(maps.shape)}")
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).amin(1)[:, None, None]
    high = up.flatten(1).amax(1)[:, None, None]
    return (up - low) / (high - low).clamp_min(1e-12)


def box_from_heatmap(heat: np.ndarray, tau: float) -> tuple[int, int, int, int] | None:
    """The box ``(x0, y0, x1, y1)`` of the largest connected component of ``heat >= tau``, or None
    when no pixel passes."""
    from scipy import ndimage

    check_range("tau", tau, 0.0, 1.0)
    heat = np.asarray(heat)
    if heat.ndim != 2:
        raise ValueError(f"heat must be one (H, W) map; got shape {heat.shape}")
    labels, count = ndimage.label(heat >= tau)
    if not count:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _check_boxes(heat: torch.Tensor, boxes: Sequence) -> list[torch.Tensor]:
    if len(boxes) != len(heat):
        raise ValueError(f"boxes has {len(boxes)} entries for {len(heat)} heatmaps; pass one (m, 4) per image")
    return [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]


def localization_hits(heat: torch.Tensor, boxes: Sequence, taus: Sequence[float] = TAUS,
                      iou: float = 0.5) -> np.ndarray:
    """``(n, len(taus))`` bool: the box at each threshold overlaps a ground-truth box of the image
    with IoU ≥ ``iou``. ``heat`` ``(n, H, W)`` normalised maps, ``boxes`` one ``(m, 4)`` per image."""
    from torchvision.ops import box_iou

    for tau in taus:
        check_range("taus entry", tau, 0.0, 1.0)
    check_range("iou", iou, 0.0, 1.0, low_open=True)
    truth = _check_boxes(heat, boxes)
    heat = heat.detach().cpu().numpy()
    hits = np.zeros((len(heat), len(taus)), dtype=bool)
    for i, (one, gt) in enumerate(zip(heat, truth)):
        found = [box_from_heatmap(one, tau) for tau in taus]
        kept = [j for j, box in enumerate(found) if box is not None]
        if kept and len(gt):
            overlap = box_iou(torch.tensor([found[j] for j in kept], dtype=torch.float32), gt).amax(1)
            hits[i, kept] = (overlap >= iou).numpy()
    return hits


def pointing_hits(heat: torch.Tensor, boxes: Sequence) -> np.ndarray:
    """``(n,)`` bool: the map's peak pixel (first on ties) lies inside a ground-truth box."""
    truth = _check_boxes(heat, boxes)
    width = heat.shape[-1]
    peak = heat.flatten(1).argmax(1)
    ys, xs = (peak // width).float() + 0.5, (peak % width).float() + 0.5  # pixel centres
    return np.array([bool(((gt[:, 0] <= x) & (x < gt[:, 2]) & (gt[:, 1] <= y) & (y < gt[:, 3])).any())
                     for x, y, gt in zip(xs, ys, truth)])


def max_box_accuracy(hits: np.ndarray, taus: Sequence[float] = TAUS) -> tuple[float, float]:
    """MaxBoxAcc and the threshold that gives it, from ``localization_hits``' ``(n, len(taus))``."""
    accuracy = np.asarray(hits, dtype=float).mean(0)
    best = int(np.argmax(accuracy))
    return float(accuracy[best]), float(taus[best])

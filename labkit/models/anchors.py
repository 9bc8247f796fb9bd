"""Anchor lattices and box coding for anchor-based detectors (chapters 05, 07, 08).

An anchor ``a[y, x, k]`` is centred at ``((x + 1/2) s, (y + 1/2) s)`` on an ``H × W`` feature grid
with stride ``s``; ``k`` indexes the anchor shapes (scale × ratio, scale-major). The lattice is
translation-invariant, which is what ASAP-NMS's lookup table relies on. Boxes are ``(x1, y1, x2,
y2)`` in pixels; areas are ``(x2 - x1)(y2 - y1)`` with no +1, as torchvision does.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from labkit.config import check_positive_float, check_positive_int

# Faster R-CNN's clamp on dw, dh: exp() of more than this would blow a box past 1000/16 its anchor.
DELTA_CLAMP = math.log(1000.0 / 16)


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """Stride and shapes of one lattice: ``len(scales) * len(ratios)`` anchors per cell."""

    stride: int = 16
    scales: tuple = (32.0, 64.0, 128.0)  # sqrt(anchor area) in pixels
    ratios: tuple = (0.5, 1.0, 2.0)  # height / width

    def __post_init__(self):
        check_positive_int("stride", self.stride)
        for scale in self.scales:
            check_positive_float("scales[]", scale)
        for ratio in self.ratios:
            check_positive_float("ratios[]", ratio)

    @property
    def num_shapes(self) -> int:
        return len(self.scales) * len(self.ratios)

    def shapes(self) -> torch.Tensor:
        return anchor_shapes(self.scales, self.ratios)


def anchor_shapes(scales, ratios) -> torch.Tensor:
    """``(A, 2)`` widths and heights, scale-major: shape ``k = i_scale * len(ratios) + i_ratio``.

    A shape of scale ``s`` and ratio ``r = h / w`` has area ``s²``: ``w = s / sqrt(r)``, ``h = s sqrt(r)``.
    """
    scales = torch.as_tensor(scales, dtype=torch.float32)
    ratios = torch.as_tensor(ratios, dtype=torch.float32)
    widths = (scales[:, None] / ratios.sqrt()[None, :]).reshape(-1)
    heights = (scales[:, None] * ratios.sqrt()[None, :]).reshape(-1)
    return torch.stack([widths, heights], dim=1)


def anchor_lattice(height: int, width: int, config: AnchorConfig) -> torch.Tensor:
    """``(height, width, A, 4)`` anchor boxes of an ``height × width`` feature grid."""
    check_positive_int("height", height)
    check_positive_int("width", width)
    shapes = config.shapes()  # (A, 2)
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * config.stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * config.stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    half_w, half_h = shapes[:, 0] / 2, shapes[:, 1] / 2  # (A,)
    return torch.stack([cx[..., None] - half_w, cy[..., None] - half_h,
                        cx[..., None] + half_w, cy[..., None] + half_h], dim=-1)


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Faster R-CNN deltas ``(dx, dy, dw, dh)`` that take ``anchors (n, 4)`` to ``boxes (n, 4)``."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bx, by = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], dim=1)


def decode_deltas(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of ``encode_boxes``: boxes ``(n, 4)`` from ``anchors (n, 4)`` and ``deltas (n, 4)``."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    dw, dh = deltas[:, 2].clamp(max=DELTA_CLAMP), deltas[:, 3].clamp(max=DELTA_CLAMP)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)

"""Image augmentations on batches of tensors, each image with its own random draw.

``random_affine`` warps every image by its own rotation, scale and shift (one ``affine_grid`` +
``grid_sample`` for the whole batch), then adds pixel noise: the views of a SimCLR-style
pretraining on small grayscale images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.config import check_range

__all__ = ["random_affine"]


def random_affine(images: torch.Tensor, generator: torch.Generator | None = None, *, rotation_deg: float = 15.0,
                  scale: float = 0.15, shift: float = 0.1, noise: float = 0.05) -> torch.Tensor:
    """Warp each image of ``images`` ``(n, c, h, w)`` by a random rotation in ±``rotation_deg``, a
    scale in 1 ± ``scale`` and a shift in ±``shift`` of the half-width, then add Gaussian noise of
    std ``noise`` and clip to [0, 1]. Zero padding outside the image (the glyphs' dark background)."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, c, h, w); got {tuple(images.shape)}")
    check_range("rotation_deg", rotation_deg, 0.0, 180.0)
    check_range("scale", scale, 0.0, 0.9)
    check_range("shift", shift, 0.0, 1.0)
    check_range("noise", noise, 0.0, 1.0)
    n = len(images)
    draw = torch.rand(n, 4, generator=generator)
    angle = math.radians(rotation_deg) * (2 * draw[:, 0] - 1)
    zoom = 1 + scale * (2 * draw[:, 1] - 1)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift * (2 * draw[:, 2] - 1)], 1),
                         torch.stack([sin, cos, shift * (2 * draw[:, 3] - 1)], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    if noise:
        warped = warped + noise * torch.randn(warped.shape, generator=generator).to(images)
    return warped.clamp(0.0, 1.0)

"""2-D Gaussian mixtures for the toy GAN experiments: 8 modes on a ring, or 25 on a 5×5 grid.

Both layouts are centred at the origin. That matters for SVMax: its GAN regularizer acts on the
generator's raw output batch, whose singular values measure spread about the origin, so an
off-centre mixture would mostly push samples outward instead of across the modes.

Sampling is deterministic from a seed or a ``torch.Generator``; the global RNG is never used.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from labkit.config import as_generator, check_choice, check_positive_float, check_positive_int


def ring_centres(num_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """``num_modes`` centres evenly spaced on a circle of ``radius``, the first on the +x axis.

    Returns ``(num_modes, 2)`` float32.
    """
    num_modes = check_positive_int("num_modes", num_modes)
    radius = check_positive_float("radius", radius)
    # float64 first so the centres' mean is 0 to float32 precision
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centres.float()


def grid_centres(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """A ``side × side`` square grid of centres, ``spacing`` apart, centred at the origin.

    Returns ``(side * side, 2)`` float32, row-major (x varies fastest).
    """
    side = check_positive_int("side", side)
    spacing = check_positive_float("spacing", spacing)
    axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()


MIXTURES: dict[str, Callable[[], torch.Tensor]] = {
    "ring": ring_centres,
    "grid": grid_centres,
}


def mixture_centres(kind: str = "ring") -> torch.Tensor:
    """The default centres of mixture ``kind`` (a key of ``MIXTURES``): ``(num_modes, 2)``."""
    check_choice("kind", kind, MIXTURES)
    return MIXTURES[kind]()


def sample_mixture(num_samples: int, kind: str = "ring", std: float = 0.02,
                   generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Draw ``num_samples`` points from an equal-weight isotropic Gaussian mixture.

    Each point picks a mode uniformly at random, then adds ``std``-scaled Gaussian noise.
    Returns ``(num_samples, 2)`` float32.
    """
    num_samples = check_positive_int("num_samples", num_samples)
    check_choice("kind", kind, MIXTURES)
    std = check_positive_float("std", std)
    rng = as_generator(generator)
    centres = mixture_centres(kind)
    modes = torch.randint(len(centres), (num_samples,), generator=rng)
    noise = torch.randn(num_samples, 2, generator=rng)
    return centres[modes] + std * noise

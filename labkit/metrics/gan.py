"""GAN sample-quality metrics.

For 2-D toy mixtures, ``mode_quality`` counts the modes a generator covers and the fraction of
its samples that land near a mode (the protocol of the unrolled-GAN and SVMax ring experiments).
Chapters on image GANs add Fréchet distances on labkit's own features to this module.
"""
from __future__ import annotations

import math
import numbers

import torch


def _check_points(name: str, points) -> torch.Tensor:
    points = torch.as_tensor(points).detach().cpu()
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"{name} must be a non-empty (n, dim) matrix; got shape {tuple(points.shape)}")
    return points.double()


def _check_positive(name: str, value) -> float:
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is not valid; it must be a finite number > 0")
    return float(value)


def mode_quality(samples: torch.Tensor, centres: torch.Tensor, std: float,
                 quality_sigmas: float = 3.0, min_samples_per_mode: int = 20) -> dict:
    """Modes covered and high-quality fraction of generated ``samples`` ``(n, dim)``.

    A sample is high quality when it lies within ``quality_sigmas * std`` of its nearest centre
    (``centres`` ``(m, dim)``); a mode is covered when at least ``min_samples_per_mode``
    high-quality samples fall to it. Non-finite samples (a diverged generator) count as low quality.

    Returns ``{"modes_covered": int, "high_quality_fraction": float, "per_mode_counts": list[int]}``,
    where ``per_mode_counts[j]`` is the number of high-quality samples nearest to centre ``j``.
    """
    samples = _check_points("samples", samples)
    centres = _check_points("centres", centres)
    if samples.shape[1] != centres.shape[1]:
        raise ValueError(f"samples have dimension {samples.shape[1]} but centres have "
                         f"{centres.shape[1]}; they must match")
    std = _check_positive("std", std)
    quality_sigmas = _check_positive("quality_sigmas", quality_sigmas)
    if (not isinstance(min_samples_per_mode, numbers.Integral) or isinstance(min_samples_per_mode, bool)
            or min_samples_per_mode < 1):
        raise ValueError(f"min_samples_per_mode={min_samples_per_mode!r} is not valid; "
                         "it must be an int >= 1")

    distances = torch.cdist(samples, centres, compute_mode="donot_use_mm_for_euclid_dist")  # (n, m)
    # a diverged sample has NaN distances; as inf it can never be high quality
    nearest_distance, nearest_mode = distances.nan_to_num(nan=math.inf).min(dim=1)
    high_quality = nearest_distance <= quality_sigmas * std  # (n,)
    counts = torch.bincount(nearest_mode[high_quality], minlength=len(centres))  # (m,)
    return {
        "modes_covered": int((counts >= min_samples_per_mode).sum()),
        "high_quality_fraction": float(high_quality.double().mean()),
        "per_mode_counts": [int(c) for c in counts],
    }

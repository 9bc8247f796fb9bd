"""GAN sample-quality metrics.

For 2-D toy mixtures, ``mode_quality`` counts the modes a generator covers and the fraction of
its samples that land near a mode (the protocol of the unrolled-GAN and SVMax ring experiments).

For images, the distances work on feature vectors (labkit's own classifier features, see
``labkit.metrics.gan_features``, stand in for Inception's):

- ``frechet_distance``: the Fréchet distance between Gaussians fitted to two feature sets (FID's
  formula, Heusel et al. 2017).
- ``knn_precision_recall``: improved precision and recall (Kynkäänniemi et al., NeurIPS 2019),
  with each set's manifold the union of balls reaching each point's k-th nearest neighbour.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from labkit.config import check_positive_int


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


def _check_feature_pair(features_a, features_b, name_a: str, name_b: str,
                        min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 CPU matrices ``(n, d)`` and ``(m, d)`` with at least ``min_rows`` rows each."""
    checked = []
    for name, features in ((name_a, features_a), (name_b, features_b)):
        features = torch.as_tensor(features).detach().cpu()
        if features.ndim != 2 or features.shape[1] == 0:
            raise ValueError(f"{name} must be an (n, d) feature matrix; got shape {tuple(features.shape)}")
        if len(features) < min_rows:
            raise ValueError(f"{name} has {len(features)} rows; it needs at least {min_rows}")
        if features.is_complex() or features.dtype == torch.bool:
            raise ValueError(f"{name} must hold real numbers; got dtype {features.dtype}")
        checked.append(features.double())
    if checked[0].shape[1] != checked[1].shape[1]:
        raise ValueError(f"{name_a} has dimension {checked[0].shape[1]} but {name_b} has "
                         f"{checked[1].shape[1]}; they must match")
    return checked[0], checked[1]


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor, eps: float = 1e-6) -> float:
    r"""Fréchet distance between Gaussians fitted to ``features_a`` ``(n, d)`` and ``features_b`` ``(m, d)``.

    .. math:: \|\mu_a - \mu_b\|^2 + \operatorname{Tr}\big(\Sigma_a + \Sigma_b - 2(\Sigma_a\Sigma_b)^{1/2}\big)

    with ``eps * I`` added to both (unbiased) covariances, as ReLU features are rank-deficient and
    a singular product has no stable square root. Computed in float64 with
    ``scipy.linalg.sqrtm``; its imaginary round-off is dropped and a result below 0 (round-off
    when the sets coincide) is returned as 0. Symmetric in its arguments; ``||mu_a - mu_b||^2``
    when the covariances are equal. A set with a non-finite feature (a diverged generator) gives
    ``inf``. Both sets need at least 2 rows.
    """
    from scipy.linalg import sqrtm  # imported here so that importing labkit.metrics stays cheap

    features_a, features_b = _check_feature_pair(features_a, features_b, "features_a", "features_b")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps={eps!r} is not valid; it must be a finite number >= 0")
    if not (torch.isfinite(features_a).all() and torch.isfinite(features_b).all()):
        return math.inf
    a, b = features_a.numpy(), features_b.numpy()
    identity = np.eye(a.shape[1])
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)  # (d,)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + float(eps) * identity  # (d, d)
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + float(eps) * identity
    with warnings.catch_warnings():
        # sqrtm may report a poor condition number; the trace it feeds is still accurate
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = sqrtm(cov_a @ cov_b)  # (d, d), may be complex from round-off
    covmean = np.real(covmean)
    diff = mean_a - mean_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    if not math.isfinite(value):
        return math.inf
    return max(value, 0.0)


def _kth_neighbour_radii(points: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Distance from each row of ``points`` ``(n, d)`` to its k-th nearest other row: ``(n,)``."""
    radii = []
    for start in range(0, len(points), chunk_size):
        chunk = points[start:start + chunk_size]  # (c, d)
        distances = torch.cdist(chunk, points, compute_mode="donot_use_mm_for_euclid_dist")  # (c, n)
        # the k+1 smallest include the point itself at distance 0
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor,
                     chunk_size: int) -> torch.Tensor:
    """Whether each query ``(q, d)`` lies within ``radii[j]`` of some ``points[j]``: ``(q,)`` bool."""
    inside = []
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start:start + chunk_size]
        distances = torch.cdist(chunk, points, compute_mode="donot_use_mm_for_euclid_dist")  # (c, n)
        # a NaN distance compares False: a non-finite query is inside nothing
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def knn_precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3,
                         chunk_size: int = 1024) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake vs real features.

    Each set's manifold is the union of balls centred on its points, each reaching that point's
    ``k``-th nearest neighbour within the set. Precision is the share of ``fake_features``
    ``(m, d)`` inside the real manifold (are samples realistic?); recall is the share of
    ``real_features`` ``(n, d)`` inside the fake manifold (are the real modes covered?). A
    generator that collapses to a few points keeps precision high and loses recall. Distances
    are exact Euclidean (float64), computed ``chunk_size`` rows at a time.

    A fake with a non-finite feature lies in no manifold and spans none; real features must be
    finite. Each set needs more than ``k`` rows. Returns ``{"precision": float, "recall": float}``.
    """
    k = check_positive_int("k", k)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    real, fake = _check_feature_pair(real_features, fake_features, "real_features", "fake_features",
                                     min_rows=k + 1)
    if not torch.isfinite(real).all():
        raise ValueError("real_features holds non-finite values; the reference set must be finite")
    finite_fake = torch.isfinite(fake).all(dim=1)  # (m,)
    real_radii = _kth_neighbour_radii(real, k, chunk_size)  # (n,)
    precision = _inside_manifold(fake, real, real_radii, chunk_size).double().mean()
    fake_ok = fake[finite_fake]
    if len(fake_ok) > k:
        fake_radii = _kth_neighbour_radii(fake_ok, k, chunk_size)
        recall = _inside_manifold(real, fake_ok, fake_radii, chunk_size).double().mean()
    else:  # too few usable fakes to span a manifold
        recall = torch.tensor(0.0)
    return {"precision": float(precision), "recall": float(recall)}

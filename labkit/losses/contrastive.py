r"""Self-supervised contrastive loss: NT-Xent (SimCLR, Chen et al. 2020).

Two views of each of ``b`` images give ``2b`` projections $z$, L2-normalised. Each is the anchor
of a ``2b − 1``-way classification whose one positive is its other view:

$$\ell_i = -\log\frac{\exp(z_i^\top z_{p(i)}/\tau)}{\sum_{k\ne i}\exp(z_i^\top z_k/\tau)},\qquad
\mathcal L = \frac{1}{2b}\sum_i \ell_i .$$
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

__all__ = ["nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of two views ``z1``, ``z2`` of shape ``(b, d)`` (row ``i`` of each from image ``i``);
    the rows are L2-normalised here. Returns a 0-d tensor."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both have shape (b, d); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if len(z1) < 2:
        raise ValueError(f"nt_xent needs at least 2 images per batch (negatives); got b={len(z1)}")
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature!r} is not valid; it must be a finite number > 0")
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    b = len(z1)
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, positives)

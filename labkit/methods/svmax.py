r"""SVMax: A Feature Embedding Regularizer.

Ahmed Taha, Alex Hanson, Abhinav Shrivastava, Larry S. Davis (University of Maryland).
arXiv 2103.02770 (2021); an earlier version was an ICLR 2021 OpenReview submission.

**Idea.** When a mini-batch of embeddings collapses onto a few directions, the batch matrix has
low rank and its mean singular value is small. SVMax regularizes the activations, not the weights:
it maximizes the mean singular value of each mini-batch embedding matrix, which spreads the
embeddings over all dimensions without using labels. For L2-normalized rows the mean singular
value has closed-form bounds, so the penalty can be rescaled until its weight no longer depends on
the batch size or the embedding size.

**Equations** (numbered as in the paper).

- Mean singular value: $s_\mu = \frac1d\sum_{i=1}^{d} s_i = \|E\|_*/d$, for $E\in\mathbb{R}^{b\times d}$, $b\ge d$.
- Eq. (1), plain form: $L_{NN} = L_r - \lambda\, s_\mu$.
- Bounds for unit-norm rows ($\|E\|_F=\sqrt b$): lower $L = \sqrt b / d$ (rank 1, from
  $\|E\|_*\ge\|E\|_F$); upper $U = \sqrt{b\,\min(b,d)}/d$ (all singular values equal, from
  $\|E\|_*\le\sqrt{\mathrm{rank}}\,\|E\|_F$), which is $\sqrt{b/d}$ when $b\ge d$.
- Eq. (4), bounded form: $L_{NN} = L_r + \lambda\exp\big((U - s_\mu)/(U - L)\big)$, which lies in
  $[\lambda, \lambda e]$: $\lambda e$ at full collapse, $\lambda$ at isotropy.

| symbol | variable |
|---|---|
| $E$ (one row per sample) | `E`, shape `(b, d)` |
| $b$, $d$ | `b`, `d` (batch size, embedding size) |
| $s_i$, $s_\mu$ | `torch.linalg.svdvals(E)`, `mean_singular_value(E)` |
| $L$, $U$ | `lower_bound(b, d)`, `upper_bound(b, d)` |
| $\lambda$ | `lam` |
| $(s_\mu - L)/(U - L)$ | `normalized_spread(E)` |

**Deviations at this scale.** The paper trains GoogLeNet/ResNet50 on CUB, CARS and SOP with
$d=128$, $b=144$; we train an MLP (64→128→128→16) on scikit-learn digits with $d=16$ and
$b=150$ (5 classes × 30), train on classes 0–4 and test retrieval on 5–9. The ring GAN uses
small MLPs and the plain form on the generator's (unnormalized, origin-centred) 2-D batch.
We allow $b = d$ (the official snippet asserts $b > d$); $b < d$ is refused unless asked for.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch

from labkit.config import as_generator, check_choice, check_range

__all__ = [
    "mean_singular_value", "lower_bound", "upper_bound", "svmax_bounded", "svmax_plain",
    "normalized_spread", "SVMAX_FORMS", "svmax_penalty",
    "orthonormal_stack", "isotropic_batch", "collapsed_batch", "random_unit_batch",
]


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {name}={value!r}")
    return int(value)


def _check_embeddings(E: torch.Tensor) -> tuple[int, int]:
    if not isinstance(E, torch.Tensor) or E.ndim != 2:
        shape = tuple(E.shape) if isinstance(E, torch.Tensor) else type(E).__name__
        raise ValueError(f"E must be a 2-D tensor of shape (b, d); got {shape}")
    return E.shape[0], E.shape[1]


def mean_singular_value(E: torch.Tensor, *, allow_fewer_rows: bool = False) -> torch.Tensor:
    r"""Mean singular value $s_\mu = \|E\|_*/d$ of a batch ``E`` of shape (b, d); a 0-d tensor.

    ``b < d`` is refused, as in the official code: E then has only b singular values, the
    $b \ge d$ bound $U=\sqrt{b/d}$ used by the paper cannot be reached, and a $\lambda$ tuned at
    $b \ge d$ does not transfer. ``allow_fewer_rows=True`` computes it anyway (the sum of the b
    singular values divided by d) and warns, for the $b<d$ ablation. (``upper_bound`` keeps the
    general $\min(b, d)$ form, $b/d$ here, which unit rows still respect.)
    """
    b, d = _check_embeddings(E)
    if b < d:
        if not allow_fewer_rows:
            raise ValueError(f"E has b={b} rows and d={d} columns; SVMax needs b >= d (batch size at "
                             f"least the embedding size). Pass allow_fewer_rows=True to compute it anyway")
        warnings.warn(f"b={b} < d={d}: the SVMax bounds of the paper do not hold (they assume b >= d). "
                      f"Only b singular values exist, so U=sqrt(b/d)={math.sqrt(b / d):.4g} cannot be reached "
                      f"(s_mu <= b/d={b / d:.4g}) and a lambda tuned at b >= d does not transfer",
                      UserWarning, stacklevel=2)
    # svdvals, not svd: its backward is U diag(g) V^T, which stays finite when singular values
    # are equal (isotropy) -- backpropagating through svd's U and V divides by s_i^2 - s_j^2.
    return torch.linalg.svdvals(E).sum() / d


def lower_bound(b: int, d: int) -> float:
    r"""$L = \sqrt b / d$: $s_\mu$ of a rank-1 batch of b unit rows in d dimensions."""
    b, d = _check_size("b", b), _check_size("d", d)
    return math.sqrt(b) / d


def upper_bound(b: int, d: int) -> float:
    r"""$U = \sqrt{b\min(b,d)}/d$: $s_\mu$ of an isotropic batch ($E^\top E = \tfrac bd I$ for b >= d)."""
    b, d = _check_size("b", b), _check_size("d", d)
    return math.sqrt(b * min(b, d)) / d


def _bounds(b: int, d: int) -> tuple[float, float]:
    low, high = lower_bound(b, d), upper_bound(b, d)
    if high <= low:  # min(b, d) == 1: every unit-row batch is rank 1, the bounds coincide
        raise ValueError(f"b={b}, d={d}: L == U, so the spread (s_mu - L)/(U - L) is undefined; "
                         f"use b >= 2 and d >= 2")
    return low, high


def _check_unit_rows(E: torch.Tensor, tolerance: float = 1e-4) -> None:
    worst = (torch.linalg.vector_norm(E.detach(), dim=1) - 1).abs().max().item()
    if worst > tolerance:
        raise ValueError(f"rows of E must be L2-normalized for the SVMax bounds; the largest "
                         f"| ||e_j|| - 1 | is {worst:.3g} (tolerance {tolerance:g})")


def svmax_bounded(E: torch.Tensor, lam: float, *, check_normalized: bool = False,
                  allow_fewer_rows: bool = False) -> torch.Tensor:
    r"""Eq. (4): $\lambda\exp((U - s_\mu)/(U - L))$ for ``E`` of shape (b, d); a 0-d tensor.

    The bounds hold only for L2-normalized rows; this function does not normalize (that would
    hide a missing normalization in the model). ``check_normalized=True`` raises if any row's
    norm differs from 1 by more than 1e-4.
    """
    check_range("lam", float(lam), 0.0)  # a negative weight would reward collapse
    if check_normalized:
        _check_unit_rows(E)
    b, d = _check_embeddings(E)
    low, high = _bounds(b, d)
    s_mu = mean_singular_value(E, allow_fewer_rows=allow_fewer_rows)
    # Eq. (4): (U - s_mu) shrinks as s_mu grows, so minimizing the penalty spreads the batch;
    # dividing by (U - L) maps the exponent to [0, 1] whatever b and d are.
    return lam * torch.exp((high - s_mu) / (high - low))


def svmax_plain(E: torch.Tensor, lam: float, *, allow_fewer_rows: bool = False) -> torch.Tensor:
    r"""Eq. (1) regularizer term: $-\lambda s_\mu$ for ``E`` of shape (b, d); a 0-d tensor.

    Added to the task loss; the minus sign makes minimization *increase* $s_\mu$. Used on the
    GAN generator's unnormalized 2-D batch, where the bounds do not apply.
    """
    check_range("lam", float(lam), 0.0)
    return -lam * mean_singular_value(E, allow_fewer_rows=allow_fewer_rows)


def normalized_spread(E: torch.Tensor) -> torch.Tensor:
    r"""$(s_\mu - L)/(U - L)$ for unit-row ``E`` (b, d): 0 at collapse, 1 at isotropy; 0-d tensor."""
    b, d = _check_embeddings(E)
    low, high = _bounds(b, d)
    return (mean_singular_value(E) - low) / (high - low)


SVMAX_FORMS = {"bounded": svmax_bounded, "plain": svmax_plain}


def svmax_penalty(E: torch.Tensor, lam: float, form: str = "bounded", **options) -> torch.Tensor:
    """The SVMax term in the named ``form`` (a key of ``SVMAX_FORMS``) for ``E`` of shape (b, d)."""
    check_choice("form", form, SVMAX_FORMS)
    return SVMAX_FORMS[form](E, lam, **options)


# --- Batches for the bounds explorer and the bound tests -------------------------------------

def orthonormal_stack(k: int, d: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""k random orthonormal bases of R^d stacked: shape (k*d, d), $E^\top E = kI$, so $s_\mu = U$."""
    k, d = _check_size("k", k), _check_size("d", d)
    gaussian = torch.randn(k, d, d, generator=as_generator(generator), dtype=torch.float64)
    bases, _ = torch.linalg.qr(gaussian)  # (k, d, d), each an orthogonal matrix
    return bases.reshape(k * d, d).to(dtype)


def isotropic_batch(b: int, d: int, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""b unit rows from ceil(b/d) stacked orthonormal bases, truncated: shape (b, d).

    $s_\mu = U$ exactly when d divides b; otherwise the last basis is partial and $s_\mu$ is close
    to, but below, U.
    """
    b, d = _check_size("b", b), _check_size("d", d)
    return orthonormal_stack(math.ceil(b / d), d, generator, dtype)[:b]


def collapsed_batch(b: int, d: int, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""b copies of one random unit vector with random signs: shape (b, d), rank 1, $s_\mu = L$."""
    b, d = _check_size("b", b), _check_size("d", d)
    generator = as_generator(generator)
    direction = torch.randn(d, generator=generator, dtype=torch.float64)
    signs = torch.randint(0, 2, (b, 1), generator=generator).to(torch.float64) * 2 - 1
    return (signs * direction / torch.linalg.vector_norm(direction)).to(dtype)


def random_unit_batch(b: int, d: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""b Gaussian rows projected onto the unit sphere: shape (b, d), $L \le s_\mu \le U$."""
    b, d = _check_size("b", b), _check_size("d", d)
    gaussian = torch.randn(b, d, generator=as_generator(generator), dtype=torch.float64)
    return torch.nn.functional.normalize(gaussian, dim=1).to(dtype)

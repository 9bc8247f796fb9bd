r"""SLADE: A Self-Training Framework for Distance Metric Learning.

Jiali Duan, Yen-Liang Lin, Son Tran, Larry S. Davis, C.-C. Jay Kuo. CVPR 2021, arXiv 2011.10269.
No official code exists: every constant the paper does not publish is ours (marked *ours*).

**Idea.** A teacher trained with a ranking loss on labeled images clusters an unlabeled pool into
pseudo classes; a student learns from labels and pseudo labels. Cluster labels are noisy, so the
student also learns a *feature basis* (one vector per labeled class) and re-expresses every
embedding as its responses to the basis; similarity in that space decides which unlabeled pairs
are confident enough to train on. The student then becomes the next teacher.

**Equations** (numbered as in the paper).

- (1) ranking loss on pairs, contrastive form: $\sum_{\mathcal P}[d_{ij} - m_{pos}]_+ + \sum_{\mathcal N}[m_{neg} - d_{ij}]_+$.
- basis responses $r(x) = W_a f(x)$, $W_a \in \mathbb R^{C\times d}$, one row per labeled class.
- (2) $\mathcal L_{Basis} = \mathcal L_{CE} + \mathcal L_{SD}$;
  (3) $\mathcal L_{CE}$: softmax cross-entropy of the scaled responses against the labels (labeled data only);
  (4) $s_{ij} = \cos(r(x_i), r(x_j))$;
  (5) $\mathcal L_{SD} = [\mu^- - \mu^+ + m_{sd}]_+ + \sigma^{+2} + \sigma^{-2}$ over the same- and
  different-pseudo-label pairs of an unlabeled batch (the spec's form, *verify* against the PDF).
- (6) momentum statistics $\mu^\pm \leftarrow \beta\mu^\pm + (1-\beta)\mu^\pm_{batch}$ (and $\sigma^{\pm2}$), $\beta = 0.99$.
- (7) confident pairs $\mathcal P^u = \{s_{ij} > T_1\}$, $\mathcal N^u = \{s_{ij} < T_2\}$, $T_1 = \mu^+ + \delta$, $T_2 = \mu^- - \delta$.
- (9) $\mathcal L = \mathcal L_{rank}(D^l) + \lambda_1\mathcal L_{rank}(D^u; \mathcal P^u, \mathcal N^u) + \lambda_2\mathcal L_{Basis}$.

| symbol | variable |
|---|---|
| $f(x)$ | `E`, L2-normalised embeddings `(b, d)` |
| $W_a$, $r(x)$ | `FeatureBasis.weight` `(C, d)`, `FeatureBasis(E)` `(b, C)` |
| $s_{ij}$ | `cosine_matrix(r)` `(b, b)` |
| $\mu^\pm$, $\sigma^{\pm2}$, $\beta$ | `MomentumStats` |
| $T_1$, $T_2$, $\delta$ | `MomentumStats.thresholds(delta)` |
| $\mathcal P^u$, $\mathcal N^u$ | `select_pairs(...)` → boolean masks `(b, b)` |

**Ours, not the paper's.** The basis rows are L2-normalised and the responses scaled by 10 for the
cross-entropy (a cosine classifier; the spec's "logit scale 10"); $\mathcal L_{SD}$ is computed on
batch statistics (its gradient would shrink by $1-\beta$ on the blended ones) and the blended
statistics set the thresholds; the statistics are seeded from the first batch that has each pair
type; mining stays off until $\mu^+ > \mu^-$; the similarities used for mining are detached.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_positive_int, check_range
from labkit.losses.ranking import pairwise_distances

__all__ = ["SELECTIONS", "pseudo_labels", "FeatureBasis", "cosine_matrix", "pair_statistics",
           "similarity_distribution_loss", "MomentumStats", "select_pairs", "masked_contrastive_loss",
           "pseudo_label_pairs"]

SELECTIONS = ("sim", "sim+label")


def pseudo_labels(embeddings: torch.Tensor, k: int, seed: int = 0, n_init: int = 4,
                  min_cluster_size: int = 2) -> np.ndarray:
    """Step 2: k-means (scikit-learn) on L2-normalised ``embeddings`` ``(n, d)`` → labels ``(n,)``
    in ``0..k'-1``. Members of clusters smaller than ``min_cluster_size`` (singletons give no
    pairs) move to the nearest remaining centre; ids are then renumbered contiguously."""
    from sklearn.cluster import KMeans

    X = F.normalize(torch.as_tensor(embeddings).detach().double(), dim=1).cpu().numpy()
    k = check_positive_int("k", k)
    if k > len(X):
        raise ValueError(f"k={k} is not valid; it must be at most the number of embeddings ({len(X)})")
    kmeans = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X)
    labels, centres = kmeans.labels_.copy(), kmeans.cluster_centers_
    sizes = np.bincount(labels, minlength=k)
    keep = np.flatnonzero(sizes >= min_cluster_size)
    if len(keep) == 0:
        raise ValueError(f"every cluster has fewer than min_cluster_size={min_cluster_size} members; lower k={k}")
    tiny = ~np.isin(labels, keep)
    if tiny.any():
        nearest = ((X[tiny, None, :] - centres[None, keep, :]) ** 2).sum(-1).argmin(1)
        labels[tiny] = keep[nearest]
    return np.unique(labels, return_inverse=True)[1]


class FeatureBasis(nn.Module):
    """The basis $W_a$ ``(num_classes, dim)``: ``forward(E (b, dim))`` → responses ``(b, num_classes)``
    to the L2-normalised basis vectors; ``logits(E)`` scales them for Eq. (3)."""

    def __init__(self, num_classes: int, dim: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(check_positive_int("num_classes", num_classes),
                                               check_positive_int("dim", dim)) / math.sqrt(dim))
        self.scale = float(check_range("scale", scale, 0.0, low_open=True))

    def forward(self, E: torch.Tensor) -> torch.Tensor:
        return E @ F.normalize(self.weight, dim=1).t()

    def logits(self, E: torch.Tensor) -> torch.Tensor:
        return self.scale * self(E)


def cosine_matrix(r: torch.Tensor) -> torch.Tensor:
    """Eq. (4): ``(b, b)`` cosine similarities between the rows of ``r`` ``(b, K)``."""
    r = F.normalize(r, dim=1)
    return r @ r.t()


def pseudo_label_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same, different) pseudo-label masks ``(b, b)`` over pairs i < j."""
    upper = torch.triu(torch.ones(len(labels), len(labels), dtype=torch.bool, device=labels.device), diagonal=1)
    same = labels[:, None] == labels[None, :]
    return same & upper, ~same & upper


def pair_statistics(s: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """Batch means and (biased) variances of ``s`` over same / different pseudo-label pairs, and
    the pair counts. A statistic over no pairs is NaN."""
    same, different = pseudo_label_pairs(labels)
    out: dict[str, torch.Tensor | int] = {}
    for sign, mask in (("pos", same), ("neg", different)):
        values = s[mask]
        out[f"num_{sign}"] = int(mask.sum())
        out[f"mu_{sign}"] = values.mean() if values.numel() else s.new_tensor(math.nan)
        out[f"var_{sign}"] = values.var(unbiased=False) if values.numel() else s.new_tensor(math.nan)
    return out


def similarity_distribution_loss(s: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Eq. (5) on batch statistics: ``[μ⁻ − μ⁺ + m]₊ + σ⁺² + σ⁻²`` (0-d). A batch without one of
    the pair types gives only the variance it has (and 0 with neither)."""
    stats = pair_statistics(s, labels)
    loss = s.new_zeros(())
    if stats["num_pos"] and stats["num_neg"]:
        loss = loss + F.relu(stats["mu_neg"] - stats["mu_pos"] + margin)
    for sign in ("pos", "neg"):
        if stats[f"num_{sign}"]:
            loss = loss + stats[f"var_{sign}"]
    return loss


class MomentumStats:
    """Eq. (6): global μ⁺, σ⁺², μ⁻, σ⁻² as momentum averages of batch statistics (β = ``beta``).

    Each pair type's statistics are seeded from the first batch that has that type (not from 0);
    a batch without it leaves them unchanged."""

    def __init__(self, beta: float = 0.99):
        self.beta = float(check_range("beta", beta, 0.0, 1.0, high_open=True))
        self.values: dict[str, float] = {}

    def update(self, stats: dict) -> None:
        for sign in ("pos", "neg"):
            if not stats[f"num_{sign}"]:
                continue
            for name in (f"mu_{sign}", f"var_{sign}"):
                batch = float(stats[name])
                old = self.values.get(name)
                self.values[name] = batch if old is None else self.beta * old + (1 - self.beta) * batch

    @property
    def ready(self) -> bool:
        """Both pair types seen and the bands ordered (μ⁺ > μ⁻): mining is defined."""
        return "mu_pos" in self.values and "mu_neg" in self.values and self.values["mu_pos"] > self.values["mu_neg"]

    def thresholds(self, delta: float = 0.0) -> tuple[float, float]:
        """Eq. (7)'s ``(T1, T2) = (μ⁺ + δ, μ⁻ − δ)``; raises before both pair types were seen."""
        if "mu_pos" not in self.values or "mu_neg" not in self.values:
            raise ValueError("no thresholds yet: the statistics have not seen both same- and different-label pairs")
        return self.values["mu_pos"] + delta, self.values["mu_neg"] - delta


def select_pairs(s: torch.Tensor, labels: torch.Tensor, stats: MomentumStats, select: str = "sim+label",
                 delta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (7): confident positive and negative pairs ``(b, b)`` (i < j) of an unlabeled batch.

    ``s`` is detached first: which pairs train is a choice, not something to differentiate.
    ``select="sim"`` uses the thresholds alone; ``"sim+label"`` also needs the pseudo labels to
    agree (same label for a positive, different for a negative). Empty while ``stats`` is not
    ``ready``, or when δ makes the thresholds cross."""
    check_choice("select", select, SELECTIONS)
    if not isinstance(delta, numbers.Real) or isinstance(delta, bool) or not math.isfinite(delta):
        raise ValueError(f"delta={delta!r} is not valid; it must be a finite number")
    same, different = pseudo_label_pairs(labels)
    upper = same | different
    empty = torch.zeros_like(upper)
    if not stats.ready:
        return empty, empty
    t1, t2 = stats.thresholds(delta)
    if t1 <= t2:
        return empty, empty
    s = s.detach()
    positive, negative = (s > t1) & upper, (s < t2) & upper
    if select == "sim+label":
        positive, negative = positive & same, negative & different
    return positive, negative


def masked_contrastive_loss(E: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                            pos_margin: float = 0.0, neg_margin: float = 0.8) -> torch.Tensor:
    """Eq. (1) on the given pairs of ``E`` ``(b, d)``: mean over the selected pairs of
    ``[d − m_pos]₊`` (positives) and ``[m_neg − d]₊`` (negatives); 0 (with a graph) when none."""
    if positive.shape != (len(E), len(E)) or negative.shape != positive.shape:
        raise ValueError(f"positive and negative must be ({len(E)}, {len(E)}) masks; got {tuple(positive.shape)} "
                         f"and {tuple(negative.shape)}")
    if (positive & negative).any():
        raise ValueError("a pair is both positive and negative: the masks must be disjoint")
    d = pairwise_distances(E)
    terms = torch.cat([F.relu(d[positive] - pos_margin), F.relu(neg_margin - d[negative])])
    return terms.mean() if terms.numel() else E.sum() * 0.0

r"""Ranking losses for metric learning, and the spread-out regularizer used as a baseline.

Every loss takes a batch ``E`` of shape (b, d) -- L2-normalized embeddings, one row per sample --
and integer ``labels`` of shape (b,), and returns a 0-d tensor. All of them are vectorized over
pairs (no Python loop over pairs). With unit rows the Euclidean distance lies in [0, 2].

| loss | form | reference |
|---|---|---|
| contrastive | positives $D$, negatives $[m - D]_+$, mean over pairs $i<j$ | Hadsell et al. 2006 |
| triplet | batch-hard $[D(a,p^*) - D(a,n^*) + m]_+$ | Hermans et al. 2017 |
| npair | softmax over $f_a^\top f_p$ across classes | Sohn 2016 |
| angular | $\log(1 + \sum_n \exp f_{a,p,n})$ | Wang et al. 2017 |
| spread-out | $M_1^2 + [M_2 - 1/d]_+$ on non-matching pairs | Zhang et al. 2017 |
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.config import check_choice, check_range

__all__ = [
    "pairwise_distances", "contrastive_loss", "triplet_loss", "npair_loss", "angular_loss",
    "RANKING_LOSSES", "ranking_loss", "spread_out_regularizer",
]


def _check_batch(E: torch.Tensor, labels: torch.Tensor) -> None:
    if E.ndim != 2:
        raise ValueError(f"E must have shape (b, d); got {tuple(E.shape)}")
    if labels.ndim != 1 or labels.shape[0] != E.shape[0]:
        raise ValueError(f"labels must have shape (b,) = ({E.shape[0]},); got {tuple(labels.shape)}")


def pairwise_distances(E: torch.Tensor) -> torch.Tensor:
    r"""Euclidean distances between the rows of ``E`` (b, d): shape (b, b), zero diagonal.

    Uses $\|x\|^2 + \|y\|^2 - 2x^\top y$ (one matmul); rounding can make it slightly negative,
    so it is clamped at 0. Squared distances at rounding level (the diagonal, duplicated rows of a
    collapsed batch) are pure noise, so they are set to exactly 0 through ``where``: sqrt's
    unbounded slope near 0 then never amplifies that noise into the gradient.
    """
    squared_norms = (E * E).sum(dim=1)
    squared = (squared_norms[:, None] + squared_norms[None, :] - 2 * E @ E.T).clamp(min=0)
    tiny = torch.finfo(E.dtype).eps
    off_diagonal = ~torch.eye(E.shape[0], dtype=torch.bool, device=E.device)
    positive = (squared > tiny) & off_diagonal
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(same class, different class) masks of shape (b, b); the diagonal is in neither."""
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & off_diagonal, ~same


def contrastive_loss(E: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss over all pairs i < j of ``E`` (b, d): a positive pair costs its distance
    $D$, a negative pair $[m - D]_+$, and the loss is the mean over all pairs (negatives outnumber
    positives in a class-balanced batch, so they weigh more). In [0, 2] for unit rows, m <= 2.
    """
    _check_batch(E, labels)
    check_range("margin", margin, 0.0)
    distances = pairwise_distances(E)
    positive, negative = _pair_masks(labels)
    # Spec form (1 - delta) D + delta [m - D]_+ (delta = 1 for a negative): not squared, so it
    # stays in [0, 2] on the unit sphere and the SVMax weight can be chosen from that range.
    per_pair = torch.where(positive, distances, F.relu(margin - distances))
    upper = torch.triu(torch.ones_like(positive), diagonal=1)
    if not upper.any():
        raise ValueError(f"contrastive_loss needs at least 2 samples; got b={E.shape[0]}")
    return per_pair[upper].mean()


def triplet_loss(E: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Batch-hard triplet loss on ``E`` (b, d): each anchor takes its farthest positive $p^*$ and
    its nearest negative $n^*$; $[D(a,p^*) - D(a,n^*) + m]_+$ averaged over the anchors that have
    at least one positive and one negative.
    """
    _check_batch(E, labels)
    check_range("margin", margin, 0.0)
    distances = pairwise_distances(E)
    positive, negative = _pair_masks(labels)
    usable = positive.any(dim=1) & negative.any(dim=1)
    if not usable.any():
        raise ValueError("triplet_loss needs an anchor with a positive and a negative: at least two "
                         f"classes, one with >= 2 samples; got labels {labels.tolist()}")
    # Distances are >= 0, so filling non-positives with 0 never wins the max; non-negatives are
    # filled with +inf so that they never win the min.
    hardest_positive = distances.masked_fill(~positive, 0.0).amax(dim=1)
    hardest_negative = distances.masked_fill(~negative, math.inf).amin(dim=1)
    per_anchor = F.relu(hardest_positive - hardest_negative + margin)
    return per_anchor[usable].mean()


def _anchor_positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (anchors, positives), one pair per class (its first two samples in batch order),
    classes in increasing label order. Raises if a class has fewer than 2 samples.
    """
    order = torch.sort(labels, stable=True).indices
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    if (counts < 2).any():
        singles = classes[counts < 2].tolist()
        raise ValueError(f"each class needs at least 2 samples (an anchor and a positive); "
                         f"class(es) {singles} have only 1")
    first = torch.cumsum(counts, dim=0) - counts  # where each class starts in the sorted order
    return order[first], order[first + 1]


def npair_loss(E: torch.Tensor, labels: torch.Tensor, l2_weight: float = 0.0) -> torch.Tensor:
    r"""Multi-class N-pair loss on ``E`` (b, d): with one (anchor, positive) pair per class,
    $\frac1N\sum_i \log(1 + \sum_{j\ne i}\exp(f_i^\top f_j^+ - f_i^\top f_i^+))$, i.e. cross-entropy
    over ``anchors @ positives.T`` with the class's own positive as target. ``l2_weight`` adds
    Sohn's penalty on the mean squared norm of the chosen embeddings (off: rows are normalized).
    """
    _check_batch(E, labels)
    check_range("l2_weight", l2_weight, 0.0)
    anchor_index, positive_index = _anchor_positive_pairs(labels)
    anchors, positives = E[anchor_index], E[positive_index]  # (N, d) each
    logits = anchors @ positives.T  # (N, N); the diagonal is each anchor's own positive
    loss = F.cross_entropy(logits, torch.arange(len(anchors), device=E.device))
    if l2_weight > 0:
        loss = loss + l2_weight * torch.cat([anchors, positives]).pow(2).sum(dim=1).mean()
    return loss


def angular_loss(E: torch.Tensor, labels: torch.Tensor, alpha_deg: float = 45.0) -> torch.Tensor:
    r"""Angular loss (Wang et al. 2017) in its N-pair form on ``E`` (b, d).

    Anchors and positives are paired as in ``npair_loss``; every batch sample of another class is
    a negative $x_n$. With $t = \tan\alpha$,
    $f_{a,p,n} = 4t^2 (x_a + x_p)^\top x_n - 2(1 + t^2)\, x_a^\top x_p$ and the loss is the mean over
    anchors of $\log(1 + \sum_n \exp f_{a,p,n})$, computed as a logsumexp with a 0 logit.
    """
    _check_batch(E, labels)
    check_range("alpha_deg", alpha_deg, 0.0, 90.0, low_open=True, high_open=True)
    tan_squared = math.tan(math.radians(alpha_deg)) ** 2
    anchor_index, positive_index = _anchor_positive_pairs(labels)
    anchors, positives = E[anchor_index], E[positive_index]  # (N, d) each
    to_negatives = 4 * tan_squared * (anchors + positives) @ E.T  # (N, b)
    anchor_positive = 2 * (1 + tan_squared) * (anchors * positives).sum(dim=1, keepdim=True)  # (N, 1)
    is_negative = labels[anchor_index][:, None] != labels[None, :]  # (N, b)
    logits = (to_negatives - anchor_positive).masked_fill(~is_negative, -math.inf)
    # The 0 column is the "1 +" inside the log; it also keeps logsumexp finite without negatives.
    logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
    return torch.logsumexp(logits, dim=1).mean()


RANKING_LOSSES = {
    "contrastive": contrastive_loss,
    "triplet": triplet_loss,
    "npair": npair_loss,
    "angular": angular_loss,
}


def ranking_loss(name: str):
    """The loss function registered under ``name`` in ``RANKING_LOSSES``."""
    return RANKING_LOSSES[check_choice("loss", name, RANKING_LOSSES)]


def spread_out_regularizer(E: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    r"""Global orthogonal regularization (Zhang et al. 2017, "spread-out") on ``E`` (b, d).

    Over non-matching pairs i < j (different labels; every pair when ``labels`` is None),
    $M_1$ is the mean dot product and $M_2$ the mean squared dot product; the penalty is
    $M_1^2 + [M_2 - 1/d]_+$. Two independent uniform unit vectors have $E[x^\top y] = 0$ and
    $E[(x^\top y)^2] = 1/d$, so the penalty pulls non-matching pairs toward that spread.
    """
    b, d = E.shape
    if labels is None:
        non_matching = ~torch.eye(b, dtype=torch.bool, device=E.device)
    else:
        _check_batch(E, labels)
        non_matching = labels[:, None] != labels[None, :]
    non_matching = non_matching & torch.triu(torch.ones_like(non_matching), diagonal=1)
    if not non_matching.any():
        raise ValueError("spread_out_regularizer needs at least one non-matching pair; "
                         f"got b={b} with labels {None if labels is None else labels.tolist()}")
    dots = (E @ E.T)[non_matching]
    first_moment, second_moment = dots.mean(), dots.pow(2).mean()
    return first_moment.pow(2) + F.relu(second_moment - 1.0 / d)

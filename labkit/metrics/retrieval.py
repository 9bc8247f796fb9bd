"""Retrieval metrics for metric learning: Recall@K and NMI, as reported on CUB, CARS and SOP.

Both are computed on the test classes only (an open-set split), using every test sample as a
query against all the others (leave-one-out).
"""
from __future__ import annotations

import numbers
from typing import Iterable

import numpy as np
import torch

# queries per block of the distance matrix, to bound memory at (block, n) on large test sets
QUERY_BLOCK = 1024


def _check_embeddings_and_labels(embeddings, labels) -> tuple[torch.Tensor, torch.Tensor]:
    embeddings = torch.as_tensor(embeddings).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu()
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a (n, d) matrix; got shape {tuple(embeddings.shape)}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a (n,) vector; got shape {tuple(labels.shape)}")
    if len(embeddings) != len(labels):
        raise ValueError(f"embeddings has {len(embeddings)} rows but labels has {len(labels)}; "
                         "they must match")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or inf; the model has probably diverged")
    return embeddings.double(), labels


def _check_ks(ks: Iterable[int], num_samples: int) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty; pass at least one k")
    for k in ks:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k < num_samples:
            raise ValueError(f"ks holds {k!r}; each k must be an int with 1 <= k < n = {num_samples} "
                             "(a query is never its own neighbour)")
    return tuple(int(k) for k in ks)


def nearest_neighbours(embeddings: torch.Tensor, num_neighbours: int) -> torch.Tensor:
    """Indices of each row's ``num_neighbours`` nearest other rows, nearest first: ``(n, k)``.

    Euclidean distance; a row is never its own neighbour. Ties go to the lower index, so the
    result does not depend on how ``topk`` happens to order equal values.
    """
    n = len(embeddings)
    blocks = []
    for start in range(0, n, QUERY_BLOCK):
        queries = embeddings[start:start + QUERY_BLOCK]  # (q, d)
        # the direct formula, not the matmul shortcut, so duplicate points tie exactly at 0
        distances = torch.cdist(queries, embeddings, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(len(queries))
        distances[rows, rows + start] = float("inf")
        order = torch.sort(distances, dim=1, stable=True).indices  # stable: ties by index
        blocks.append(order[:, :num_neighbours])
    return torch.cat(blocks)


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor,
                ks: Iterable[int] = (1, 2, 4, 8)) -> dict[int, float]:
    """Fraction of queries with a same-label sample among their k nearest neighbours, per k.

    ``embeddings`` ``(n, d)``, ``labels`` ``(n,)``; every sample is a query against the other
    ``n - 1``. Returns ``{k: recall}`` with recall in [0, 1].
    """
    embeddings, labels = _check_embeddings_and_labels(embeddings, labels)
    ks = _check_ks(ks, len(embeddings))
    neighbours = nearest_neighbours(embeddings, max(ks))  # (n, max_k)
    hits = labels[neighbours] == labels[:, None]  # (n, max_k)
    # rank of the first same-label neighbour; max_k when there is none
    first_hit = torch.where(hits.any(dim=1), hits.int().argmax(dim=1), hits.shape[1])
    return {k: float((first_hit < k).double().mean()) for k in ks}


def nmi(embeddings: torch.Tensor, labels: torch.Tensor, num_clusters: int | None = None,
        seed: int = 0) -> float:
    """Normalized mutual information between KMeans clusters of ``embeddings`` and ``labels``.

    ``embeddings`` ``(n, d)``, ``labels`` ``(n,)``. ``num_clusters`` defaults to the number of
    distinct labels. KMeans uses ``n_init=10`` and ``random_state=seed``. Returns a value in [0, 1].
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeddings, labels = _check_embeddings_and_labels(embeddings, labels)
    if num_clusters is None:
        num_clusters = len(torch.unique(labels))
    is_int = isinstance(num_clusters, numbers.Integral) and not isinstance(num_clusters, bool)
    if not is_int or not 1 <= num_clusters <= len(embeddings):
        raise ValueError(f"num_clusters={num_clusters!r} is not valid; it must be an int in "
                         f"1..{len(embeddings)} (the number of samples)")
    kmeans = KMeans(n_clusters=int(num_clusters), n_init=10, random_state=seed)
    clusters = kmeans.fit_predict(embeddings.numpy())
    return float(normalized_mutual_info_score(labels.numpy(), np.asarray(clusters)))

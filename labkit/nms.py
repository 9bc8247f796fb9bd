r"""Greedy non-maximum suppression at four implementation levels, shared by the detection chapters.

Greedy NMS sorts boxes by score and, for each box not yet suppressed, keeps it and suppresses every
lower-ranked box whose IoU with it exceeds ``t``; it makes $O(N\cdot K)$ IoU evaluations for $K$
kept boxes. The same algorithm is written four times so that speed is compared at the same level:
``greedy_python`` (a plain double loop, the correctness oracle), ``greedy_torch`` (vectorized over
the remaining boxes, one kept box per iteration), ``greedy_numba`` (compiled, the algorithm of
torchvision's C++ CPU kernel) and ``nms_torchvision`` (that kernel itself).

Conventions, identical in every implementation (chapter 08's Pitfalls):

- boxes are ``(x1, y1, x2, y2)``; area is ``(x2 - x1)(y2 - y1)`` with no +1;
- IoU is ``inter / (area_i + area_j - inter)`` computed in float64 with the same operations in the
  same order, so every implementation rounds identically; two zero-area boxes have IoU 0;
- a box is suppressed on strict ``IoU > t``;
- the sort is stable and descending (ties keep the lower index first); keep indices are returned in
  score order. torchvision's sort is *not* stable, so it may break ties differently.

Every function returns the keep indices, or ``NMSResult(keep, num_iou)`` with ``return_count=True``.
``num_iou``, the number of IoU evaluations, is the hardware-independent cost that CI gates on
(torchvision cannot report it: ``None``). ``top_k`` stops after ``top_k`` boxes are kept.
"""
from __future__ import annotations

import gc
import math
import numbers
import statistics
import time
from typing import Callable, NamedTuple

import numba
import numpy as np
import torch

from labkit.config import check_positive_int
from labkit.models.anchors import AnchorConfig, anchor_lattice, decode_deltas

__all__ = [
    "NMSResult", "Proposals", "Timing", "check_nms_inputs", "pair_iou", "greedy_python", "greedy_torch",
    "greedy_numba", "nms_torchvision", "GREEDY_NMS", "keep_jaccard", "time_nms", "box_iou_matrix",
    "PROPOSAL_ANCHORS", "synthetic_proposals",
]


class NMSResult(NamedTuple):
    """Keep indices ``(K,)`` int64 in score order, and the number of IoU evaluations (or None)."""

    keep: torch.Tensor
    num_iou: int | None


def check_nms_inputs(boxes, scores, t, top_k=None) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Validate and convert: float64 ``(n, 4)`` boxes, ``(n,)`` scores, ``t``, ``top_k`` (n when None).

    Raises a ValueError naming the parameter for a wrong shape, mismatched lengths, NaN scores,
    non-finite boxes, boxes with ``x2 < x1`` or ``y2 < y1``, ``t`` outside [0, 1] or a bad ``top_k``.
    """
    boxes = torch.as_tensor(boxes).detach().cpu()
    scores = torch.as_tensor(scores).detach().cpu()
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4); got {tuple(boxes.shape)}")
    if scores.ndim != 1:
        raise ValueError(f"scores must have shape (n,); got {tuple(scores.shape)}")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores has {scores.shape[0]} entries but boxes has {boxes.shape[0]} rows")
    is_real = isinstance(t, numbers.Real) and not isinstance(t, bool)
    if not is_real or not 0.0 <= t <= 1.0:  # also refuses NaN
        raise ValueError(f"t={t!r} is not valid; the IoU threshold must lie in [0, 1]")
    n = boxes.shape[0]
    top_k = n if top_k is None else check_positive_int("top_k", top_k)
    b = np.ascontiguousarray(boxes.numpy(), dtype=np.float64)
    s = np.ascontiguousarray(scores.numpy(), dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError(f"scores contains NaN at index {int(np.flatnonzero(np.isnan(s))[0])}")
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite; got NaN or inf coordinates")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"boxes must satisfy x1 <= x2 and y1 <= y2; boxes[{i}] = {b[i].tolist()}")
    return b, s, float(t), top_k


def _result(keep, num_iou, return_count: bool):
    keep = torch.as_tensor(keep, dtype=torch.int64)
    return NMSResult(keep, num_iou) if return_count else keep


def pair_iou(b, areas, i: int, j: int) -> float:
    """IoU of boxes ``b[i]`` and ``b[j]`` in plain Python (no +1; 0 when the union is empty)."""
    w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
    h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
    inter = w * h
    union = areas[i] + areas[j] - inter
    return inter / union if union > 0.0 else 0.0


def greedy_python(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """Greedy NMS as a plain double loop over Python floats: the oracle. boxes (n, 4), scores (n,)."""
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    b, s = b.tolist(), s.tolist()
    n = len(s)
    order = sorted(range(n), key=lambda i: -s[i])  # Python's sort is stable
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * n
    keep, num_iou = [], 0
    for a in range(n):
        i = order[a]
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == top_k:
            break
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            num_iou += 1
            if pair_iou(b, areas, i, j) > t:
                suppressed[j] = True
    return _result(keep, num_iou, return_count)


def greedy_torch(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """Greedy NMS vectorized over the remaining boxes, one kept box per iteration. boxes (n, 4)."""
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    order = torch.sort(torch.from_numpy(s), descending=True, stable=True).indices
    rows = torch.from_numpy(b)[order]  # (n, 4) in score order
    rows = torch.cat([rows, ((rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1]))[:, None]], dim=1)  # + area
    remaining = torch.arange(len(s))  # ranks still in play, ascending
    keep, num_iou = [], 0
    while remaining.numel():
        i = int(remaining[0])
        keep.append(i)
        if len(keep) == top_k:
            break
        rest = remaining[1:]
        num_iou += rest.numel()
        other = rows[rest]  # (m, 5)
        wh = (torch.minimum(rows[i, 2:4], other[:, 2:4]) - torch.maximum(rows[i, :2], other[:, :2])).clamp_(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (rows[i, 4] + other[:, 4] - inter)  # 0/0 = NaN is never > t
        remaining = rest[~(iou > t)]
    return _result(order[torch.as_tensor(keep, dtype=torch.int64)], num_iou, return_count)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # numpy: 0/0 is NaN, as in C++
def _greedy_kernel(boxes, scores, t, top_k):  # pragma: no cover - compiled
    # torchvision's csrc/ops/cpu/nms_kernel.cpp, plus a stable sort and the IoU count.
    n = boxes.shape[0]
    order = np.argsort(-scores, kind="mergesort")
    x1, y1 = boxes[:, 0].copy(), boxes[:, 1].copy()
    x2, y2 = boxes[:, 2].copy(), boxes[:, 3].copy()
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, np.uint8)
    keep = np.empty(n, np.int64)
    num_keep, num_iou = 0, 0
    for a in range(n):
        i = order[a]
        if suppressed[i]:
            continue
        keep[num_keep] = i
        num_keep += 1
        if num_keep == top_k:
            break
        ix1, iy1, ix2, iy2, iarea = x1[i], y1[i], x2[i], y2[i], areas[i]
        for c in range(a + 1, n):
            j = order[c]
            if suppressed[j]:
                continue
            num_iou += 1
            w = max(0.0, min(ix2, x2[j]) - max(ix1, x1[j]))
            h = max(0.0, min(iy2, y2[j]) - max(iy1, y1[j]))
            inter = w * h
            union = iarea + areas[j] - inter
            if union > 0.0 and inter / union > t:
                suppressed[j] = 1
    return keep[:num_keep], num_iou


def greedy_numba(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """Greedy NMS compiled with numba (torchvision's CPU kernel, stable sort). boxes (n, 4)."""
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    keep, num_iou = _greedy_kernel(b, s, t, top_k)
    return _result(torch.from_numpy(keep), int(num_iou), return_count)


def nms_torchvision(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """``torchvision.ops.nms`` in float64 behind the same checks; its sort is not stable on ties.

    It cannot count IoU evaluations (``num_iou`` is None); ``top_k`` truncates its output.
    """
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    from torchvision.ops import nms  # imported here: the module works without torchvision

    keep = nms(torch.from_numpy(b), torch.from_numpy(s), t)[:top_k]
    return _result(keep, None, return_count)


GREEDY_NMS: dict[str, Callable] = {"python": greedy_python, "torch": greedy_torch,
                                   "numba": greedy_numba, "torchvision": nms_torchvision}


def keep_jaccard(keep_a, keep_b) -> float:
    """|A ∩ B| / |A ∪ B| of two keep-index sets; 1.0 when both are empty."""
    a, b = set(torch.as_tensor(keep_a).tolist()), set(torch.as_tensor(keep_b).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


class Timing(NamedTuple):
    """Median and interquartile range of wall times, in seconds, and the raw times."""

    median: float
    iqr: float
    times: list


def time_nms(fn: Callable, *args, repeats: int = 30, warmup: int = 3, **kwargs) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones, GC off.

    Threads are the caller's business (the chapter-08 benchmark pins ``torch.set_num_threads(1)``).
    """
    check_positive_int("repeats", repeats)
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args, **kwargs)
            times.append(time.perf_counter() - start)
    finally:
        if was_enabled:
            gc.enable()
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[2] - q[0], times)


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(n, m)`` of boxes ``a (n, 4)`` and ``b (m, 4)``, no +1 (0 where both are empty)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    return torch.nan_to_num(inter / (area_a[:, None] + area_b[None, :] - inter), nan=0.0)


# --- Synthetic RPN-like proposals (chapter 08, source A) --------------------------------------

# The spec's prototype lattice: stride 16, 4 scales x 3 ratios = 12 anchor shapes.
PROPOSAL_ANCHORS = AnchorConfig(stride=16, scales=(32.0, 64.0, 128.0, 256.0), ratios=(0.5, 1.0, 2.0))


class Proposals(NamedTuple):
    """``boxes (n, 4)`` float64, ``scores (n,)`` float64, ``cells (n, 3)`` int64 (y, x, k), ``(H, W)``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    cells: torch.Tensor
    grid_shape: tuple


def synthetic_proposals(num_proposals: int, image_size=640, config: AnchorConfig = PROPOSAL_ANCHORS,
                        seed: int = 0, delta_std: float = 0.1, num_objects: int = 8,
                        score_noise: float = 0.05) -> Proposals:
    """Pre-NMS top-``num_proposals`` RPN-like proposals on an ``image_size`` (int or (h, w)) image.

    Every anchor of the ``ceil(h/s) x ceil(w/s)`` lattice is decoded with Gaussian deltas
    (std ``delta_std`` for dx, dy, dw, dh), clipped to the image, and empty boxes are dropped; the
    objectness is the best IoU with ``num_objects`` random ground-truth boxes plus Gaussian noise
    (std ``score_noise``). The top ``num_proposals`` by objectness are returned in a random order
    (so the NMS sort does real work), each with the anchor cell it was regressed from.
    Deterministic from ``seed``.
    """
    num_proposals = check_positive_int("num_proposals", num_proposals)
    h, w = (image_size, image_size) if isinstance(image_size, numbers.Integral) else tuple(image_size)
    height, width = math.ceil(check_positive_int("image_size", h) / config.stride), \
        math.ceil(check_positive_int("image_size", w) / config.stride)
    gen = torch.Generator().manual_seed(seed)
    num_shapes = config.num_shapes
    anchors = anchor_lattice(height, width, config).reshape(-1, 4).double()  # (H*W*A, 4), (y, x, k) order
    flat = torch.arange(anchors.shape[0])
    cells = torch.stack([flat // (width * num_shapes), flat // num_shapes % width, flat % num_shapes], dim=1)
    boxes = decode_deltas(anchors, torch.randn(anchors.shape, generator=gen, dtype=torch.float64) * delta_std)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    # Ground truth: centres anywhere, sqrt(area) log-uniform in [24, min(h, w) / 2], ratio in [1/2, 2].
    u = torch.rand(num_objects, 4, generator=gen, dtype=torch.float64)
    side = torch.exp(math.log(24) + u[:, 2] * (math.log(min(h, w) / 2) - math.log(24)))
    ratio = torch.exp((u[:, 3] * 2 - 1) * math.log(2))
    gw, gh = side / ratio.sqrt(), side * ratio.sqrt()
    cx, cy = u[:, 0] * w, u[:, 1] * h
    gt = torch.stack([cx - gw / 2, cy - gh / 2, cx + gw / 2, cy + gh / 2], dim=1)
    objectness = box_iou_matrix(boxes, gt).amax(dim=1)
    objectness += score_noise * torch.randn(objectness.shape, generator=gen, dtype=torch.float64)
    nonempty = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).squeeze(1)
    if num_proposals > nonempty.numel():
        raise ValueError(f"num_proposals={num_proposals} exceeds the {nonempty.numel()} non-empty proposals "
                         f"of a {height}x{width}x{num_shapes} lattice; use a larger image_size")
    top = nonempty[torch.sort(objectness[nonempty], descending=True, stable=True).indices[:num_proposals]]
    top = top[torch.randperm(num_proposals, generator=gen)]
    return Proposals(boxes[top].contiguous(), objectness[top].contiguous(), cells[top].contiguous(),
                     (height, width))

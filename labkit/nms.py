r"""Greedy non-maximum suppression at five implementation levels, shared by the detection chapters.

Greedy NMS sorts boxes by score and, for each box not yet suppressed, keeps it and suppresses every
lower-ranked box whose IoU with it exceeds ``t``; it makes $O(N\cdot K)$ IoU evaluations for $K$
kept boxes. The same algorithm is written five times so that speed is compared at the same level:
``greedy_python`` (a plain double loop, the correctness oracle), ``greedy_torch`` (vectorized over
the remaining boxes, one kept box per iteration), ``greedy_numba`` (compiled, the algorithm of
torchvision's C++ CPU kernel), ``greedy_simd`` (compiled, boxes copied into score order so that the
inner loop is branch-free and LLVM vectorizes it) and ``nms_torchvision`` (that kernel itself).
``phase_profile`` splits a compiled call's time into sort / gather / IoU / bookkeeping. The compiled
kernels (and chapter 08's ASAP kernel) share one sort and one code-generation discipline (unsigned
indices in the inner loops), so that their speed differs only by the algorithm and its data layout.

Conventions, identical in every implementation (chapter 08's Pitfalls):

- boxes are ``(x1, y1, x2, y2)``; area is ``(x2 - x1)(y2 - y1)`` with no +1;
- IoU is ``inter / (area_i + area_j - inter)`` computed in float64 with the same operations in the
  same order, so every implementation rounds identically; two zero-area boxes have IoU 0;
- a box is suppressed on strict ``IoU > t``;
- the sort is stable and descending (ties keep the lower index first); keep indices are returned in
  score order. torchvision's sort is *not* stable, so it may break ties differently. The compiled
  kernels share one sort, ``stable_descending_order`` (a radix sort).

Every function returns the keep indices, or ``NMSResult(keep, num_iou)`` with ``return_count=True``.
``num_iou``, the number of IoU evaluations, is the hardware-independent cost that CI gates on
(torchvision cannot report it: ``None``). ``top_k`` stops after ``top_k`` boxes are kept.
"""
from __future__ import annotations

import functools
import gc
import math
import numbers
import statistics
import time
from typing import Callable, NamedTuple

import numba
import numpy as np
import torch

from labkit.config import check_choice, check_positive_int
from labkit.models.anchors import AnchorConfig, anchor_lattice, decode_deltas

__all__ = [
    "NMSResult", "Proposals", "Timing", "check_nms_inputs", "pair_iou", "greedy_python", "greedy_torch",
    "greedy_numba", "greedy_simd", "nms_torchvision", "GREEDY_NMS", "keep_jaccard", "time_nms", "box_iou_matrix",
    "stable_descending_order", "PHASES", "phase_profile", "PROPOSAL_ANCHORS", "synthetic_proposals",
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
    problem, i = _first_bad_input(b, s)
    if problem == _NAN_SCORE:
        raise ValueError(f"scores contains NaN at index {i}")
    if problem == _NON_FINITE_BOX:
        raise ValueError("boxes must be finite; got NaN or inf coordinates")
    if problem == _INVERTED_BOX:
        raise ValueError(f"boxes must satisfy x1 <= x2 and y1 <= y2; boxes[{i}] = {b[i].tolist()}")
    return b, s, float(t), top_k


_NAN_SCORE, _NON_FINITE_BOX, _INVERTED_BOX = 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _first_bad_input(b, s):  # pragma: no cover - compiled; one pass instead of numpy's several
    for i in range(s.shape[0]):
        if np.isnan(s[i]):
            return _NAN_SCORE, i
    for i in range(b.shape[0]):
        for c in range(4):
            if not np.isfinite(b[i, c]):
                return _NON_FINITE_BOX, i
    for i in range(b.shape[0]):
        if b[i, 2] < b[i, 0] or b[i, 3] < b[i, 1]:
            return _INVERTED_BOX, i
    return 0, -1


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


# --- Compiled kernels (numba) -----------------------------------------------------------------
# Indices are unsigned where it matters: numba then emits no negative-index wraparound code in the
# inner loops (C++ has none either). Each staged kernel runs up to ``stage`` for ``phase_profile``:
# the sort alone, + bookkeeping (data layout, the visit in score order, suppressions replayed from
# ``replay_ptr``/``replay_idx``), + the gather of candidate pairs, + the IoU tests (the whole call).
STAGE_SORT, STAGE_BOOKKEEPING, STAGE_GATHER, STAGE_FULL = range(4)
NO_REPLAY = np.zeros(1, np.int64)


@numba.njit(cache=True, nogil=True)
def stable_descending_order(scores):  # pragma: no cover - compiled
    """``np.argsort(-scores, kind="stable")`` for float64 scores without NaN, as an LSD radix sort.

    Each score maps to a 64-bit key whose unsigned order is the descending score order (-0.0 as 0.0);
    six stable passes over 11-bit digits, skipping digits that every key shares.
    """
    n = scores.shape[0]
    bits = (scores + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    sign, digit_mask = np.uint64(1) << np.uint64(63), np.uint64(2047)
    keys = np.empty(n, np.uint64)
    for i in range(n):
        keys[i] = bits[i] if bits[i] & sign else ~(bits[i] | sign)  # negative: larger bits = smaller
    counts = np.zeros((6, 2049), np.int64)
    for i in range(n):
        for d in range(6):
            counts[d, ((keys[i] >> np.uint64(11 * d)) & digit_mask) + np.uint64(1)] += 1
    order, spare = np.arange(n), np.empty(n, np.int64)
    for d in range(6):
        starts = counts[d]
        if starts.max() == n:
            continue  # one bucket holds every key: this pass would not move anything
        for b in range(2048):
            starts[b + 1] += starts[b]
        shift = np.uint64(11 * d)
        for a in range(n):
            digit = (keys[order[a]] >> shift) & digit_mask
            spare[starts[digit]] = order[a]
            starts[digit] += 1
        order, spare = spare, order
    return order


@numba.njit(cache=True, nogil=True, error_model="numpy")  # numpy: 0/0 is NaN, as in C++
def _greedy_kernel(boxes, scores, t, top_k, stage, replay_ptr, replay_idx):  # pragma: no cover - compiled
    # torchvision's csrc/ops/cpu/nms_kernel.cpp, plus a stable sort and the IoU count.
    n = boxes.shape[0]
    order = stable_descending_order(scores).astype(np.uint64)
    suppressor = np.full(n, -1, np.int64)  # per box: the rank of the kept box that suppressed it
    keep = np.empty(n, np.int64)
    if stage == STAGE_SORT:
        return keep[:0], 0, suppressor
    x1, y1 = boxes[:, 0].copy(), boxes[:, 1].copy()
    x2, y2 = boxes[:, 2].copy(), boxes[:, 3].copy()
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, np.uint8)
    num_keep, num_iou = 0, 0
    for a in range(n):
        i = order[a]
        if suppressed[i]:
            continue
        keep[num_keep] = i
        num_keep += 1
        if num_keep == top_k:
            break
        if stage == STAGE_FULL:
            ix1, iy1, ix2, iy2, iarea = x1[i], y1[i], x2[i], y2[i], areas[i]
            for c in range(np.uint64(a + 1), np.uint64(n)):
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
                    suppressor[j] = a
            continue
        if stage == STAGE_GATHER:  # the scan over lower-ranked boxes, without the IoU
            for c in range(np.uint64(a + 1), np.uint64(n)):
                num_iou += suppressed[order[c]] == 0
        for q in range(replay_ptr[a], replay_ptr[a + 1]):
            suppressed[replay_idx[q]] = 1
    return keep[:num_keep], num_iou, suppressor


def greedy_numba(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """Greedy NMS compiled with numba (torchvision's CPU kernel, stable sort). boxes (n, 4)."""
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    keep, num_iou, _ = _greedy_kernel(b, s, t, top_k, STAGE_FULL, NO_REPLAY, NO_REPLAY)
    return _result(torch.from_numpy(keep), int(num_iou), return_count)


@numba.njit(inline="always")
def fmin(a, b):  # pragma: no cover - compiled; min(a, b) for numbers, as one select (vectorizes)
    return a if a < b else b


@numba.njit(inline="always")
def fmax(a, b):  # pragma: no cover - compiled
    return a if a > b else b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _greedy_simd_kernel(boxes, scores, t, top_k):  # pragma: no cover - compiled
    n = boxes.shape[0]
    order = stable_descending_order(scores)
    x1, y1, x2, y2 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)  # in score order
    for r in range(n):
        x1[r], y1[r], x2[r], y2[r] = boxes[order[r], 0], boxes[order[r], 1], boxes[order[r], 2], boxes[order[r], 3]
    suppressed = np.zeros(n, np.uint8)
    keep = np.empty(n, np.int64)
    num_keep, num_iou = 0, 0
    for a in range(n):
        if suppressed[a]:
            continue
        keep[num_keep] = order[a]
        num_keep += 1
        if num_keep == top_k:
            break
        ix1, iy1, ix2, iy2 = x1[a], y1[a], x2[a], y2[a]
        iarea = (ix2 - ix1) * (iy2 - iy1)
        live = 0
        # Branch-free over every lower-ranked box, suppressed or not, so that it vectorizes; only
        # the live ones are counted, which keeps num_iou equal to the other implementations'.
        for j in range(np.uint64(a + 1), np.uint64(n)):
            w = fmax(0.0, fmin(ix2, x2[j]) - fmax(ix1, x1[j]))
            h = fmax(0.0, fmin(iy2, y2[j]) - fmax(iy1, y1[j]))
            inter = w * h
            over = inter / (iarea + (x2[j] - x1[j]) * (y2[j] - y1[j]) - inter) > t
            was = suppressed[j]
            live += was == 0
            suppressed[j] = was | over
        num_iou += live
    return keep[:num_keep], num_iou


def greedy_simd(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """Greedy NMS compiled with numba and vectorized (SIMD) by LLVM. boxes (n, 4).

    The boxes are copied into score order, and the inner loop tests every lower-ranked box without a
    branch, suppressed or not, so LLVM turns it into vector instructions: more arithmetic than
    ``greedy_numba``, far less time. The same keep set and IoU count as every other greedy.
    """
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    keep, num_iou = _greedy_simd_kernel(b, s, t, top_k)
    return _result(torch.from_numpy(keep), int(num_iou), return_count)


def nms_torchvision(boxes, scores, t: float, top_k: int | None = None, return_count: bool = False):
    """``torchvision.ops.nms`` in float64 behind the same checks; its sort is not stable on ties.

    It cannot count IoU evaluations (``num_iou`` is None); ``top_k`` truncates its output.
    """
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    from torchvision.ops import nms  # imported here: the module works without torchvision

    keep = nms(torch.from_numpy(b), torch.from_numpy(s), t)[:top_k]
    return _result(keep, None, return_count)


GREEDY_NMS: dict[str, Callable] = {"python": greedy_python, "torch": greedy_torch, "numba": greedy_numba,
                                   "simd": greedy_simd, "torchvision": nms_torchvision}


def keep_jaccard(keep_a, keep_b) -> float:
    """|A ∩ B| / |A ∪ B| of two keep-index sets; 1.0 when both are empty."""
    a, b = set(torch.as_tensor(keep_a).tolist()), set(torch.as_tensor(keep_b).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


class Timing(NamedTuple):
    """Median and interquartile range of wall times, in seconds, and the raw times."""

    median: float
    iqr: float
    times: list


def time_nms(fn: Callable, *args, repeats: int = 30, warmup: int = 3, clock: Callable = time.perf_counter,
             **kwargs) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones, GC off.

    ``clock`` is wall time by default; ``time.thread_time`` gives the CPU time of this thread, which
    a busy machine's preemptions do not inflate. Threads are the caller's business (the chapter-08
    benchmark pins ``torch.set_num_threads(1)``).
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
            start = clock()
            fn(*args, **kwargs)
            times.append(clock() - start)
    finally:
        if was_enabled:
            gc.enable()
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[2] - q[0], times)


PHASES = ("sort", "gather", "iou", "bookkeeping")


def replay_table(suppressor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of who suppressed whom: ``idx[ptr[a]:ptr[a + 1]]`` are the positions whose
    ``suppressor`` is ``a`` (a rank), so a staged kernel can replay the suppressions without IoUs."""
    suppressed = np.flatnonzero(suppressor >= 0)
    by_suppressor = suppressed[np.argsort(suppressor[suppressed], kind="stable")]
    ptr = np.zeros(len(suppressor) + 1, np.int64)
    np.cumsum(np.bincount(suppressor[suppressed], minlength=len(suppressor)), out=ptr[1:])
    return ptr, by_suppressor.astype(np.int64)


def phase_profile(method: str, boxes, scores, t: float, cells=None, grid_shape=None, lut=None,
                  repeats: int = 20, warmup: int = 2) -> dict[str, float]:
    """Where a compiled NMS call spends its time: thread-CPU seconds per phase, medians of ``repeats``.

    ``method`` is ``"greedy"`` (``greedy_numba``) or ``"asap"`` (``asap_nms`` with ``impl="numba"``,
    which needs the proposals' ``cells``, ``grid_shape`` and an ``AnchorLUT`` ``lut``). Returns
    ``{"sort", "gather", "iou", "bookkeeping", "total"}`` in seconds:

    - ``sort``: the stable descending sort of the scores;
    - ``bookkeeping``: everything else the loop does: copying the boxes into the kernel's layout
      (and building ASAP's index map G), visiting proposals in score order, skipping suppressed
      ones, appending keeps, marking suppressions;
    - ``gather``: finding each kept box's candidates: greedy scans every lower-ranked box, ASAP
      looks up its LUT neighbours in G;
    - ``iou``: computing the candidates' IoU and testing it against ``t`` (ASAP: including copying
      the candidates' boxes next to each other);
    - ``total``: the whole public call (input checks included), timed on its own.

    The kernel is run cumulatively, one phase added at a time (suppressions replayed from a full
    run when the IoU is left out, so every variant visits the same boxes); a phase is the increase
    in median time. The four phases add up to about ``total``; a phase near zero may come out
    slightly negative on a noisy machine.
    """
    check_choice("method", method, ("greedy", "asap"))
    check_positive_int("repeats", repeats)
    if method == "greedy":
        b, s, t, top_k = check_nms_inputs(boxes, scores, t)
        run = functools.partial(_greedy_kernel, b, s, t, top_k)
        call = functools.partial(greedy_numba, boxes, scores, t)
    else:
        if cells is None or grid_shape is None or lut is None:
            raise ValueError("method='asap' needs the proposals' cells, their grid_shape and an AnchorLUT lut")
        from labkit.methods.asap_nms import staged_asap  # the method module imports this one

        run, call = staged_asap(boxes, scores, cells, grid_shape, lut, t)
    replay = replay_table(run(STAGE_FULL, NO_REPLAY, NO_REPLAY)[2])
    stages = [functools.partial(run, stage, *replay) for stage in range(4)] + [call]
    times = [[] for _ in stages]
    for _ in range(warmup):
        for fn in stages:
            fn()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):  # interleaved, so that a slow spell of the machine hits every stage
            for fn, seconds in zip(stages, times):
                start = time.thread_time()
                fn()
                seconds.append(time.thread_time() - start)
    finally:
        if was_enabled:
            gc.enable()
    sort, bookkeeping, gather, full, total = (statistics.median(seconds) for seconds in times)
    return dict(sort=sort, gather=gather - bookkeeping, iou=full - gather, bookkeeping=bookkeeping - sort,
                total=total)


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

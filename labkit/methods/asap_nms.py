r"""ASAP-NMS: Accelerating Non-Maximum Suppression Using Spatially Aware Priors.

Rohun Tripathi, Vasu Singla, Mahyar Najibi, Bharat Singh, Abhishek Sharma, Larry S. Davis.
arXiv 2007.09785 (v2, 2020). No official code exists; this module follows the abstract and the
reference NMS kernels (torchvision, detectron2, mmcv).

**Idea.** Greedy NMS over an RPN's thousands of proposals spends most of its IoU evaluations on
pairs that are far apart and cannot suppress each other. Every proposal is regressed from an anchor
of a translation-invariant lattice, so which anchors are "near" each other is a fixed set of
relative lattice offsets, computed once per anchor configuration as a lookup table (LUT). NMS then
compares a kept proposal only with the proposals of its anchor's neighbours, whatever the image size.

**Equations.** Anchor $a_{y,x,k}$ is centred at $((x+\tfrac12)s, (y+\tfrac12)s)$, shape $k$; proposal
$p$ carries its anchor cell $c(p) = (y, x, k)$. The LUT of shape $k$ is

$$\mathcal N(k) = \{(\Delta y, \Delta x, k') : \mathrm{IoU}(a_{0,0,k}, a_{\Delta y,\Delta x,k'}) > \theta_a\},
\quad |\Delta y|, |\Delta x| \le R,$$

without $(0, 0, k)$ itself. With the dense map $G[y, x, k] \to$ proposal rank (or $-1$), the kept
proposal $i$ at $(y, x, k)$ is compared only with $J_i = \{G[y+\Delta y, x+\Delta x, k'] :
(\Delta y, \Delta x, k') \in \mathcal N(k)\}$, minus empty, higher-ranked and suppressed entries, and
suppresses $j \in J_i$ with proposal $\mathrm{IoU}(p_i, p_j) > t$. Cost: $O(K\cdot|\mathcal N|)$
lookups for $K$ kept proposals, against greedy's $O(N\cdot K)$ IoU evaluations.

| symbol | variable |
|---|---|
| $s$, shapes $k = 1..A$ | `config.stride`, `config.shapes()` (an `AnchorConfig`) |
| $\theta_a$ | `anchor_iou_cutoff` |
| $R$ | `radius` (`AnchorLUT.radius_y`, `radius_x` once resolved) |
| $\mathcal N(k)$, mean $|\mathcal N|$ | `AnchorLUT.neighbours(k)`, `AnchorLUT.size` |
| $G$ | `grid` (flat, padded by $R$ so no bounds checks): score ranks, $-1$ once visited or suppressed |
| $c(p)$, $H\times W$ | `cells[p] = (y, x, k)`, `grid_shape` |
| $t$, $K$ | `t`, `len(keep)` |

**Our choices [design], not the paper's** (its exact criterion could not be checked):

- the neighbourhood criterion is the anchor IoU with cutoff $\theta_a$ (default 0.2);
- the window is $R = \lceil \max\text{anchor side}/s\rceil + 1$ unless ``radius`` is given; any rule
  that depends only on anchor geometry keeps translation invariance;
- $\theta_a = 0$ means *no* anchor-overlap requirement (every offset in the window is a neighbour),
  and ``radius="full"`` sizes the window from the grid at call time ($R_y = H-1$, $R_x = W-1$). Together
  they make every proposal a neighbour of every other, the limit in which ASAP equals greedy NMS
  exactly. For $\theta_a > 0$, ``"full"`` equals the default window, which already holds every
  overlapping anchor.

**At this scale.** One lattice level (no FPN, so no per-residue cross-level tables); proposals are
synthetic (``labkit.nms.synthetic_proposals``) or come from chapter 05's tiny RPN. The loop is
written at three levels (``impl``: numba, torch, python) to be timed against greedy NMS at the same
level. Conventions (boxes, no +1, strict ``>``, stable sort, float64 IoU) are ``labkit.nms``'s.

**On a torchvision detector**: ``labkit.methods.asap_nms_rpn`` (one LUT per FPN level inside an
unmodified ``RegionProposalNetwork``).

**Implementation (numba), not method.** G keeps only live proposals ranked below the current one
(a kept or suppressed proposal's entry is reset to $-1$), so gathering $J_i$ is one load and a
branch-free append per LUT entry, with no rank or suppression test; lookups use unsigned offsets
(``AnchorLUT.flat_table``), so numba emits no negative-index checks; the candidates' boxes are
copied side by side so that LLVM vectorizes the IoU; the sort is ``labkit.nms``'s radix sort,
shared with ``greedy_numba``. ``labkit.nms.phase_profile`` shows where the time goes, and
``speed_and_agreement`` measures the speed-up and the agreement on other anchor settings.
"""
from __future__ import annotations

import math
import time

import numba
import numpy as np
import torch

from labkit import nms
from labkit.config import check_choice, check_positive_int
from labkit.models.anchors import AnchorConfig
from labkit.nms import (NO_REPLAY, STAGE_FULL, STAGE_GATHER, STAGE_SORT, NMSResult, check_nms_inputs, fmax,
                        fmin, pair_iou, stable_descending_order)

__all__ = ["AnchorLUT", "ASAP_IMPLS", "asap_nms", "staged_asap", "PAPER_ANCHORS", "PAPER_IMAGE_SIZE",
           "speed_and_agreement", "setting_sweeps"]


def _anchor_iou(shapes: np.ndarray, k: int, dy: np.ndarray, dx: np.ndarray, stride: int) -> np.ndarray:
    """IoU of anchor (0, 0, k) with anchors (dy, dx, k') for every k': shape (len(dy), A)."""
    w, h = shapes[k]
    cx, cy = dx[:, None] * stride, dy[:, None] * stride  # centre shift of (dy, dx), (m, 1)
    iw = np.clip(np.minimum(w / 2, cx + shapes[None, :, 0] / 2) - np.maximum(-w / 2, cx - shapes[None, :, 0] / 2), 0, None)
    ih = np.clip(np.minimum(h / 2, cy + shapes[None, :, 1] / 2) - np.maximum(-h / 2, cy - shapes[None, :, 1] / 2), 0, None)
    inter = iw * ih
    return inter / (w * h + shapes[None, :, 0] * shapes[None, :, 1] - inter)


class AnchorLUT:
    r"""The neighbourhoods $\mathcal N(k)$ of one anchor configuration; independent of image size.

    ``offsets`` is ``(A, M, 3)`` int64 rows ``(dy, dx, k')`` padded to the largest neighbourhood,
    ``lengths`` ``(A,)``; each neighbourhood is sorted by (dy, dx, k') so lookups walk memory
    forward. ``build_seconds`` is the one-off construction time. Picklable (numpy arrays only).
    """

    def __init__(self, config: AnchorConfig, anchor_iou_cutoff: float = 0.2, radius: int | str | None = None):
        start = time.perf_counter()
        if not isinstance(config, AnchorConfig):
            raise ValueError(f"config must be an AnchorConfig; got {type(config).__name__}")
        if isinstance(anchor_iou_cutoff, bool) or not isinstance(anchor_iou_cutoff, (int, float)) \
                or not 0.0 <= anchor_iou_cutoff <= 1.0:
            raise ValueError(f"anchor_iou_cutoff={anchor_iou_cutoff!r} is not valid; it must lie in [0, 1]")
        shapes = config.shapes().double().numpy()  # (A, 2) widths, heights
        default = math.ceil(float(shapes.max()) / config.stride) + 1
        if radius is None or (radius == "full" and anchor_iou_cutoff > 0):
            window = default  # for cutoff > 0 every overlapping anchor lies within it
        elif radius == "full":
            window = None  # every offset of the grid: resolved per grid in table()
        elif isinstance(radius, int) and not isinstance(radius, bool) and radius >= 0:
            window = radius
        else:
            raise ValueError(f"radius={radius!r} is not valid; use None, an int >= 0 or 'full'")
        self.config, self.anchor_iou_cutoff, self.radius = config, float(anchor_iou_cutoff), radius
        self._shapes, self._grid_tables, self._flat_tables = shapes, {}, {}
        self.window = window
        if window is not None:
            self.offsets, self.lengths = self._build(window, window)
            self.radius_y = self.radius_x = int(np.abs(self.offsets[..., :2]).max(initial=0))
        self.build_seconds = time.perf_counter() - start

    def _build(self, ry: int, rx: int) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = np.meshgrid(np.arange(-ry, ry + 1), np.arange(-rx, rx + 1), indexing="ij")
        dy, dx = dy.reshape(-1), dx.reshape(-1)  # lexicographic (dy, dx)
        num_shapes, tables = len(self._shapes), []
        for k in range(num_shapes):
            iou = _anchor_iou(self._shapes, k, dy, dx, self.config.stride)  # (m, A)
            near = iou > self.anchor_iou_cutoff if self.anchor_iou_cutoff > 0 else np.ones_like(iou, bool)
            near[(dy == 0) & (dx == 0), k] = False  # the cell itself holds proposal i
            rows, kk = np.nonzero(near)  # row-major: sorted by (dy, dx, k')
            tables.append(np.stack([dy[rows], dx[rows], kk], axis=1))
        lengths = np.array([len(tab) for tab in tables], dtype=np.int64)
        offsets = np.zeros((num_shapes, max(int(lengths.max()), 1), 3), dtype=np.int64)
        for k, tab in enumerate(tables):
            offsets[k, :len(tab)] = tab
        return offsets, lengths

    @property
    def num_shapes(self) -> int:
        return len(self._shapes)

    @property
    def size(self) -> float:
        r"""Mean neighbourhood size $\overline{|\mathcal N(k)|}$; inf when it grows with the grid."""
        return float(self.lengths.mean()) if self.window is not None else math.inf

    def table(self, grid_shape) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(offsets, lengths, radius_y, radius_x)`` for an ``(H, W)`` grid (the same for every grid
        unless the neighbourhood is the whole grid)."""
        if self.window is not None:
            return self.offsets, self.lengths, self.radius_y, self.radius_x
        key = (int(grid_shape[0]), int(grid_shape[1]))
        if key not in self._grid_tables:
            self._grid_tables = {key: self._build(key[0] - 1, key[1] - 1)}  # keep only the last grid
        return (*self._grid_tables[key], key[0] - 1, key[1] - 1)

    def neighbours(self, k: int) -> torch.Tensor:
        r"""$\mathcal N(k)$ as an ``(m, 3)`` tensor of ``(dy, dx, k')`` (finite windows only)."""
        if self.window is None:
            raise ValueError("radius='full' with anchor_iou_cutoff=0: the neighbourhood is the whole grid")
        check_choice("k", k, range(self.num_shapes))
        return torch.from_numpy(self.offsets[k, :self.lengths[k]].copy())

    def flat_table(self, grid_shape) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """``(flat, lengths, shift, radius_y, radius_x)`` for the compiled kernel on an ``(H, W)`` grid.

        ``flat[k, m] - shift`` is the m-th neighbour's offset in the padded, flattened G from a cell
        of shape k: unsigned, so that the kernel's lookups carry no negative-index checks. Cached.
        """
        key = (int(grid_shape[0]), int(grid_shape[1]))
        if key not in self._flat_tables:
            offsets, lengths, ry, rx = self.table(key)
            width_padded = key[1] + 2 * rx
            flat = (offsets[..., 0] * width_padded + offsets[..., 1]) * self.num_shapes \
                + offsets[..., 2] - np.arange(self.num_shapes)[:, None]
            shift = -int(flat.min(initial=0))
            if len(self._flat_tables) >= 8:
                self._flat_tables.clear()
            dtype = np.uint32 if flat.max(initial=0) + shift < 2 ** 32 else np.uint64  # half the cache
            self._flat_tables[key] = ((flat + shift).astype(dtype), lengths, shift, ry, rx)
        return self._flat_tables[key]

    def __getstate__(self):
        return {**self.__dict__, "_grid_tables": {}, "_flat_tables": {}}

    def __repr__(self) -> str:
        return (f"AnchorLUT(anchor_iou_cutoff={self.anchor_iou_cutoff}, radius={self.radius!r}, "
                f"num_shapes={self.num_shapes}, size={self.size:.1f})")


def _signed_offsets(lut: AnchorLUT, grid_shape) -> tuple[list, int, int]:
    """Per shape k, the flat G offsets ``(dy * Wp + dx) * A + k' - k`` of its neighbourhood; R_y, R_x."""
    flat, lengths, shift, ry, rx = lut.flat_table(grid_shape)
    return [flat[k, :lengths[k]].astype(np.int64) - shift for k in range(len(lengths))], ry, rx


@numba.njit(cache=True, nogil=True, error_model="numpy")  # numpy: 0/0 is NaN, never > t
def _asap_kernel(grid, boxes, scores, cells, height, width, flat, lengths, shift, ry, rx, t, top_k,
                 stage, replay_ptr, replay_idx):  # pragma: no cover - compiled
    # Staged like labkit.nms._greedy_kernel (for phase_profile); asap_nms runs it whole. ``grid`` is
    # G, all -1, of the padded grid's size: int16 when the ranks fit, which halves its cache footprint.
    n, num_shapes = boxes.shape[0], flat.shape[0]
    order = stable_descending_order(scores)
    suppressor = np.full(n, -1, np.int64)  # per rank: the rank of the kept proposal that suppressed it
    keep = np.empty(n, np.int64)
    if stage == STAGE_SORT:
        return keep[:0], 0, suppressor
    width_padded = width + 2 * rx
    rows = np.empty((n, 4))  # boxes in rank order: one 32-byte row per proposal
    base = np.empty(n, np.uint64)  # G position of each rank's cell
    shape = np.empty(n, np.uint64)
    for r in range(n):
        i = order[r]
        rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3] = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        p = ((cells[i, 0] + ry) * width_padded + cells[i, 1] + rx) * num_shapes + cells[i, 2]
        if grid[p] >= 0:
            return keep[:0], -1 - i, suppressor  # two proposals in one cell
        grid[p], base[r], shape[r] = r, np.uint64(p), np.uint64(cells[i, 2])
    size = flat.shape[1] + 1
    candidates = np.empty(size, grid.dtype)
    # The candidates' boxes side by side, so that LLVM vectorizes the IoU loop (SIMD).
    cx1, cy1, cx2, cy2 = np.empty(size), np.empty(size), np.empty(size), np.empty(size)
    over = np.empty(size, np.uint8)
    num_keep, num_iou, unsigned_shift = 0, 0, np.uint64(shift)
    for r in range(n):
        p = base[r]
        if grid[p] < 0:
            continue  # suppressed
        grid[p] = -1  # visited: from here on G holds only live proposals ranked below r
        keep[num_keep] = order[r]
        num_keep += 1
        if num_keep == top_k:
            break
        count = 0
        if stage >= STAGE_GATHER:  # branch-free: an empty or suppressed cell holds -1
            k = shape[r]
            neighbours, origin = flat[k], p - unsigned_shift
            for m in range(lengths[k]):
                j = grid[origin + neighbours[m]]
                candidates[count] = j
                count += j >= 0
        num_iou += count
        if stage < STAGE_FULL:
            for q in range(replay_ptr[r], replay_ptr[r + 1]):
                grid[base[replay_idx[q]]] = -1
            continue
        for c in range(count):
            j = np.uint64(candidates[c])
            cx1[c], cy1[c], cx2[c], cy2[c] = rows[j, 0], rows[j, 1], rows[j, 2], rows[j, 3]
        ix1, iy1, ix2, iy2 = rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3]
        iarea = (ix2 - ix1) * (iy2 - iy1)
        for c in range(count):  # the proposal IoU, with labkit.nms's arithmetic
            w = fmax(0.0, fmin(ix2, cx2[c]) - fmax(ix1, cx1[c]))
            h = fmax(0.0, fmin(iy2, cy2[c]) - fmax(iy1, cy1[c]))
            inter = w * h
            over[c] = inter / (iarea + (cx2[c] - cx1[c]) * (cy2[c] - cy1[c]) - inter) > t
        for c in range(count):
            if over[c]:
                j = np.uint64(candidates[c])
                grid[base[j]] = -1
                suppressor[j] = r
    return keep[:num_keep], num_iou, suppressor


def _asap_torch(b, s, c, height, width, table, t, top_k):
    offsets, ry, rx = table
    num_shapes, width_padded = len(offsets), width + 2 * rx
    order = torch.sort(torch.from_numpy(s), descending=True, stable=True).indices
    rows = torch.from_numpy(b)[order]  # (n, 4) in rank order
    rows = torch.cat([rows, ((rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1]))[:, None]], dim=1)  # + area
    cs = torch.from_numpy(c)[order]
    n = len(s)
    base = ((cs[:, 0] + ry) * width_padded + cs[:, 1] + rx) * num_shapes + cs[:, 2]
    grid = torch.full(((height + 2 * ry) * width_padded * num_shapes,), n, dtype=torch.int64)
    grid[base] = torch.arange(n)  # G, holding ranks; an empty cell holds n
    alive = torch.arange(n + 1)  # alive[rank] = rank, or -1 once suppressed (and for the empty n)
    alive[n] = -1
    alive_np = alive.numpy()  # shares memory: cheap scalar reads
    flat = [torch.from_numpy(f) for f in offsets]
    keep, num_iou = [], 0
    for r, (p, k) in enumerate(zip(base.tolist(), cs[:, 2].tolist())):
        if alive_np[r] < 0:
            continue
        keep.append(r)
        if len(keep) == top_k:
            break
        j = alive[grid[flat[k] + p]]
        j = j[j > r]  # drops empty cells, suppressed and higher-ranked proposals in one test
        num_iou += j.numel()
        other = rows[j]  # (m, 5)
        wh = (torch.minimum(rows[r, 2:4], other[:, 2:4]) - torch.maximum(rows[r, :2], other[:, :2])).clamp_(min=0)
        inter = wh[:, 0] * wh[:, 1]
        alive[j[inter / (rows[r, 4] + other[:, 4] - inter) > t]] = -1  # 0/0 = NaN is never > t
    return order[torch.as_tensor(keep, dtype=torch.int64)], num_iou


def _asap_python(b, s, c, height, width, table, t, top_k):
    offsets, ry, rx = table
    num_shapes, width_padded = len(offsets), width + 2 * rx
    b, s, c = b.tolist(), s.tolist(), c.tolist()
    order = sorted(range(len(s)), key=lambda i: -s[i])
    rank = [0] * len(s)
    grid = [-1] * ((height + 2 * ry) * width_padded * num_shapes)
    for r, i in enumerate(order):
        rank[i] = r
        grid[((c[i][0] + ry) * width_padded + c[i][1] + rx) * num_shapes + c[i][2]] = i
    flat = [f.tolist() for f in offsets]
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * len(s)
    keep, num_iou = [], 0
    for r, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == top_k:
            break
        y, x, k = c[i]
        p = ((y + ry) * width_padded + x + rx) * num_shapes + k
        for d in flat[k]:
            j = grid[p + d]
            if j < 0 or rank[j] <= r or suppressed[j]:
                continue
            num_iou += 1
            if pair_iou(b, areas, i, j) > t:
                suppressed[j] = True
    return keep, num_iou


ASAP_IMPLS = ("numba", "torch", "python")


def _checked_inputs(boxes, scores, cells, grid_shape, lut, t, top_k):
    b, s, t, top_k = check_nms_inputs(boxes, scores, t, top_k)
    if not isinstance(lut, AnchorLUT):
        raise ValueError(f"lut must be an AnchorLUT; got {type(lut).__name__}")
    try:
        height, width = (check_positive_int("grid_shape[]", v) for v in grid_shape)
    except (TypeError, ValueError):
        raise ValueError(f"grid_shape must be (H, W) with positive ints; got {grid_shape!r}") from None
    c = torch.as_tensor(cells).detach().cpu()
    if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] != len(s) or c.is_floating_point() or c.dtype == torch.bool:
        raise ValueError(f"cells must be an integer tensor of shape ({len(s)}, 3); got {tuple(c.shape)} {c.dtype}")
    c = np.ascontiguousarray(c.numpy(), dtype=np.int64)
    if _first_cell_outside(c, height, width, lut.num_shapes) >= 0:
        raise ValueError(f"cells must lie in [0, H) x [0, W) x [0, A) = {height} x {width} x {lut.num_shapes}")
    return b, s, c, height, width, t, top_k


@numba.njit(cache=True, nogil=True)
def _first_cell_outside(cells, height, width, num_shapes):  # pragma: no cover - compiled (numpy: 30x slower)
    for i in range(cells.shape[0]):
        y, x, k = cells[i, 0], cells[i, 1], cells[i, 2]
        if y < 0 or y >= height or x < 0 or x >= width or k < 0 or k >= num_shapes:
            return i
    return -1


def _empty_grid(n: int, height: int, width: int, table) -> np.ndarray:
    """G for the compiled kernel: the padded ``(H + 2 R_y) x (W + 2 R_x) x A`` grid, flat, all -1."""
    _, lengths, _, ry, rx = table
    return np.full((height + 2 * ry) * (width + 2 * rx) * len(lengths), -1, np.int16 if n < 2 ** 15 else np.int32)


def _duplicate_cell(proposal: int):
    return ValueError(f"cells must be distinct: proposal {proposal} shares its anchor cell")


def asap_nms(boxes, scores, cells, grid_shape, lut: AnchorLUT, t: float, top_k: int | None = None,
             impl: str = "numba", return_count: bool = False):
    """ASAP-NMS of proposals ``boxes (n, 4)``, ``scores (n,)`` from anchor ``cells (n, 3)`` = (y, x, k).

    ``grid_shape`` is the ``(H, W)`` feature grid; ``lut`` an ``AnchorLUT`` of the same anchor shapes.
    G is rebuilt on every call. Returns keep indices in score order, or ``NMSResult(keep, num_iou)``
    with ``return_count=True``; ``top_k`` stops after that many are kept.
    """
    check_choice("impl", impl, ASAP_IMPLS)
    b, s, c, height, width, t, top_k = _checked_inputs(boxes, scores, cells, grid_shape, lut, t, top_k)
    if impl == "numba":
        table = lut.flat_table((height, width))
        keep, num_iou, _ = _asap_kernel(_empty_grid(len(s), height, width, table), b, s, c, height, width, *table,
                                        t, top_k, STAGE_FULL, NO_REPLAY, NO_REPLAY)
        if num_iou < 0:
            raise _duplicate_cell(-1 - num_iou)
        keep, num_iou = torch.from_numpy(keep), int(num_iou)
    else:
        if len(np.unique((c[:, 0] * width + c[:, 1]) * lut.num_shapes + c[:, 2])) != len(c):
            raise ValueError("cells must be distinct: two proposals share an anchor cell")
        run = _asap_torch if impl == "torch" else _asap_python
        keep, num_iou = run(b, s, c, height, width, _signed_offsets(lut, (height, width)), t, top_k)
    keep = torch.as_tensor(keep, dtype=torch.int64)
    return NMSResult(keep, num_iou) if return_count else keep


def staged_asap(boxes, scores, cells, grid_shape, lut: AnchorLUT, t: float):
    """``(run, call)`` for ``labkit.nms.phase_profile``: ``run(stage, replay_ptr, replay_idx)`` is the
    compiled kernel up to ``stage`` on these proposals, ``call()`` the public ``asap_nms`` call."""
    b, s, c, height, width, t, top_k = _checked_inputs(boxes, scores, cells, grid_shape, lut, t, None)
    table = lut.flat_table((height, width))

    def run(stage, replay_ptr, replay_idx):
        result = _asap_kernel(_empty_grid(len(s), height, width, table), b, s, c, height, width, *table, t, top_k,
                              stage, replay_ptr, replay_idx)
        if result[1] < 0:
            raise _duplicate_cell(-1 - result[1])
        return result

    return run, (lambda: asap_nms(boxes, scores, cells, grid_shape, lut, t))


# --- Speed and agreement on other anchor settings -------------------------------------------------

# Faster R-CNN C4 (the paper's detector): one stride-16 level, 128/256/512 px x 3 ratios, 800 x 1333 px.
PAPER_ANCHORS = AnchorConfig(stride=16, scales=(128.0, 256.0, 512.0), ratios=(0.5, 1.0, 2.0))
PAPER_IMAGE_SIZE = (800, 1333)
BASELINES = {"numba": nms.greedy_numba, "simd": nms.greedy_simd, "torchvision": nms.nms_torchvision}


def speed_and_agreement(config: AnchorConfig = PAPER_ANCHORS, image_size=PAPER_IMAGE_SIZE,
                        num_proposals: int = 6000, anchor_iou_cutoff: float = 0.2, t: float = 0.7,
                        delta_std: float = 0.1, seeds=(0, 1, 2), repeats: int = 7,
                        baselines=("numba", "simd", "torchvision"), clock=time.thread_time) -> dict:
    """Compiled ASAP-NMS against greedy NMS on one anchor setting: speed-ups and keep-set agreement.

    Each seed draws independent RPN-like proposals (``labkit.nms.synthetic_proposals`` with these
    anchors, image size and box-delta std ``delta_std``: how far proposals drift from their anchors).
    Times are medians of ``repeats`` calls (thread CPU time by default), after one warm-up call.
    Returns ``lut_size`` (mean neighbourhood size), ``delta_std``, and one list per seed:
    ``asap_s``, ``greedy_s[name]``, ``speedup[name]`` (greedy over ASAP) for each of ``baselines``
    (``"numba"``: ``greedy_numba``, ``"simd"``: ``greedy_simd``, ``"torchvision"``), ``jaccard``
    (ASAP's keep set against greedy's) and ``iou_ratio`` (greedy's IoU evaluations over ASAP's).
    """
    for name in baselines:
        check_choice("baselines[]", name, BASELINES)
    lut = AnchorLUT(config, anchor_iou_cutoff)
    rows = dict(lut_size=lut.size, delta_std=float(delta_std), asap_s=[], jaccard=[], iou_ratio=[],
                greedy_s={name: [] for name in baselines}, speedup={name: [] for name in baselines})
    for seed in seeds:
        p = nms.synthetic_proposals(num_proposals, image_size, config, seed=seed, delta_std=delta_std)
        asap = asap_nms(*p, lut, t, return_count=True)
        greedy = nms.greedy_numba(p.boxes, p.scores, t, return_count=True)
        rows["jaccard"].append(nms.keep_jaccard(asap.keep, greedy.keep))
        rows["iou_ratio"].append(greedy.num_iou / max(asap.num_iou, 1))
        asap_s = nms.time_nms(asap_nms, *p, lut, t, repeats=repeats, warmup=1, clock=clock).median
        rows["asap_s"].append(asap_s)
        for name in baselines:
            seconds = nms.time_nms(BASELINES[name], p.boxes, p.scores, t, repeats=repeats, warmup=1, clock=clock).median
            rows["greedy_s"][name].append(seconds)
            rows["speedup"][name].append(seconds / asap_s)
    return rows


def setting_sweeps(side_over_stride=(2, 4, 8, 16, 32), delta_stds=(0.05, 0.1, 0.2, 0.3), **kwargs) -> dict:
    """``speed_and_agreement`` rows along two axes, on the paper's 800 x 1333 px image at stride 16.

    ``"anchor_side"``: single-scale anchors (3 ratios) whose side is ``side_over_stride`` strides
    (the LUT grows with it), each row with its ``side_over_stride``; ``"drift"``: the paper's anchors
    (``PAPER_ANCHORS``) with box-delta std ``delta_std``. ``kwargs`` go to ``speed_and_agreement``.
    """
    stride = PAPER_ANCHORS.stride
    sides = [dict(side_over_stride=float(f), **speed_and_agreement(
        AnchorConfig(stride, (float(f * stride),), PAPER_ANCHORS.ratios), **kwargs)) for f in side_over_stride]
    drifts = [speed_and_agreement(PAPER_ANCHORS, delta_std=d, **kwargs) for d in delta_stds]
    return {"anchor_side": sides, "drift": drifts}

r"""ASAP-NMS inside torchvision's ``RegionProposalNetwork``: the method of ``labkit.methods.asap_nms``
on a real detector.

An FPN detector (FPN, per-level NMS as in detectron2 and torchvision: one LUT per
level, no cross-level tables). ``use_asap_nms(model.rpn)`` swaps the ``filter_proposals`` of an
unmodified ``torchvision.models.detection.rpn.RegionProposalNetwork``: torchvision's own pre-NMS
top-k per level, clipping, small-box and low-score removal run unchanged but carry each proposal's
position in the decoded order, which gives its level and anchor cell (each level is ``(H, W, A)``
flattened); ``torchvision_level_lut`` builds each level's LUT from the anchor generator's sizes,
aspect ratios and stride (image size // feature size); ``asap_nms`` replaces ``batched_nms``. With
``anchor_iou_cutoff=0, radius="full"`` it returns torchvision's proposals exactly. Clipping moves a
large anchor's proposal far from its anchor: two clipped proposals can coincide while their anchors
overlap by less than the cutoff, a suppression ASAP misses (``tests/methods/test_asap_nms_torchvision.py``).

The same paper as ``asap_nms`` (this module is its torchvision adapter, apart so that the chapter's
module stays readable); it imports torchvision only inside its functions.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from labkit.config import check_choice
from labkit.methods.asap_nms import ASAP_IMPLS, AnchorLUT, asap_nms
from labkit.models.anchors import AnchorConfig

__all__ = ["LevelProposals", "anchor_cells", "torchvision_level_lut", "select_rpn_proposals", "RPNAsapNMS",
           "use_asap_nms"]


@dataclasses.dataclass
class LevelProposals:
    """One image's proposals from one FPN level after torchvision's pre-NMS filtering, in its order.

    ``boxes (n, 4)`` clipped to the image, ``scores (n,)`` objectness probabilities, ``cells (n, 3)``
    the anchor cells ``(y, x, k)`` with ``k`` the anchor generator's own index (ratio-major,
    ``k = i_ratio * len(sizes) + i_size``), ``index (n,)`` the positions in the image's decoded
    proposals (levels concatenated, each ``(H, W, A)`` flattened); ``grid_shape`` ``(H, W)`` and
    ``stride`` ``(s_y, s_x)`` in pixels, as torchvision's ``AnchorGenerator`` computes them.
    """

    level: int
    boxes: torch.Tensor
    scores: torch.Tensor
    cells: torch.Tensor
    index: torch.Tensor
    grid_shape: tuple
    stride: tuple


def anchor_cells(index: torch.Tensor, grid_shape, num_anchors: int) -> torch.Tensor:
    """``(n, 3)`` cells ``(y, x, k)`` of positions ``index (n,)`` in one level's ``(H, W, A)``-flattened
    anchors (torchvision's order: its anchors and its RPN head's outputs are both laid out so)."""
    width = int(grid_shape[1])
    return torch.stack([index // (num_anchors * width), (index // num_anchors) % width, index % num_anchors], dim=1)


def torchvision_level_lut(anchor_generator, level: int, stride, anchor_iou_cutoff: float = 0.2,
                          radius: int | str | None = None) -> tuple[AnchorLUT, torch.Tensor]:
    """The ``AnchorLUT`` of one level of a torchvision ``AnchorGenerator`` at ``stride (s_y, s_x)``, and
    ``to_lut (A,)``: the LUT's shape index of each of the generator's anchor indices.

    The generator orders shapes ratio-major, ``AnchorConfig`` scale-major. A lattice with
    ``s_y != s_x`` is the square lattice of stride ``s_y`` with every width scaled by ``c = s_y / s_x``
    (IoU does not change when one axis is scaled): scales ``* sqrt(c)``, ratios ``/ c``. The LUT
    uses the exact sizes x ratios; torchvision rounds its base anchors to whole pixels, which only
    moves anchor IoUs lying within a pixel's worth of the cutoff.
    """
    sizes, ratios = anchor_generator.sizes[level], anchor_generator.aspect_ratios[level]
    stride_y, stride_x = (int(s) for s in stride)
    c = stride_y / stride_x
    config = AnchorConfig(stride_y, tuple(float(s) * math.sqrt(c) for s in sizes), tuple(float(r) / c for r in ratios))
    k = torch.arange(len(sizes) * len(ratios))
    return AnchorLUT(config, anchor_iou_cutoff, radius), (k % len(sizes)) * len(ratios) + k // len(sizes)


def select_rpn_proposals(rpn, proposals: torch.Tensor, objectness: torch.Tensor, image_shapes,
                         num_anchors_per_level, grids) -> list[list[LevelProposals]]:
    """torchvision's ``RegionProposalNetwork.filter_proposals`` up to its NMS, carrying each proposal's
    position: pre-NMS top-k per level, sigmoid, clipping, small-box and low-score removal.

    ``proposals (N, M, 4)`` decoded boxes and ``objectness (N * M, 1)`` logits in the decoded order,
    ``image_shapes`` N ``(h, w)``, ``num_anchors_per_level`` the ``H * W * A`` of each level,
    ``grids`` one ``((H, W), (s_y, s_x))`` per level. Returns per image one ``LevelProposals`` per level.
    """
    from torchvision.ops import boxes as box_ops

    sizes = [h * w * a for ((h, w), _), a in zip(grids, rpn.anchor_generator.num_anchors_per_location())]
    if sizes != list(num_anchors_per_level):
        raise ValueError(f"grids give {sizes} anchors per level but the RPN has {list(num_anchors_per_level)}; "
                         "grids must come from the same forward pass")
    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)
    top_n_idx = rpn._get_top_n_idx(objectness, num_anchors_per_level)  # (N, m): torchvision's own selection
    batch = torch.arange(num_images, device=proposals.device)[:, None]
    scores, boxes = torch.sigmoid(objectness[batch, top_n_idx]), proposals[batch, top_n_idx]
    starts = torch.tensor([0, *num_anchors_per_level], device=proposals.device).cumsum(0)
    out = []
    for b, s, index, image_shape in zip(boxes, scores, top_n_idx, image_shapes):
        b = box_ops.clip_boxes_to_image(b, image_shape)
        keep = box_ops.remove_small_boxes(b, rpn.min_size)
        b, s, index = b[keep], s[keep], index[keep]
        keep = torch.where(s >= rpn.score_thresh)[0]  # >= as torchvision
        b, s, index = b[keep], s[keep], index[keep]
        level = torch.bucketize(index, starts[1:], right=True)  # each position's level
        per_level = []
        for lvl, (grid_shape, stride) in enumerate(grids):
            sel = torch.where(level == lvl)[0]
            local = index[sel] - starts[lvl]
            cells = anchor_cells(local, grid_shape, rpn.anchor_generator.num_anchors_per_location()[lvl])
            per_level.append(LevelProposals(lvl, b[sel], s[sel], cells, index[sel], grid_shape, stride))
        out.append(per_level)
    return out


class RPNAsapNMS:
    """ASAP-NMS in place of the per-level ``batched_nms`` of one torchvision ``RegionProposalNetwork``.

    ``use_asap_nms`` makes one and installs it: the RPN then calls it as its ``filter_proposals``,
    and a forward hook on the RPN's anchor generator gives it each level's grid and stride. It keeps
    one ``AnchorLUT`` per (level, stride) and runs ``asap_nms`` per level with the RPN's
    ``nms_thresh``, then the RPN's post-NMS top-k, as torchvision does. ``last_proposals`` holds the
    last call's ``select_rpn_proposals``. Made directly, without ``install``, only ``nms`` is used.
    """

    def __init__(self, rpn, anchor_iou_cutoff: float = 0.2, radius: int | str | None = None, impl: str = "numba"):
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.rpn import RegionProposalNetwork

        if not isinstance(rpn, RegionProposalNetwork):
            raise TypeError(f"rpn must be a torchvision RegionProposalNetwork (model.rpn); got {type(rpn).__name__}")
        if not isinstance(rpn.anchor_generator, AnchorGenerator):
            raise TypeError("rpn.anchor_generator must be a torchvision AnchorGenerator (sizes and aspect_ratios "
                            f"per level); got {type(rpn.anchor_generator).__name__}")
        check_choice("impl", impl, ASAP_IMPLS)
        AnchorLUT(AnchorConfig(), anchor_iou_cutoff, radius)  # checks them now, not at the first forward
        self.rpn, self.anchor_iou_cutoff, self.radius, self.impl = rpn, anchor_iou_cutoff, radius, impl
        self._luts, self._grids, self._hook, self.last_proposals = {}, None, None, None

    def install(self) -> "RPNAsapNMS":
        """Make the RPN call this object as its ``filter_proposals``; ``remove`` undoes it."""
        if "filter_proposals" in self.rpn.__dict__:
            raise ValueError("rpn already has a replaced filter_proposals; call .remove() on it first")
        self._hook = self.rpn.anchor_generator.register_forward_hook(self._record_grids)
        self.rpn.filter_proposals = self  # an instance attribute shadows the method
        return self

    def remove(self) -> None:
        """Give the RPN back its own ``filter_proposals`` (greedy ``batched_nms``)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook, self._grids = None, None
        if self.rpn.__dict__.get("filter_proposals") is self:
            del self.rpn.__dict__["filter_proposals"]

    def _record_grids(self, module, inputs, output) -> None:
        image_list, feature_maps = inputs
        height, width = image_list.tensors.shape[-2:]
        self._grids = [((int(f.shape[-2]), int(f.shape[-1])), (height // f.shape[-2], width // f.shape[-1]))
                       for f in feature_maps]  # torchvision's strides: image size // feature size

    def lut(self, level: int, stride) -> tuple[AnchorLUT, torch.Tensor]:
        """The level's ``(AnchorLUT, to_lut)`` at ``stride`` (built once per level and stride)."""
        key = (level, *(int(s) for s in stride))
        if key not in self._luts:
            self._luts[key] = torchvision_level_lut(self.rpn.anchor_generator, level, stride,
                                                    self.anchor_iou_cutoff, self.radius)
        return self._luts[key]

    def nms(self, levels: list[LevelProposals]) -> torch.Tensor:
        """Keep indices into one image's ``levels`` concatenated, by decreasing score (stable): ASAP-NMS
        level by level, like torchvision's ``batched_nms`` with the level as the id."""
        keeps, offset = [], 0
        for p in levels:
            lut, to_lut = self.lut(p.level, p.stride)
            cells = p.cells.cpu()
            cells = torch.stack([cells[:, 0], cells[:, 1], to_lut[cells[:, 2]]], dim=1)
            keeps.append(asap_nms(p.boxes, p.scores, cells, p.grid_shape, lut, self.rpn.nms_thresh, impl=self.impl)
                         + offset)
            offset += len(p.scores)
        keep = torch.cat(keeps)
        scores = torch.cat([p.scores.detach().cpu() for p in levels])
        keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
        return keep.to(levels[0].scores.device)

    def __call__(self, proposals, objectness, image_shapes, num_anchors_per_level):
        if self._grids is None:
            raise ValueError("no grid recorded: install() it, then call the RPN itself (its anchor generator "
                             "must run before filter_proposals)")
        self.last_proposals = select_rpn_proposals(self.rpn, proposals, objectness, image_shapes,
                                                   num_anchors_per_level, self._grids)
        boxes, scores = [], []
        for levels in self.last_proposals:
            keep = self.nms(levels)[:self.rpn.post_nms_top_n()]
            boxes.append(torch.cat([p.boxes for p in levels])[keep])
            scores.append(torch.cat([p.scores for p in levels])[keep])
        return boxes, scores


def use_asap_nms(rpn, anchor_iou_cutoff: float = 0.2, radius: int | str | None = None,
                 impl: str = "numba") -> RPNAsapNMS:
    """Make an unmodified torchvision ``RegionProposalNetwork`` (``model.rpn`` of a Faster/Mask R-CNN)
    run ASAP-NMS per FPN level instead of greedy NMS; ``.remove()`` on the result undoes it.

    The RPN keeps its own thresholds (``nms_thresh``, ``pre_nms_top_n``, ``post_nms_top_n``,
    ``score_thresh``); ``anchor_iou_cutoff`` and ``radius`` configure the per-level LUTs as in
    ``AnchorLUT`` (``0.0, "full"``: every pair is compared, i.e. greedy NMS), ``impl`` as in ``asap_nms``.
    """
    return RPNAsapNMS(rpn, anchor_iou_cutoff, radius, impl).install()

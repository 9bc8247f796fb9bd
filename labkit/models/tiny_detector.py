r"""A tiny anchor-based two-stage detector (Faster R-CNN style) that trains on a CPU (chapters 05, 08).

Modules are named as in the papers so a chapter can prune or swap them by name:

- ``base``: the backbone, four conv-BN-ReLU blocks (32/64/96/128 channels) with stride-2 steps
  until the anchor stride (8 → three steps, 16 → four). ``base.conv{i}.conv`` are the convs.
- ``rpn``: a 3×3 ``conv`` then 1×1 ``objectness`` (A per cell) and ``deltas`` (4A per cell).
- ``top``: RoIAlign (``torchvision.ops.roi_align``) to 7×7, then ``fc1`` and ``fc2`` (128 wide).
- ``heads``: ``cls_score`` (C + 1 logits, index 0 is background) and ``bbox_pred`` (4C deltas,
  class-specific, or 4 when ``class_agnostic=True``).

Conventions: images ``(n, 3, H, W)`` in [0, 1]; boxes ``(x1, y1, x2, y2)`` pixels; a target is a dict
``{"boxes": (m, 4), "labels": (m,)}`` with labels ``0..C-1`` (foreground classes; a COCO category id
is the label's position in the sorted category ids, i.e. ``label + 1`` for ids 1..C). Proposals keep
the anchor cell ``(y, x, k)`` they were decoded from through every filter, so ASAP-NMS (chapter 08)
can replace the RPN's greedy NMS through ``rpn_nms(boxes, scores, cells, grid_shape) -> keep``.
"""
from __future__ import annotations

import collections
import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms, remove_small_boxes, roi_align

from labkit.config import check_choice, check_positive_float, check_positive_int, check_range
from labkit.models.anchors import AnchorConfig, anchor_lattice, decode_deltas, encode_boxes

DEFAULT_ANCHORS = AnchorConfig(stride=8, scales=(12.0, 24.0, 48.0, 96.0), ratios=(0.5, 1.0, 2.0))
DETECTOR_MODULES = ("base", "rpn", "top", "heads")  # the lottery-ticket chapter's module split
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Faster R-CNN's scaling of the box head's targets
RpnNms = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple], torch.Tensor]


def greedy_rpn_nms(boxes, scores, cells, grid_shape, iou_threshold: float = 0.7) -> torch.Tensor:
    """The default RPN NMS: greedy ``torchvision.ops.nms`` (ignores ``cells`` and ``grid_shape``)."""
    return nms(boxes, scores, iou_threshold)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(collections.OrderedDict(
        conv=nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        bn=nn.BatchNorm2d(c_out), relu=nn.ReLU(inplace=True)))


class Base(nn.Module):
    """``(n, 3, H, W)`` → ``(n, C, ceil(H/s), ceil(W/s))``: conv-BN-ReLU blocks, stride-2 steps first."""

    def __init__(self, widths: Sequence[int], stride: int):
        super().__init__()
        num_steps = int(round(math.log2(stride)))
        if 2 ** num_steps != stride or not 1 <= num_steps <= len(widths):
            raise ValueError(f"anchor stride={stride!r} is not valid; it must be a power of two "
                             f"between 2 and {2 ** len(widths)} (one stride-2 step per base block)")
        c_in = 3
        for i, width in enumerate(widths):
            self.add_module(f"conv{i + 1}", _conv_bn_relu(c_in, width, 2 if i < num_steps else 1))
            c_in = width
        self.out_channels = c_in

    def forward(self, x):
        for block in self.children():
            x = block(x)
        return x


class RPN(nn.Module):
    """Objectness ``(n, H, W, A)`` logits and deltas ``(n, H, W, A, 4)`` for every anchor cell."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features):
        h = F.relu(self.conv(features))
        n, _, H, W = h.shape
        objectness = self.objectness(h).permute(0, 2, 3, 1)  # (n, H, W, A)
        deltas = self.deltas(h).view(n, -1, 4, H, W).permute(0, 3, 4, 1, 2)  # (n, H, W, A, 4)
        return objectness, deltas


class Top(nn.Module):
    """RoIAlign to ``roi_size²`` then two FC layers: ``(R, fc_dim)`` per-RoI features."""

    def __init__(self, channels: int, stride: int, roi_size: int = 7, fc_dim: int = 128, sampling_ratio: int = 1):
        super().__init__()
        self.stride, self.roi_size, self.sampling_ratio = stride, roi_size, sampling_ratio
        self.fc1 = nn.Linear(channels * roi_size * roi_size, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, features, rois: list[torch.Tensor]):
        x = roi_align(features, rois, self.roi_size, spatial_scale=1.0 / self.stride,
                      sampling_ratio=self.sampling_ratio, aligned=True)
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))


class Heads(nn.Module):
    """Class logits ``(R, C + 1)`` (0 = background) and box deltas ``(R, 4C)`` or ``(R, 4)``."""

    def __init__(self, fc_dim: int, num_classes: int, class_agnostic: bool = False):
        super().__init__()
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, 4 if class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class TinyDetector(nn.Module):
    """Faster R-CNN at CPU scale: ``base`` → ``rpn`` → proposals → ``top`` → ``heads``.

    ``pre_nms_top_n``/``post_nms_top_n`` are the RPN's proposal budgets; ``rpn_nms`` replaces the
    greedy NMS (see ``propose``); ``min_size`` drops proposals narrower or shorter than it (px).
    ``roi_sampling_ratio=1`` (one bilinear sample per RoIAlign bin) and ``fc_dim=128`` keep a CPU
    step fast: torchvision's CPU ``roi_align`` backward dominated the step at ratio 2.
    """

    def __init__(self, num_classes: int, anchor_config: AnchorConfig = DEFAULT_ANCHORS, *,
                 widths: Sequence[int] = (32, 64, 96, 128), fc_dim: int = 128, roi_size: int = 7,
                 roi_sampling_ratio: int = 1, class_agnostic: bool = False, pre_nms_top_n: int = 1000,
                 post_nms_top_n: int = 300,
                 rpn_nms_thresh: float = 0.7, min_size: float = 1.0, rpn_nms: RpnNms | None = None):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        if not isinstance(anchor_config, AnchorConfig):
            raise ValueError(f"anchor_config={anchor_config!r} is not valid; pass an AnchorConfig")
        sizes = {"fc_dim": fc_dim, "roi_size": roi_size, "roi_sampling_ratio": roi_sampling_ratio,
                 "pre_nms_top_n": pre_nms_top_n, "post_nms_top_n": post_nms_top_n,
                 **{f"widths[{i}]": w for i, w in enumerate(widths)}}
        for name, value in sizes.items():
            check_positive_int(name, value)
        check_range("rpn_nms_thresh", rpn_nms_thresh, 0.0, 1.0)
        self.num_classes, self.anchor_config, self.class_agnostic = num_classes, anchor_config, class_agnostic
        self.pre_nms_top_n, self.post_nms_top_n = pre_nms_top_n, post_nms_top_n
        self.rpn_nms_thresh, self.min_size, self.rpn_nms = rpn_nms_thresh, float(min_size), rpn_nms
        self.base = Base(widths, anchor_config.stride)
        self.rpn = RPN(self.base.out_channels, anchor_config.num_shapes)
        self.top = Top(self.base.out_channels, anchor_config.stride, roi_size, fc_dim, roi_sampling_ratio)
        self.heads = Heads(fc_dim, num_classes, class_agnostic)
        self._anchor_cache: dict = {}

    @property
    def stride(self) -> int:
        return self.anchor_config.stride

    def check_images(self, images) -> None:
        """Raise a ValueError unless ``images`` is a float ``(n, 3, H, W)`` tensor with H, W ≥ stride."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (n, 3, H, W); got {got}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [0, 1]; got dtype {images.dtype}")
        if min(images.shape[-2:]) < self.stride or images.shape[0] < 1:
            raise ValueError(f"images of shape {tuple(images.shape)} are too small: need n >= 1 and "
                             f"H, W >= the anchor stride {self.stride}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` in [0, 1] → base features ``(n, C, H', W')``."""
        self.check_images(images)
        return self.base((images - 0.5) / 0.25)

    def anchors(self, height: int, width: int, device) -> torch.Tensor:
        """``(H, W, A, 4)`` anchor lattice of a feature grid, cached per (H, W, device)."""
        key = (height, width, str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = anchor_lattice(height, width, self.anchor_config).to(device)
        return self._anchor_cache[key]

    def forward(self, images: torch.Tensor):
        """Base features, RPN objectness ``(n, H, W, A)`` and deltas ``(n, H, W, A, 4)``."""
        features = self.features(images)
        return (features, *self.rpn(features))

    @torch.no_grad()
    def proposals_from_rpn(self, objectness, deltas, image_size: tuple, *, pre_nms_top_n=None,
                           post_nms_top_n=None, rpn_nms: RpnNms | None = None) -> list[dict]:
        """Per image: decode on the lattice → pre-NMS top-k → clip → drop tiny → NMS → post-NMS top-k.

        Returns dicts ``boxes (p, 4)``, ``scores (p,)`` (sigmoid objectness), ``cells (p, 3)`` long
        ``(y, x, k)`` and ``grid_shape (H, W, A)``; row ``i`` of each is the same proposal.
        """
        n, H, W, A = objectness.shape
        pre_n = min(pre_nms_top_n or self.pre_nms_top_n, H * W * A)
        post_n = post_nms_top_n or self.post_nms_top_n
        rpn_nms = rpn_nms or self.rpn_nms
        anchors = self.anchors(H, W, objectness.device).reshape(-1, 4)
        top_logits, top_idx = objectness.reshape(n, -1).float().topk(pre_n, dim=1)  # sorted, descending
        out = []
        for i in range(n):
            idx = top_idx[i]
            cells = torch.stack([idx // (W * A), (idx // A) % W, idx % A], dim=1)
            boxes = decode_deltas(anchors[idx], deltas[i].reshape(-1, 4)[idx].float())
            boxes = clip_boxes_to_image(boxes, image_size)
            scores = top_logits[i].sigmoid()
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores, cells = boxes[keep], scores[keep], cells[keep]
            if rpn_nms is None:
                keep = greedy_rpn_nms(boxes, scores, cells, (H, W, A), self.rpn_nms_thresh)
            else:
                keep = torch.as_tensor(rpn_nms(boxes, scores, cells, (H, W, A)), device=boxes.device).long()
                if keep.numel() and (keep.min() < 0 or keep.max() >= len(boxes)):
                    raise ValueError(f"rpn_nms returned indices outside [0, {len(boxes)})")
                keep = keep[scores[keep].argsort(descending=True, stable=True)]
            keep = keep[:post_n]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "cells": cells[keep],
                        "grid_shape": (H, W, A)})
        return out

    def propose(self, images: torch.Tensor, **kwargs) -> list[dict]:
        """RPN proposals of ``images (n, 3, H, W)``; kwargs as in ``proposals_from_rpn``."""
        with torch.no_grad():
            _, objectness, deltas = self(images)
        return self.proposals_from_rpn(objectness, deltas, tuple(images.shape[-2:]), **kwargs)

    def roi_outputs(self, features, rois: list[torch.Tensor]):
        """Class logits ``(R, C + 1)`` and box deltas ``(R, C, 4)`` (or ``(R, 1, 4)``) of RoIs."""
        logits, deltas = self.heads(self.top(features, rois))
        return logits, deltas.view(len(deltas), -1, 4)


def _check_targets(targets, n: int, num_classes: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images; pass one dict(boxes, labels) per image")
    out = []
    for i, target in enumerate(targets):
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.long, device=device).reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(f"target {i}: {len(boxes)} boxes but {len(labels)} labels")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"target {i}: labels must lie in [0, {num_classes}); got {labels.tolist()}")
        if boxes.numel() and not bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()):
            raise ValueError(f"target {i}: boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
        out.append((boxes, labels))
    return out


def _sample(positive: torch.Tensor, negative: torch.Tensor, num: int, fraction: float, generator) -> tuple:
    """Indices of up to ``fraction·num`` positives and the rest negatives, drawn at random."""
    def pick(mask, k):
        idx = mask.nonzero().squeeze(1)
        order = torch.randperm(len(idx), generator=generator).to(idx.device) if generator is not None \
            else torch.randperm(len(idx), device=idx.device)
        return idx[order[:k]]
    pos = pick(positive, int(num * fraction))
    return pos, pick(negative, num - len(pos))


def _match(gt_boxes, boxes, high: float, low: float, best_per_gt: bool):
    """Per box: matched gt index and label 1 (IoU ≥ high), 0 (< low), -1 (between: ignored)."""
    labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    if len(gt_boxes) == 0:
        return torch.zeros_like(labels), labels
    iou = box_iou(gt_boxes, boxes)  # (m, N)
    best_iou, matched = iou.max(dim=0)
    labels[best_iou >= low] = -1
    labels[best_iou >= high] = 1
    if best_per_gt:  # each gt's best anchor(s) is positive even below ``high`` (Faster R-CNN)
        best_for_gt = iou.max(dim=1, keepdim=True).values
        labels[((iou == best_for_gt) & (best_for_gt > 0)).any(dim=0)] = 1
    return matched, labels


def detector_losses(model: TinyDetector, images: torch.Tensor, targets: Sequence[dict], *,
                    rpn_batch: int = 256, roi_batch: int = 128, roi_fg_fraction: float = 0.25,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Faster R-CNN's four losses and their sum ``loss`` for ``images (n, 3, H, W)`` and targets.

    RPN: anchors IoU ≥ 0.7 positive, < 0.3 negative, plus each gt's best anchor; 256 per image at
    up to 1:1. RoIs: proposals plus the gt boxes, 128 per image, up to 25% foreground (IoU ≥ 0.5).
    Box losses are smooth-L1 (β = 1/9) summed and divided by the sampled count, as in torchvision.
    """
    features, objectness, rpn_deltas = model(images)
    gts = _check_targets(targets, len(images), model.num_classes, images.device)
    n, H, W, A = objectness.shape
    anchors = model.anchors(H, W, images.device).reshape(-1, 4)
    obj_flat, rpn_deltas_flat = objectness.reshape(n, -1), rpn_deltas.reshape(n, -1, 4)

    obj_logits, obj_labels, box_pred, box_target = [], [], [], []
    for i, (gt_boxes, _) in enumerate(gts):
        matched, labels = _match(gt_boxes, anchors, 0.7, 0.3, best_per_gt=True)
        pos, neg = _sample(labels == 1, labels == 0, rpn_batch, 0.5, generator)
        sampled = torch.cat([pos, neg])
        obj_logits.append(obj_flat[i, sampled])
        obj_labels.append((labels[sampled] == 1).float())
        box_pred.append(rpn_deltas_flat[i, pos])
        box_target.append(encode_boxes(anchors[pos], gt_boxes[matched[pos]]) if len(pos) else anchors[:0])
    num_sampled = max(sum(len(t) for t in obj_labels), 1)
    rpn_objectness = F.binary_cross_entropy_with_logits(torch.cat(obj_logits), torch.cat(obj_labels),
                                                        reduction="sum") / num_sampled
    rpn_box = F.smooth_l1_loss(torch.cat(box_pred), torch.cat(box_target), beta=1 / 9,
                               reduction="sum") / num_sampled

    proposals = model.proposals_from_rpn(objectness.detach(), rpn_deltas.detach(), tuple(images.shape[-2:]))
    weights = torch.tensor(ROI_BOX_WEIGHTS, device=images.device)
    rois, roi_labels, roi_targets = [], [], []
    for (gt_boxes, gt_labels), props in zip(gts, proposals):
        boxes = torch.cat([props["boxes"], gt_boxes])
        matched, fg = _match(gt_boxes, boxes, 0.5, 0.5, best_per_gt=False)
        pos, neg = _sample(fg == 1, fg == 0, roi_batch, roi_fg_fraction, generator)
        sampled = torch.cat([pos, neg])
        rois.append(boxes[sampled])
        labels = torch.zeros(len(sampled), dtype=torch.long, device=images.device)
        labels[:len(pos)] = gt_labels[matched[pos]] + 1
        roi_labels.append(labels)
        target = torch.zeros(len(sampled), 4, device=images.device)
        if len(pos):
            target[:len(pos)] = encode_boxes(boxes[pos], gt_boxes[matched[pos]]) * weights
        roi_targets.append(target)
    logits, deltas = model.roi_outputs(features, rois)
    labels, targets_ = torch.cat(roi_labels), torch.cat(roi_targets)
    roi_cls = F.cross_entropy(logits, labels)
    fg_idx = (labels > 0).nonzero().squeeze(1)
    fg_class = torch.zeros_like(fg_idx) if model.class_agnostic else labels[fg_idx] - 1
    roi_box = F.smooth_l1_loss(deltas[fg_idx, fg_class], targets_[fg_idx], beta=1 / 9,
                               reduction="sum") / max(len(labels), 1)
    loss = rpn_objectness + rpn_box + roi_cls + roi_box
    return {"rpn_objectness": rpn_objectness, "rpn_box": rpn_box, "roi_cls": roi_cls, "roi_box": roi_box,
            "loss": loss}


@torch.no_grad()
def detect(model: TinyDetector, images: torch.Tensor, score_thresh: float = 0.05, nms_thresh: float = 0.5,
           max_detections: int = 100, rpn_nms: RpnNms | None = None, **proposal_kwargs) -> list[dict]:
    """Per image ``dict(boxes (d, 4), scores (d,), labels (d,) in 0..C-1)``, per-class NMS'd.

    Runs in eval mode (BN running statistics) and restores the model's mode afterwards.
    """
    check_range("score_thresh", score_thresh, 0.0, 1.0)
    check_range("nms_thresh", nms_thresh, 0.0, 1.0)
    check_positive_int("max_detections", max_detections)
    was_training = model.training
    model.eval()
    try:
        features, objectness, rpn_deltas = model(images)
        size = tuple(images.shape[-2:])
        proposals = model.proposals_from_rpn(objectness, rpn_deltas, size, rpn_nms=rpn_nms, **proposal_kwargs)
        logits, deltas = model.roi_outputs(features, [p["boxes"] for p in proposals])
    finally:
        model.train(was_training)
    probs = logits.softmax(dim=1)[:, 1:]  # (R, C)
    C = probs.shape[1]
    weights = torch.tensor(ROI_BOX_WEIGHTS, device=images.device)
    results, start = [], 0
    for props in proposals:
        stop = start + len(props["boxes"])
        d, p = deltas[start:stop].expand(-1, C, -1), probs[start:stop]  # (r, C, 4), (r, C)
        anchors = props["boxes"][:, None].expand(-1, C, -1)
        boxes = clip_boxes_to_image(decode_deltas(anchors.reshape(-1, 4), d.reshape(-1, 4) / weights), size)
        scores = p.reshape(-1)
        labels = torch.arange(C, device=images.device).repeat(stop - start)
        keep = (scores > score_thresh).nonzero().squeeze(1)
        keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        start = stop
    return results


def _as_dataset(data) -> tuple[torch.Tensor, list[dict]]:
    """``(images, targets)``, ``(images, boxes, labels)``, a dict or an object with those fields."""
    if isinstance(data, dict):
        data = (data["images"], data["boxes"], data["labels"])
    elif hasattr(data, "images") and hasattr(data, "boxes") and hasattr(data, "labels"):
        data = (data.images, data.boxes, data.labels)
    if isinstance(data, (tuple, list)) and len(data) == 3:
        images, boxes, labels = data
        return images, [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], list(data[1])
    raise ValueError("data must be scenes (images, boxes, labels), (images, targets) or a dict/object "
                     f"with images, boxes and labels; got {type(data).__name__}")


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float = 0.02, weight_decay: float = 1e-4):
    """SGD with momentum 0.9 (Faster R-CNN's recipe) or AdamW (default betas) over ``model``."""
    check_choice("optimizer", name, OPTIMIZERS)
    check_positive_float("lr", lr)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, num_steps: int, warmup_steps: int, decay_at: Sequence[float] = (0.75,)) -> float:
    """Linear warm-up from 0.1 over ``warmup_steps``, then ×0.1 at each ``decay_at`` fraction."""
    decay = 0.1 ** sum(step >= int(f * num_steps) for f in decay_at)
    return decay * (min(1.0, 0.1 + 0.9 * step / warmup_steps) if warmup_steps > 0 else 1.0)


def default_warmup(num_steps: int) -> int:
    return min(100, max(num_steps // 10, 1))


def train_detector(model: TinyDetector, data, num_steps: int, lr: float = 0.02, batch_size: int = 8,
                   seed: int = 0, progress: bool = False, *, weight_decay: float = 1e-4,
                   warmup_steps: int | None = None, decay_at: Sequence[float] = (0.75,),
                   hooks: Sequence = (), log_every: int = 1, optimizer: str = "sgd",
                   start_step: int = 0, optimizer_state: dict | None = None,
                   setup: Callable | None = None, roi_batch: int = 128):
    """Train with SGD (momentum 0.9) or AdamW, linear warm-up then ×0.1 at each ``decay_at`` fraction.

    Batches are drawn without replacement per epoch from a generator seeded by ``seed``, which also
    drives anchor and RoI sampling. Returns ``labkit.train.fit``'s History (losses and ``lr``).

    Resuming (lottery-ticket rewinding): ``start_step`` runs steps ``start_step..num_steps-1`` of the
    same schedule, ``optimizer_state`` is loaded into the fresh optimizer, and ``setup(optimizer)``
    is called before the first step (to attach mask hooks, say). Hooks see ``state.step`` counted
    from ``start_step``'s first step (0-based); add ``start_step`` for the schedule's iteration.
    """
    from labkit.train import fit

    check_positive_int("batch_size", batch_size)
    check_positive_float("lr", lr)
    images, targets = _as_dataset(data)
    device = next(model.parameters()).device
    images = images.to(device)
    model.check_images(images)
    _check_targets(targets, len(images), model.num_classes, device)
    if not isinstance(start_step, int) or not 0 <= start_step <= num_steps:
        raise ValueError(f"start_step={start_step!r} is not valid; it must be an int in 0..num_steps={num_steps}")
    generator = torch.Generator().manual_seed(seed)
    warmup = default_warmup(num_steps) if warmup_steps is None else warmup_steps

    def batches():
        while True:
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
                idx = order[start:start + batch_size]
                yield images[idx], [targets[j] for j in idx.tolist()]

    opt = make_optimizer(model, optimizer, lr, weight_decay)
    if optimizer_state:  # a deep copy: load_state_dict shares the tensors, and training would mutate them
        opt.load_state_dict(copy.deepcopy(optimizer_state))
        for group in opt.param_groups:
            group["lr"] = group.get("initial_lr", lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step + start_step, num_steps, warmup, decay_at))
    if setup is not None:
        setup(opt)

    def step_fn(batch, step):
        out = detector_losses(model, *batch, roi_batch=roi_batch, generator=generator)
        out["lr"] = opt.param_groups[0]["lr"]
        return out

    return fit(model, batches(), step_fn, [opt], num_steps - start_step, hooks=hooks, schedulers=[scheduler],
               log_every=log_every, desc="detector", progress=progress)

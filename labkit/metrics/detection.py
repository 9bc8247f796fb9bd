"""COCO box AP through pycocotools' ``COCOeval`` (never hand-written), with our own size buckets.

Ground truth is a COCO-format dict (``images``, ``annotations`` with ``bbox [x, y, w, h]``,
``area``, ``iscrowd``; ``categories``). Detections are per image, in the order of
``ground_truth["images"]``: ``dict(boxes (d, 4) x1y1x2y2, scores (d,), labels (d,))`` where a label
``j`` is the ``j``-th category in ascending id order (``label + 1`` for ids 1..C, as
``ground_truth_to_coco`` writes them and the detector predicts them).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Mapping, Sequence

import numpy as np

AREA_BUCKETS = ("small", "medium", "large")
COCO_AREA_RANGES = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def ground_truth_to_coco(boxes_list: Sequence, labels_list: Sequence, image_size, class_names: Sequence[str]) -> dict:
    """A COCO gt dict from per-image ``boxes (m, 4) x1y1x2y2`` and ``labels (m,)`` in ``0..C-1``.

    Image ids are 1..n in order; category ids are 1..C; bbox is ``[x, y, w, h]``, area ``w·h``.
    """
    if len(boxes_list) != len(labels_list):
        raise ValueError(f"got {len(boxes_list)} box lists but {len(labels_list)} label lists")
    height, width = (image_size, image_size) if isinstance(image_size, (int, float)) else image_size
    images, annotations = [], []
    for i, (boxes, labels) in enumerate(zip(boxes_list, labels_list)):
        images.append({"id": i + 1, "height": int(height), "width": int(width)})
        boxes, labels = _as_list(boxes), _as_list(labels)
        if len(boxes) != len(labels):
            raise ValueError(f"image {i}: {len(boxes)} boxes but {len(labels)} labels")
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            if not 0 <= int(label) < len(class_names):
                raise ValueError(f"image {i}: label {label} is outside [0, {len(class_names)})")
            w, h = float(x2 - x1), float(y2 - y1)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": j + 1, "name": str(name)} for j, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _area_setting(area_ranges: Mapping | None) -> tuple[list, list]:
    ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    ranges.pop("all", None)
    if sorted(ranges) != sorted(AREA_BUCKETS):
        raise ValueError(f"area_ranges must have keys {AREA_BUCKETS} (optionally 'all'); got {sorted(ranges)}")
    rng = [[0.0, 1e10]]
    for name in AREA_BUCKETS:
        low, high = (float(v) for v in ranges[name])
        if not low <= high:
            raise ValueError(f"area_ranges[{name!r}]=({low}, {high}) is not valid; it needs low <= high")
        rng.append([low, min(high, 1e10) if math.isfinite(high) else 1e10])
    return rng, ["all", *AREA_BUCKETS]


def _results(detections: Sequence[Mapping], image_ids: list[int], category_ids: list[int]) -> list[dict]:
    out = []
    for image_id, det in zip(image_ids, detections):
        boxes, scores, labels = (_as_list(det[k]) for k in ("boxes", "scores", "labels"))
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
            if not 0 <= int(label) < len(category_ids):
                raise ValueError(f"image {image_id}: label {label} is outside [0, {len(category_ids)})")
            out.append({"image_id": image_id, "category_id": category_ids[int(label)],
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)})
    return out


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_evaluate(ground_truth: dict, detections: Sequence[Mapping], area_ranges: Mapping | None = None) -> dict:
    """``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``AP_small/medium/large`` and ``per_class`` AP list.

    ``area_ranges`` maps small/medium/large to ``(low, high)`` px² (default COCO's 32², 96²). A
    bucket with no ground truth gives NaN (pycocotools' -1); empty detections give AP 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(ground_truth)  # COCOeval writes "ignore" into the annotation dicts
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"ground_truth is not a COCO dict: it has no {key!r} list")
    image_ids = [image["id"] for image in gt["images"]]
    if len(detections) != len(image_ids):
        raise ValueError(f"got detections for {len(detections)} images but ground truth has {len(image_ids)}")
    category_ids = sorted(c["id"] for c in gt["categories"])
    area_rng, area_lbl = _area_setting(area_ranges)
    results = _results(detections, image_ids, category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes indexes anns[0]; an empty result set evaluates to precision 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.areaRng, evaluator.params.areaRngLbl = area_rng, area_lbl
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M maxDets)
    iou_thrs = evaluator.params.iouThrs
    t50, t75 = int(np.argmin(np.abs(iou_thrs - 0.5))), int(np.argmin(np.abs(iou_thrs - 0.75)))
    m = len(evaluator.params.maxDets) - 1  # the largest maxDets (100)
    out = {"AP": _mean_valid(precision[:, :, :, 0, m]), "AP50": _mean_valid(precision[t50, :, :, 0, m]),
           "AP75": _mean_valid(precision[t75, :, :, 0, m])}
    for a, name in enumerate(AREA_BUCKETS, start=1):
        out[f"AP_{name}"] = _mean_valid(precision[:, :, :, a, m])
    out["per_class"] = [_mean_valid(precision[:, :, k, 0, m]) for k in range(precision.shape[2])]
    return out

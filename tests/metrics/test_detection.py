import math

import pytest
import torch

from labkit.metrics.detection import coco_evaluate, ground_truth_to_coco

NAMES = ("square", "bar")


def _gt(boxes, labels, size=128):
    return ground_truth_to_coco(boxes, labels, size, NAMES)


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_ground_truth_to_coco_fields():
    gt = _gt([[[10, 20, 40, 30]], []], [[1], []])
    assert [im["id"] for im in gt["images"]] == [1, 2]
    (ann,) = gt["annotations"]
    assert ann["bbox"] == [10.0, 20.0, 30.0, 10.0] and ann["area"] == 300.0
    assert ann["category_id"] == 2 and ann["iscrowd"] == 0 and ann["image_id"] == 1
    assert [c["id"] for c in gt["categories"]] == [1, 2]


def test_perfect_detections_give_ap_one():
    boxes = [[[10, 10, 50, 50], [60, 60, 100, 90]], [[5, 5, 45, 25]]]
    labels = [[0, 1], [1]]
    dets = [_det(b, [0.9] * len(b), l) for b, l in zip(boxes, labels)]
    res = coco_evaluate(_gt(boxes, labels), dets)
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
    assert res["per_class"] == pytest.approx([1.0, 1.0])


def test_shifted_detection_counts_only_up_to_its_iou():
    # gt 20×20, detection shifted by 4 px: IoU = 320 / 480 = 0.667 -> matches IoU .50, .55, .60, .65
    gt = _gt([[[0, 0, 20, 20]]], [[0]])
    res = coco_evaluate(gt, [_det([[4, 0, 24, 20]], [0.8], [0])])
    assert res["AP50"] == pytest.approx(1.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(4 / 10)


def test_missed_object_halves_recall():
    # 2 objects, 1 found: precision 1 up to recall 0.5 -> 51 of the 101 recall points
    gt = _gt([[[0, 0, 20, 20], [50, 50, 80, 80]]], [[0, 0]])
    res = coco_evaluate(gt, [_det([[0, 0, 20, 20]], [0.9], [0])])
    assert res["AP"] == pytest.approx(51 / 101)


def test_false_positive_ranked_first():
    # scores: FP 0.9, TP 0.8, TP 0.7 -> precision (0, 1/2, 2/3) at recall (0, 1/2, 1);
    # interpolated (max to the right) precision is 2/3 at every recall point
    gt = _gt([[[0, 0, 20, 20], [50, 50, 80, 80]]], [[0, 0]])
    det = _det([[100, 100, 120, 120], [0, 0, 20, 20], [50, 50, 80, 80]], [0.9, 0.8, 0.7], [0, 0, 0])
    assert coco_evaluate(gt, [det])["AP"] == pytest.approx(2 / 3)


def test_wrong_class_is_a_miss():
    gt = _gt([[[0, 0, 20, 20]]], [[0]])
    res = coco_evaluate(gt, [_det([[0, 0, 20, 20]], [0.9], [1])])
    assert res["AP"] == pytest.approx(0.0)


def test_small_object_lands_in_small_bucket_only():
    # a 10×10 object (found) and a 110×110 object (missed) under COCO's ranges
    gt = _gt([[[0, 0, 10, 10], [10, 10, 120, 120]]], [[0, 0]])
    res = coco_evaluate(gt, [_det([[0, 0, 10, 10]], [0.9], [0])])
    assert res["AP_small"] == pytest.approx(1.0)
    assert res["AP_large"] == pytest.approx(0.0)
    assert math.isnan(res["AP_medium"])  # no ground truth of that size


def test_custom_area_ranges_move_the_bucket():
    gt = _gt([[[0, 0, 20, 20]]], [[0]])  # area 400: COCO small, our medium below
    det = [_det([[0, 0, 20, 20]], [0.9], [0])]
    coco = coco_evaluate(gt, det)
    ours = coco_evaluate(gt, det, area_ranges={"small": (0, 100), "medium": (100, 900),
                                               "large": (900, float("inf"))})
    assert coco["AP_small"] == pytest.approx(1.0) and math.isnan(coco["AP_medium"])
    assert ours["AP_medium"] == pytest.approx(1.0) and math.isnan(ours["AP_small"])


def test_empty_detections_give_zero_and_print_nothing(capsys):
    gt = _gt([[[0, 0, 20, 20]], [[5, 5, 30, 30]]], [[0], [1]])
    empty = [_det([], [], []), _det([], [], [])]
    res = coco_evaluate(gt, empty)
    assert res["AP"] == 0.0 and res["AP50"] == 0.0 and res["per_class"] == [0.0, 0.0]
    coco_evaluate(gt, [_det([[0, 0, 20, 20]], [0.9], [0]), _det([], [], [])])
    assert capsys.readouterr().out == ""


def test_ground_truth_is_not_modified():
    gt = _gt([[[0, 0, 20, 20]]], [[0]])
    before = repr(gt)
    coco_evaluate(gt, [_det([[0, 0, 20, 20]], [0.9], [0])])
    assert repr(gt) == before


def test_bad_inputs_are_named():
    gt = _gt([[[0, 0, 20, 20]]], [[0]])
    with pytest.raises(ValueError, match="detections for 2 images"):
        coco_evaluate(gt, [_det([], [], [])] * 2)
    with pytest.raises(ValueError, match="area_ranges"):
        coco_evaluate(gt, [_det([], [], [])], area_ranges={"tiny": (0, 10)})
    with pytest.raises(ValueError, match="label 5"):
        coco_evaluate(gt, [_det([[0, 0, 1, 1]], [0.5], [5])])
    with pytest.raises(ValueError, match="outside"):
        ground_truth_to_coco([[[0, 0, 1, 1]]], [[2]], 32, NAMES)

import copy
import math

import pytest
import torch
from torchvision.ops import clip_boxes_to_image, nms

from labkit.models.anchors import AnchorConfig, anchor_lattice, decode_deltas
from labkit.models.tiny_detector import (DETECTOR_MODULES, TinyDetector, _match, _sample, detect, detector_losses,
                                         greedy_rpn_nms, train_detector)

SIZE = 64  # small images keep the tests fast; the detector is size-agnostic
ANCHORS = AnchorConfig(stride=8, scales=(12.0, 24.0, 48.0), ratios=(0.5, 1.0, 2.0))


def rectangles(n=8, size=SIZE, num_classes=2, seed=0):
    """Dark images with 1–3 bright rectangles; the class is the colour channel."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.2
    targets = []
    for i in range(n):
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            w, h = torch.randint(8, size // 2, (2,), generator=g).tolist()
            x = int(torch.randint(0, size - w, (1,), generator=g))
            y = int(torch.randint(0, size - h, (1,), generator=g))
            c = int(torch.randint(0, num_classes, (1,), generator=g))
            images[i, c, y:y + h, x:x + w] = 0.9
            boxes.append([x, y, x + w, y + h])
            labels.append(c)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images, targets


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyDetector(2, ANCHORS, pre_nms_top_n=200, post_nms_top_n=50).eval()


def test_modules_and_output_shapes(model):
    assert all(sum(p.numel() for p in getattr(model, name).parameters()) > 0 for name in DETECTOR_MODULES)
    images, _ = rectangles(2)
    features, objectness, deltas = model(images)
    assert features.shape == (2, 128, SIZE // 8, SIZE // 8)
    assert objectness.shape == (2, SIZE // 8, SIZE // 8, 9) and deltas.shape == (2, SIZE // 8, SIZE // 8, 9, 4)
    logits, box_deltas = model.roi_outputs(features, [torch.tensor([[0.0, 0.0, 20.0, 20.0]])] * 2)
    assert logits.shape == (2, 3) and box_deltas.shape == (2, 2, 4)
    stride16 = TinyDetector(2, AnchorConfig(stride=16, scales=(32.0,), ratios=(1.0,)), class_agnostic=True)
    assert stride16(images)[0].shape[-1] == SIZE // 16
    assert stride16.roi_outputs(stride16(images)[0], [torch.tensor([[0.0, 0.0, 20.0, 20.0]])] * 2)[1].shape == (2, 1, 4)


def test_proposal_cells_stay_aligned_with_boxes(model):
    torch.manual_seed(1)
    for p in model.rpn.parameters():  # larger deltas, so a misaligned cell would decode elsewhere
        p.data.normal_(0, 0.1)
    images, _ = rectangles(2)
    _, objectness, deltas = model(images)
    model.min_size = 12.0  # the small-box filter drops many proposals: cells must follow
    proposals = model.propose(images)
    H, W, A = SIZE // 8, SIZE // 8, 9
    lattice = anchor_lattice(H, W, ANCHORS)
    for i, props in enumerate(proposals):
        assert bool(((props["boxes"][:, 2:] - props["boxes"][:, :2]) >= 12).all())
        assert props["grid_shape"] == (H, W, A)
        cells = props["cells"]
        assert cells.dtype == torch.long and cells.shape == (len(props["boxes"]), 3)
        assert 10 < len(cells) <= 50
        y, x, k = cells.unbind(1)
        expected = clip_boxes_to_image(decode_deltas(lattice[y, x, k], deltas[i, y, x, k]), (SIZE, SIZE))
        assert torch.allclose(props["boxes"], expected, atol=1e-5)
        assert torch.allclose(props["scores"], objectness[i, y, x, k].sigmoid())
        assert bool((props["scores"][:-1] >= props["scores"][1:]).all())
        assert len(set(map(tuple, cells.tolist()))) == len(cells)  # each cell at most once


def test_proposals_are_clipped_and_suppressed(model):
    images, _ = rectangles(2)
    for props in model.propose(images):
        boxes = props["boxes"]
        assert boxes.min() >= 0 and boxes.max() <= SIZE
        assert bool(((boxes[:, 2] - boxes[:, 0]) >= 1).all())
        assert len(nms(boxes, props["scores"], 0.7)) == len(boxes)  # greedy NMS at 0.7 already applied


def test_pluggable_rpn_nms_is_called_and_honoured(model):
    images, _ = rectangles(2)
    calls = []

    def every_third(boxes, scores, cells, grid_shape):
        calls.append((boxes.clone(), scores.clone(), cells.clone(), grid_shape))
        return torch.arange(0, len(boxes), 3).flip(0)  # order must not matter: output is re-sorted

    proposals = model.propose(images, rpn_nms=every_third, post_nms_top_n=1000)
    assert len(calls) == 2
    for (boxes, scores, cells, grid_shape), props in zip(calls, proposals):
        assert grid_shape == (SIZE // 8, SIZE // 8, 9) and len(cells) == len(boxes) == len(scores)
        keep = torch.arange(0, len(boxes), 3)
        assert torch.equal(props["boxes"], boxes[keep]) and torch.equal(props["cells"], cells[keep])
    model.rpn_nms = lambda boxes, scores, cells, grid_shape: torch.tensor([0])
    assert all(len(p["boxes"]) == 1 for p in model.propose(images))
    model.rpn_nms = lambda boxes, scores, cells, grid_shape: torch.tensor([len(boxes)])
    with pytest.raises(ValueError, match="rpn_nms returned indices outside"):
        model.propose(images)


def test_anchor_matching_thresholds():
    gt = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    boxes = torch.tensor([[0.0, 0, 10, 9],  # IoU 0.9 with gt 0 -> positive
                          [0.0, 0, 10, 5],  # 0.5 -> ignored
                          [0.0, 0, 10, 1],  # 0.1 -> negative
                          [50.0, 50, 60, 54],  # 0.4, but gt 1's best -> positive
                          [90.0, 90, 99, 99]])  # no overlap -> negative
    matched, labels = _match(gt, boxes, 0.7, 0.3, best_per_gt=True)
    assert labels.tolist() == [1, -1, 0, 1, 0] and matched[[0, 3]].tolist() == [0, 1]
    assert _match(gt, boxes, 0.7, 0.3, best_per_gt=False)[1].tolist() == [1, -1, 0, -1, 0]
    assert _match(gt[:0], boxes, 0.7, 0.3, best_per_gt=True)[1].tolist() == [0] * 5


def test_sampling_caps_the_positive_fraction():
    positive = torch.zeros(2000, dtype=torch.bool)
    positive[:300] = True
    pos, neg = _sample(positive, ~positive, 256, 0.5, torch.Generator().manual_seed(0))
    assert (len(pos), len(neg)) == (128, 128) and bool(positive[pos].all()) and not positive[neg].any()
    positive[10:] = False
    pos, neg = _sample(positive, ~positive, 128, 0.25, None)
    assert (len(pos), len(neg)) == (10, 118)


def test_greedy_rpn_nms_matches_torchvision():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert greedy_rpn_nms(boxes, scores, None, None).tolist() == [0, 2]


def test_losses_finite_and_decrease_with_training(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    torch.manual_seed(0)
    model = TinyDetector(2, ANCHORS, pre_nms_top_n=300, post_nms_top_n=100)
    images, targets = rectangles(8)
    losses = detector_losses(model, images, targets, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"rpn_objectness", "rpn_box", "roi_cls", "roi_box", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss"].requires_grad
    history = train_detector(model, (images, targets), num_steps=30, lr=0.02, batch_size=8, seed=0)
    assert len(history["loss"]) == 30 and all(math.isfinite(v) for v in history["loss"])
    first, last = sum(history["loss"][:5]) / 5, sum(history["loss"][-5:]) / 5
    assert last < 0.8 * first
    assert sum(history["rpn_objectness"][-5:]) < sum(history["rpn_objectness"][:5])
    assert history["lr"][0] < history["lr"][10]  # warm-up


def test_roi_losses_on_ground_truth_rois(model):
    # No proposals: the RoIs are exactly the gt boxes (IoU 1, all foreground, zero box targets).
    # With constant head outputs the RoI losses have closed forms.
    images, targets = rectangles(2)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "cells": torch.zeros(0, 3, dtype=torch.long)}
    model.proposals_from_rpn = lambda *args, **kwargs: [empty, empty]
    bias = torch.tensor([0.0, 1.0, 3.0])  # background, class 0, class 1
    for layer, value in ((model.heads.cls_score, bias), (model.heads.bbox_pred, torch.ones(8))):
        layer.weight.data.zero_()
        layer.bias.data.copy_(value)
    losses = detector_losses(model, images, targets)
    labels = torch.cat([t["labels"] for t in targets])
    expected_cls = (torch.logsumexp(bias, 0) - bias[labels + 1]).mean()
    assert losses["roi_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-5)
    assert losses["roi_box"].item() == pytest.approx(4 * (1 - 0.5 / 9), rel=1e-5)  # smooth-L1, beta 1/9


def test_losses_handle_images_without_objects():
    torch.manual_seed(0)
    model = TinyDetector(2, ANCHORS)
    images, targets = rectangles(2)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = detector_losses(model, images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()


def test_detect_output_format(model):
    images, _ = rectangles(3)
    model.train()
    out = detect(model, images, score_thresh=0.0, max_detections=7)
    assert model.training  # mode restored
    assert len(out) == 3
    for det in out:
        assert det["boxes"].shape == (len(det["scores"]), 4) and len(det["labels"]) == len(det["scores"])
        assert 0 < len(det["scores"]) <= 7
        assert det["labels"].min() >= 0 and det["labels"].max() < 2
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= SIZE
    assert all(len(d["scores"]) == 0 for d in detect(model, images, score_thresh=1.0))
    calls = []
    single = detect(model, images, score_thresh=0.0,
                    rpn_nms=lambda boxes, scores, cells, grid: calls.append(1) or torch.tensor([0]))
    assert len(calls) == 3 and all(len(d["scores"]) <= 2 for d in single)  # one RoI, two classes


def test_train_accepts_scenes_triplet_and_dict(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    images, targets = rectangles(4)
    boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]
    for data in ((images, boxes, labels), {"images": images, "boxes": boxes, "labels": labels}):
        history = train_detector(TinyDetector(2, ANCHORS), data, num_steps=1, batch_size=2)
        assert math.isfinite(history["loss"][0])


def test_bad_inputs_give_clear_errors(model):
    with pytest.raises(ValueError, match="num_classes"):
        TinyDetector(0)
    with pytest.raises(ValueError, match="stride"):
        TinyDetector(2, AnchorConfig(stride=12))
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        model(torch.zeros(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        model.propose(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="floating point"):
        model(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    images, targets = rectangles(2)
    with pytest.raises(ValueError, match="2 images"):
        detector_losses(model, images, targets[:1])
    targets[0] = {"boxes": targets[0]["boxes"], "labels": torch.full((len(targets[0]["boxes"]),), 2)}
    with pytest.raises(ValueError, match="labels must lie in"):
        detector_losses(model, images, targets)
    with pytest.raises(ValueError, match="max_detections"):
        detect(model, images, max_detections=0)


def test_resuming_a_schedule_continues_its_learning_rate(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    from labkit.models.tiny_detector import lr_factor

    images, targets = rectangles(4)
    full = train_detector(TinyDetector(2, ANCHORS), (images, targets), num_steps=10, batch_size=2, lr=0.01,
                          warmup_steps=4, decay_at=(0.5,), optimizer="adamw")
    seen = []
    resumed = train_detector(TinyDetector(2, ANCHORS), (images, targets), num_steps=10, batch_size=2, lr=0.01,
                             warmup_steps=4, decay_at=(0.5,), optimizer="adamw", start_step=6,
                             setup=lambda optimizer: seen.append(type(optimizer).__name__))
    assert seen == ["AdamW"] and len(resumed["loss"]) == 4
    assert resumed["lr"] == pytest.approx(full["lr"][6:])
    assert resumed["lr"][0] == pytest.approx(0.01 * lr_factor(6, 10, 4, (0.5,)))
    with pytest.raises(ValueError, match="start_step=11"):
        train_detector(TinyDetector(2, ANCHORS), (images, targets), num_steps=10, start_step=11)
    with pytest.raises(ValueError, match="optimizer"):
        train_detector(TinyDetector(2, ANCHORS), (images, targets), num_steps=1, optimizer="adam")


def test_resuming_restores_the_optimizer_state(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    images, targets = rectangles(4)
    model = TinyDetector(2, ANCHORS)
    states = []
    train_detector(model, (images, targets), num_steps=2, batch_size=2, optimizer="sgd",
                   setup=lambda optimizer: states.append(optimizer))
    saved = copy.deepcopy(states[0].state_dict())
    kept = copy.deepcopy(saved)
    loaded = []
    train_detector(model, (images, targets), num_steps=3, batch_size=2, optimizer="sgd", start_step=2,
                   optimizer_state=saved, setup=lambda optimizer: loaded.append(
                       {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()}))
    expected = {k: v["momentum_buffer"] for k, v in kept["state"].items()}
    assert loaded[0].keys() == expected.keys() and all(torch.equal(loaded[0][k], expected[k]) for k in expected)
    # training from a saved state must not change it: iterative pruning rewinds to it again
    assert all(torch.equal(saved["state"][k]["momentum_buffer"], expected[k]) for k in expected)

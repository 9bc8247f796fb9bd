"""Lottery tickets on an unmodified torchvision detector: ``fasterrcnn_mobilenet_v3_large_fpn`` with
random weights at 128 x 128 px. Global magnitude masks with exact counts over its real parameter set
(backbone, FPN, RPN conv and box head; predictors dense), masks that survive an SGD step, and
rewinding to an early checkpoint."""
import pytest
import torch
from torch import nn

from labkit.methods import lottery

torchvision = pytest.importorskip("torchvision")


def detector(seed=0):
    torch.manual_seed(seed)
    # box_batch_size_per_image only shrinks the RoI sample of a training step (512 by default) so that
    # the box head's 12.8M-weight fc6 trains in well under a second; the parameter set is unchanged.
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128, box_batch_size_per_image=32)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]), "labels": torch.tensor([2])}]
    return images, targets


def sgd_step(model, optimizer, seed=0):
    images, targets = batch(seed)
    optimizer.zero_grad()
    sum(model(images, targets).values()).backward()
    optimizer.step()


def expected_prunable(model):
    """P by module type, not by parameter rank: Conv2d and Linear weights outside the predictors."""
    dense = ("roi_heads.box_predictor", "rpn.head.cls_logits", "rpn.head.bbox_pred")
    return {f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not name.startswith(dense)}


def test_detector_prunable_set_is_backbone_fpn_rpn_conv_and_box_head():
    model = detector()
    weights = lottery.detector_prunable_weights(model)
    assert set(weights) == expected_prunable(model)
    assert {name.split(".")[0] for name in weights} == {"backbone", "rpn", "roi_heads"}
    assert {"backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight",
            "roi_heads.box_head.fc7.weight"} <= set(weights)
    assert not any("box_predictor" in name or "cls_logits" in name for name in weights)
    assert all(w.dim() >= 2 for w in weights.values())
    # 18,892,296 of 18,959,754 parameters: what torchvision 0.29 builds for this detector
    assert sum(w.numel() for w in weights.values()) == 18_892_296
    # exclude=() prunes the RPN's 1x1 predictors too; the RoI predictor always stays dense
    more = lottery.detector_prunable_weights(model, exclude=())
    assert set(more) - set(weights) == {"rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight"}
    with pytest.raises(ValueError, match="model is not valid.*'backbone'"):
        lottery.detector_prunable_weights(torchvision.models.resnet18(weights=None))


def test_global_masks_keep_exactly_the_count_over_the_real_parameter_set():
    model = detector()
    weights = lottery.detector_prunable_weights(model)
    masks = lottery.global_magnitude_masks(weights, 0.2)
    total = sum(w.numel() for w in weights.values())
    assert sum(int(m.sum()) for m in masks.values()) == lottery.kept_count(0.2, total) == 3_778_459
    magnitude = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    kept = torch.cat([m.flatten() for m in masks.values()])
    assert magnitude[kept].min() >= magnitude[~kept].max()  # one global threshold
    layer = lottery.layer_sparsity(masks)
    assert max(layer.values()) - min(layer.values()) > 0.3  # global, not layer-wise: layers differ
    # At random init one threshold empties fc6, whose init bound 1/sqrt(12544) = 0.009 lies below it
    # (measured: 100 % of fc6 pruned, 51 % of fc7, 4 % of the smallest backbone layer).
    assert layer["roi_heads.box_head.fc6.weight"] == 1.0
    report = lottery.sparsity(model, masks)
    assert report["num_prunable"] == total and report["num_parameters"] == 18_959_754
    assert report["network"] == pytest.approx((total - 3_778_459) / 18_959_754)


def test_rewind_and_enforced_masks_on_the_detector():
    model = detector().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sgd_step(model, optimizer, seed=0)  # the rewind point holds momentum buffers
    early = lottery.checkpoint(model, optimizer, step=1)
    sgd_step(model, optimizer, seed=1)  # "trained" weights, pruned from here
    weights = lottery.detector_prunable_weights(model)
    masks = lottery.global_magnitude_masks(weights, 0.2)

    assert lottery.rewind(model, optimizer, early, masks) == 1
    handles = lottery.enforce_masks(model, masks, optimizer)
    state = model.state_dict()
    for name, value in early["model"].items():
        if name in masks:  # unpruned weights bit-identical to the rewind point, pruned ones zero
            assert torch.equal(state[name][masks[name]], value[masks[name]]), name
            assert not state[name][~masks[name]].any(), name
        else:  # biases, BN parameters and buffers, the predictor
            assert torch.equal(state[name], value), name
    predictor = model.roi_heads.box_predictor.cls_score.weight
    assert torch.equal(predictor, early["model"]["roi_heads.box_predictor.cls_score.weight"])
    fc7, fc7_mask = model.roi_heads.box_head.fc7.weight, masks["roi_heads.box_head.fc7.weight"]
    momentum = optimizer.state[fc7]["momentum_buffer"]
    fc7_index = next(i for i, p in enumerate(model.parameters()) if p is fc7)  # optimizer state is keyed by position
    assert torch.equal(momentum, early["optimizer"]["state"][fc7_index]["momentum_buffer"])
    # The restored momentum is non-zero at pruned weights: an unmasked step would revive them.
    assert momentum[~fc7_mask].abs().sum() > 0

    before = {name: w.detach().clone() for name, w in weights.items()}
    sgd_step(model, optimizer, seed=2)
    for name, w in weights.items():
        assert not w[~masks[name]].any(), name  # pruned weights stayed exactly zero
    assert not torch.equal(fc7[fc7_mask], before["roi_heads.box_head.fc7.weight"][fc7_mask])  # the step did train
    model.load_state_dict(early["model"])  # a dense load is masked again
    assert all(not w[~masks[name]].any() for name, w in weights.items())
    for handle in handles:
        handle.remove()


def test_top_k_mask_equals_a_stable_sort_under_ties():
    # The O(n) selection behind global_magnitude_masks against the stable sort it replaced.
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randint(-1, 4, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g).double()
        for k in range(len(scores) + 1):
            reference = torch.zeros(len(scores), dtype=torch.bool)
            reference[torch.sort(scores, descending=True, stable=True).indices[:k]] = True
            assert torch.equal(lottery._top_k_mask(scores, k), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_global_masks_on_cuda_equal_those_on_cpu():
    model = detector()
    expected = lottery.global_magnitude_masks(lottery.detector_prunable_weights(model), 0.2)
    masks = lottery.global_magnitude_masks(lottery.detector_prunable_weights(model.cuda()), 0.2)
    assert all(m.device.type == "cuda" and torch.equal(m.cpu(), expected[name]) for name, m in masks.items())

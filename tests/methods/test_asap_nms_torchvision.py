"""ASAP-NMS inside torchvision's RegionProposalNetwork, on an unmodified
``fasterrcnn_mobilenet_v3_large_fpn`` with random weights at 128 x 128 px: three FPN levels (4 x 4,
4 x 4 and 2 x 2 cells of 15 anchors), one LUT per level. The proposals' anchor cells are recovered
exactly, ASAP with every pair compared reproduces torchvision's ``batched_nms``, the real LUT's
agreement is measured, and the patched detector still runs."""
import types

import pytest
import torch
from torch import nn

from labkit import nms
from labkit.methods import asap_nms_rpn as asap_module
from labkit.methods.asap_nms_rpn import RPNAsapNMS, torchvision_level_lut, use_asap_nms

torchvision = pytest.importorskip("torchvision")
from torchvision.ops import boxes as box_ops  # noqa: E402


def detector(seed=0):
    """The detector in eval mode and two images. With random weights the eval-mode BatchNorm
    statistics (mean 0, variance 1) shrink the FPN features to ~1e-8, so every objectness logit is ~0
    and all scores tie at 0.5: keep sets would be decided by tie-breaking alone. Recalibrating the
    statistics on the batch (still random weights) gives O(1) features and 1075 distinct scores of 1080."""
    torch.manual_seed(seed)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128)
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.backbone.train()
    with torch.no_grad():
        model.backbone(model.transform(images)[0].tensors)
    return model.eval(), images


@pytest.fixture(scope="module")
def run():
    """One RPN forward with ASAP (anchor_iou_cutoff 0.2) installed, and what torchvision fed it."""
    model, images = detector()
    asap = use_asap_nms(model.rpn, anchor_iou_cutoff=0.2)
    seen = {}
    hook = model.rpn.anchor_generator.register_forward_hook(lambda module, inputs, out: seen.update(anchors=out))
    select = asap_module.select_rpn_proposals

    def spy(rpn, proposals, objectness, *rest):
        seen.update(proposals=proposals, objectness=objectness)
        return select(rpn, proposals, objectness, *rest)

    image_list, _ = model.transform(images)
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(asap_module, "select_rpn_proposals", spy)
        features = model.backbone(image_list.tensors)
        boxes, losses = model.rpn(image_list, features)
    hook.remove()
    yield types.SimpleNamespace(model=model, images=images, image_list=image_list, features=features, asap=asap,
                                boxes=boxes, losses=losses, **seen)
    asap.remove()


def concatenated(levels):
    """One image's proposals as torchvision's batched_nms sees them: boxes, scores, level ids."""
    return (torch.cat([p.boxes for p in levels]), torch.cat([p.scores for p in levels]),
            torch.cat([torch.full((len(p.scores),), p.level) for p in levels]))


def test_each_proposal_recovers_its_level_and_anchor_cell(run):
    generator = run.model.rpn.anchor_generator
    for image, levels in enumerate(run.asap.last_proposals):
        grids = [(p.grid_shape, p.stride) for p in levels]
        assert grids == [((4, 4), (32, 32)), ((4, 4), (32, 32)), ((2, 2), (64, 64))]
        for p in levels:
            y, x, k = p.cells.unbind(1)
            stride_y, stride_x = p.stride
            shift = torch.stack([x * stride_x, y * stride_y, x * stride_x, y * stride_y], dim=1)
            # the anchor of (y, x, k) is the generator's anchor at the proposal's flat index
            assert torch.equal(generator.cell_anchors[p.level][k] + shift, run.anchors[image][p.index])
            # and that index is the proposal's: its clipped decoded box and its objectness
            assert torch.equal(box_ops.clip_boxes_to_image(run.proposals[image][p.index], (128, 128)), p.boxes)
            logits = run.objectness.reshape(2, -1)[image][p.index]  # (a vectorized sigmoid differs in the last bit)
            torch.testing.assert_close(torch.sigmoid(logits), p.scores, rtol=1e-6, atol=0)
            assert len(set(map(tuple, p.cells.tolist()))) == len(p.cells)  # one proposal per anchor cell
        # every anchor of a level survives the pre-NMS top-1000 here; a few boxes fall to the score filter
        assert 500 <= sum(len(p.scores) for p in levels) <= 540


def test_every_pair_compared_is_torchvisions_batched_nms_exactly(run):
    # anchor_iou_cutoff=0 with radius="full": every proposal of a level is a neighbour of every other,
    # the limit in which ASAP is greedy NMS (module docstring; test_full_radius_limit_equals_greedy_exactly).
    full = RPNAsapNMS(run.model.rpn, anchor_iou_cutoff=0.0, radius="full")
    for levels in run.asap.last_proposals:
        boxes, scores, level = concatenated(levels)
        expected = box_ops.batched_nms(boxes, scores, level, 0.7)
        assert torch.equal(full.nms(levels), expected)  # the same keep set, in the same order
        offsets = [0, *torch.tensor([len(p.scores) for p in levels]).cumsum(0).tolist()]
        greedy = torch.cat([nms.greedy_numba(p.boxes, p.scores, 0.7) + offsets[i] for i, p in enumerate(levels)])
        assert set(greedy.tolist()) == set(expected.tolist())  # labkit's conventions agree here too
        assert 200 < len(expected) < len(scores)  # NMS did suppress


def test_the_real_per_level_lut_agreement(run):
    # Measured on this detector and batch (image 0, image 1): keep-set Jaccard against batched_nms
    # 1.0, 1.0 at cutoffs 0.05 and 0.1; 0.959, 1.0 at 0.2; 0.942, 0.955 at 0.3; 0.884, 0.859 at 0.5
    # (seed 1: 0.989, 0.992 at 0.2). The LUTs are large (399 neighbours per stride-32 shape at 0.2)
    # because every level carries 32-512 px anchors: at 128 px this is an agreement test, not a speed-up.
    jaccards = {}
    for cutoff in (0.05, 0.1, 0.2, 0.3, 0.5):
        lut_nms = RPNAsapNMS(run.model.rpn, anchor_iou_cutoff=cutoff)
        jaccards[cutoff] = []
        for levels in run.asap.last_proposals:
            boxes, scores, level = concatenated(levels)
            expected = box_ops.batched_nms(boxes, scores, level, 0.7)
            jaccards[cutoff].append(nms.keep_jaccard(lut_nms.nms(levels), expected))
    assert jaccards[0.05] == jaccards[0.1] == [1.0, 1.0]
    assert min(jaccards[0.2]) >= 0.95
    means = [sum(j) / 2 for j in jaccards.values()]
    assert means == sorted(means, reverse=True)  # a smaller LUT agrees less
    # What ASAP misses: the boxes it keeps beyond greedy at 0.2 are all clipped by the image border.
    # A clipped 724 x 362 anchor and a clipped 362 x 181 anchor can give the same box while their
    # anchors overlap by less than the cutoff; unclipped proposals here stay within ~0.03 (delta std)
    # of their anchors, where neighbouring anchors cover every overlap above t = 0.7.
    levels = run.asap.last_proposals[0]
    boxes, scores, level = concatenated(levels)
    extra = set(run.asap.nms(levels).tolist()) - set(box_ops.batched_nms(boxes, scores, level, 0.7).tolist())
    assert len(extra) > 0
    anchors = run.anchors[0][torch.cat([p.index for p in levels])]
    clipped = (anchors[:, :2] < 0).any(1) | (anchors[:, 2:] > 128).any(1)
    assert all(clipped[j] for j in extra)


def test_the_patched_rpn_and_detector_run_in_eval_mode(run):
    model, asap = run.model, run.asap
    assert model.rpn.filter_proposals is asap and run.losses == {}
    for boxes, levels in zip(run.boxes, asap.last_proposals):
        assert boxes.dtype == torch.float32 and boxes.shape == (len(asap.nms(levels)), 4)
        assert 200 < len(boxes) <= model.rpn.post_nms_top_n()
        assert (boxes[:, 2:] <= 128).all() and (boxes[:, :2] >= 0).all()
    with torch.no_grad():
        detections = model(run.images)
    assert len(detections) == 2 and all(d["boxes"].shape[1] == 4 for d in detections)
    assert all(len(d["boxes"]) == len(d["scores"]) == len(d["labels"]) for d in detections)
    # With every pair compared the patched RPN returns torchvision's own proposals, bit for bit.
    asap.remove()
    assert "filter_proposals" not in model.rpn.__dict__ and not model.rpn.anchor_generator._forward_hooks
    with torch.no_grad():
        reference, _ = model.rpn(run.image_list, run.features)
        full = use_asap_nms(model.rpn, anchor_iou_cutoff=0.0, radius="full")
        patched, _ = model.rpn(run.image_list, run.features)
    full.remove()
    assert all(torch.equal(a, b) for a, b in zip(patched, reference))
    asap.install()  # leave the fixture as it was


def test_non_square_strides_and_anchor_order_give_the_right_neighbours():
    # The LUT of a (s_y, s_x) = (32, 16) lattice, checked against the anchor IoU computed directly on
    # torchvision's ratio-major anchors (unrounded) at every offset of the window.
    generator = torchvision.models.detection.anchor_utils.AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    lut, to_lut = torchvision_level_lut(generator, 0, (32, 16), anchor_iou_cutoff=0.3)
    sizes, ratios = torch.tensor([32.0, 64.0]).double(), torch.tensor([0.5, 1.0, 2.0]).double()
    widths = (sizes[None, :] / ratios.sqrt()[:, None]).flatten()  # ratio-major, as the generator
    heights = (sizes[None, :] * ratios.sqrt()[:, None]).flatten()
    window = lut.radius_y
    for k in range(6):
        table = set(map(tuple, lut.neighbours(int(to_lut[k])).tolist()))
        for dy in range(-window, window + 1):
            for dx in range(-window, window + 1):
                for k2 in range(6):
                    a = torch.tensor([[-widths[k] / 2, -heights[k] / 2, widths[k] / 2, heights[k] / 2]])
                    cx, cy = dx * 16.0, dy * 32.0
                    b = torch.tensor([[cx - widths[k2] / 2, cy - heights[k2] / 2, cx + widths[k2] / 2,
                                       cy + heights[k2] / 2]])
                    near = float(box_ops.box_iou(a, b)) > 0.3 and (dy, dx, k2) != (0, 0, k)
                    assert ((dy, dx, int(to_lut[k2])) in table) == near, (k, dy, dx, k2)


def test_bad_arguments_name_the_parameter(run):
    with pytest.raises(TypeError, match="rpn must be a torchvision RegionProposalNetwork"):
        use_asap_nms(run.model)
    with pytest.raises(ValueError, match="anchor_iou_cutoff=2"):
        RPNAsapNMS(run.model.rpn, anchor_iou_cutoff=2)
    with pytest.raises(ValueError, match="radius="):
        RPNAsapNMS(run.model.rpn, radius=-1)
    with pytest.raises(ValueError, match="impl"):
        RPNAsapNMS(run.model.rpn, impl="cuda")
    with pytest.raises(ValueError, match="already has a replaced filter_proposals"):
        use_asap_nms(run.model.rpn)
    with pytest.raises(ValueError, match="no grid recorded"):
        RPNAsapNMS(run.model.rpn)(None, None, None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_patched_rpn_on_cuda():
    model, images = detector()
    model = model.cuda()
    asap = use_asap_nms(model.rpn, anchor_iou_cutoff=0.2)
    with torch.no_grad():
        detections = model([image.cuda() for image in images])
    assert all(d["boxes"].device.type == "cuda" for d in detections)
    full = RPNAsapNMS(model.rpn, anchor_iou_cutoff=0.0, radius="full")
    for levels in asap.last_proposals:
        assert all(p.boxes.device.type == "cuda" and p.cells.device.type == "cuda" for p in levels)
        boxes, scores, _ = concatenated(levels)
        level = torch.cat([torch.full((len(p.scores),), p.level, device="cuda") for p in levels])
        keep = full.nms(levels)
        assert keep.device.type == "cuda"
        assert set(keep.tolist()) == set(box_ops.batched_nms(boxes, scores, level, 0.7).tolist())
    asap.remove()

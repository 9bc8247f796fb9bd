import math
import time

import numpy as np
import pytest
import torch

from labkit import nms
from labkit.models.anchors import AnchorConfig
from labkit.nms import (GREEDY_NMS, PHASES, NMSResult, box_iou_matrix, greedy_numba, greedy_python,
                        keep_jaccard, nms_torchvision, phase_profile, stable_descending_order,
                        synthetic_proposals, time_nms)

OURS = {name: fn for name, fn in GREEDY_NMS.items() if name != "torchvision"}  # stable-sort implementations


def _random_case(seed: int, n: int, grid: int = 0):
    """Boxes (n, 4) and scores (n,); ``grid`` > 0 snaps to integers in [0, grid] (ties, duplicates, empties)."""
    gen = torch.Generator().manual_seed(seed)
    if grid:
        a = torch.randint(0, grid + 1, (n, 2, 2), generator=gen).double()
        lo, hi = a.min(dim=1).values, a.max(dim=1).values  # (n, 2) each: zero-area boxes happen
        scores = torch.randint(0, 4, (n,), generator=gen).double()  # many ties
    else:
        lo = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
        hi = lo + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40
        scores = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.cat([lo, hi], dim=1), scores


def _check_all_agree(boxes, scores, t):
    expected = greedy_python(boxes, scores, t, return_count=True)
    for name, fn in OURS.items():
        got = fn(boxes, scores, t, return_count=True)
        assert torch.equal(got.keep, expected.keep), name
        assert got.num_iou == expected.num_iou, name
    return expected


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_implementations_match_the_oracle_on_random_boxes(seed, t):
    _check_all_agree(*_random_case(seed, 80), t)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0])
def test_implementations_match_the_oracle_on_integer_boxes_with_ties(seed, t):
    boxes, scores = _random_case(seed, 60, grid=6)  # ties, identical and zero-area boxes
    assert (boxes[:, 2] == boxes[:, 0]).any() and len(scores.unique()) < len(scores)
    _check_all_agree(boxes, scores, t)


def test_ties_keep_the_lower_index_first():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3)
    for fn in OURS.values():
        assert fn(boxes, torch.ones(3), 0.5).tolist() == [0]
        assert fn(boxes, torch.tensor([1.0, 2.0, 2.0]), 0.5).tolist() == [1]


def test_strict_threshold_and_no_plus_one():
    boxes = torch.tensor([[0.0, 0, 2, 1], [0.0, 0, 1, 1]])  # IoU exactly 1/2 without the +1 convention
    scores = torch.tensor([0.9, 0.8])
    for fn in GREEDY_NMS.values():
        assert fn(boxes, scores, 0.5).tolist() == [0, 1]  # IoU > t is strict
        assert fn(boxes, scores, 0.49).tolist() == [0]


def test_zero_area_and_nested_boxes():
    boxes = torch.tensor([[5.0, 5, 5, 5], [5.0, 5, 5, 5], [0, 0, 10, 10], [2, 2, 8, 8], [4, 4, 6, 6]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    # Two identical points have IoU 0 (0/0): neither suppresses the other. Nested: 36/100 and 4/36.
    expected = _check_all_agree(boxes, scores, 0.3)
    assert expected.keep.tolist() == [0, 1, 2, 4]
    assert _check_all_agree(boxes, scores, 0.0).keep.tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(4))
def test_torchvision_agrees_on_distinct_scores(seed):
    boxes, scores = _random_case(seed, 200)
    scores = torch.randperm(200, generator=torch.Generator().manual_seed(seed)).double()  # distinct
    for t in (0.3, 0.7):
        assert torch.equal(nms_torchvision(boxes, scores, t), greedy_numba(boxes, scores, t))
    assert nms_torchvision(boxes, scores, 0.5, return_count=True).num_iou is None


def test_counts_are_the_greedy_formula():
    # Three disjoint boxes: the first kept box is compared with 2, the second with 1: 3 evaluations.
    boxes = torch.tensor([[0.0, 0, 1, 1], [2.0, 0, 3, 1], [4.0, 0, 5, 1]])
    for fn in OURS.values():
        keep, num_iou = fn(boxes, torch.tensor([0.3, 0.2, 0.1]), 0.5, return_count=True)
        assert keep.tolist() == [0, 1, 2] and num_iou == 3
        keep, num_iou = fn(boxes[[0, 0, 1]], torch.tensor([0.3, 0.2, 0.1]), 0.5, return_count=True)
        assert keep.tolist() == [0, 2] and num_iou == 2  # the duplicate is suppressed, never compared again


@pytest.mark.parametrize("name", sorted(GREEDY_NMS))
def test_top_k_is_a_prefix_of_the_unlimited_run(name):
    boxes, scores = _random_case(3, 150)
    full = GREEDY_NMS[name](boxes, scores, 0.3)
    assert len(full) > 10
    assert torch.equal(GREEDY_NMS[name](boxes, scores, 0.3, top_k=10), full[:10])


@pytest.mark.parametrize("name", sorted(GREEDY_NMS))
def test_empty_input(name):
    keep = GREEDY_NMS[name](torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


@pytest.mark.parametrize("name", sorted(GREEDY_NMS))
@pytest.mark.parametrize("boxes, scores, t, top_k, match", [
    (torch.zeros(3, 5), torch.zeros(3), 0.5, None, "boxes"),
    (torch.zeros(4), torch.zeros(1), 0.5, None, "boxes"),
    (torch.zeros(3, 4), torch.zeros(3, 1), 0.5, None, "scores"),
    (torch.zeros(3, 4), torch.zeros(2), 0.5, None, "scores"),
    (torch.zeros(2, 4), torch.tensor([0.1, math.nan]), 0.5, None, "scores"),
    (torch.tensor([[2.0, 0, 1, 1]]), torch.zeros(1), 0.5, None, "boxes"),
    (torch.tensor([[0.0, 2, 1, 1]]), torch.zeros(1), 0.5, None, "boxes"),
    (torch.tensor([[0.0, 0, math.nan, 1]]), torch.zeros(1), 0.5, None, "boxes"),
    (torch.zeros(1, 4), torch.zeros(1), -0.1, None, "t"),
    (torch.zeros(1, 4), torch.zeros(1), 1.5, None, "t"),
    (torch.zeros(1, 4), torch.zeros(1), math.nan, None, "t"),
    (torch.zeros(1, 4), torch.zeros(1), 0.5, 0, "top_k"),
])
def test_bad_input_names_the_parameter(name, boxes, scores, t, top_k, match):
    with pytest.raises(ValueError, match=match):
        GREEDY_NMS[name](boxes, scores, t, top_k=top_k)


def test_keep_jaccard_and_result_type():
    assert keep_jaccard([1, 2, 3], [2, 3, 4]) == 0.5
    assert keep_jaccard([], []) == 1.0
    result = greedy_numba(torch.tensor([[0.0, 0, 1, 1]]), torch.ones(1), 0.5, return_count=True)
    assert isinstance(result, NMSResult) and result.num_iou == 0


def test_box_iou_matrix_matches_torchvision():
    from torchvision.ops import box_iou

    boxes, _ = _random_case(0, 30)
    assert torch.allclose(box_iou_matrix(boxes, boxes[:7]), box_iou(boxes, boxes[:7]))


def test_synthetic_proposals_are_deterministic_and_carry_their_cells():
    config = AnchorConfig(stride=16, scales=(32.0, 64.0), ratios=(0.5, 1.0, 2.0))
    a = synthetic_proposals(300, image_size=(160, 224), config=config, seed=4, delta_std=0.05)
    b = synthetic_proposals(300, image_size=(160, 224), config=config, seed=4, delta_std=0.05)
    c = synthetic_proposals(300, image_size=(160, 224), config=config, seed=5, delta_std=0.05)
    assert a.grid_shape == (10, 14) and a.boxes.shape == (300, 4) and a.cells.shape == (300, 3)
    assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3])) and not torch.equal(a.boxes, c.boxes)
    assert len(torch.unique(a.cells, dim=0)) == 300
    # Small deltas: each box's centre stays near its anchor's centre, (x + 1/2) s, up to clipping.
    centres = (a.boxes[:, :2] + a.boxes[:, 2:]) / 2
    anchor_centres = (a.cells[:, [1, 0]].double() + 0.5) * 16
    assert ((centres - anchor_centres).abs().median() < 4).item()
    with pytest.raises(ValueError, match="num_proposals"):
        synthetic_proposals(10_000, image_size=160, config=config)


def test_time_nms_reports_every_repeat():
    boxes, scores = _random_case(0, 20)
    timing = time_nms(greedy_numba, boxes, scores, 0.5, repeats=5, warmup=1)
    assert len(timing.times) == 5 and timing.median > 0 and timing.iqr >= 0


def test_time_nms_takes_another_clock():
    boxes, scores = _random_case(0, 20)
    ticks = iter(range(100))
    timing = time_nms(greedy_numba, boxes, scores, 0.5, repeats=3, warmup=0, clock=lambda: next(ticks))
    assert timing.times == [1, 1, 1]
    assert time_nms(greedy_numba, boxes, scores, 0.5, repeats=2, clock=time.thread_time).median >= 0


@pytest.mark.parametrize("scores", [
    np.random.default_rng(0).normal(size=3000),
    np.round(np.random.default_rng(1).random(500) * 8) / 8,  # many ties
    np.array([0.0, -0.0, 1.0, -0.0, 0.0, np.inf, -np.inf, 5e-324, -5e-324, -1.5, 1e300]),
    np.ones(7), np.zeros(0), np.array([2.0]),
])
def test_radix_sort_is_numpys_stable_descending_argsort(scores):
    assert np.array_equal(stable_descending_order(scores), np.argsort(-scores, kind="stable"))


def test_a_suppressed_box_suppresses_nothing():
    # greedy_simd computes IoUs for suppressed boxes too: only kept boxes may suppress.
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [2.0, 0, 12, 10]])  # IoU(0,1) = IoU(1,2) = 9/11
    scores = torch.tensor([0.9, 0.8, 0.7])  # IoU(0, 2) = 8/12: box 2 survives box 0, and box 1 is gone
    for fn in OURS.values():
        assert fn(boxes, scores, 0.7).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(3))
def test_every_stage_of_the_greedy_kernel_visits_the_same_boxes(seed):
    # phase_profile times the kernel cut after each phase, with the suppressions replayed; each cut
    # must keep exactly what the whole kernel keeps, and the gather must find the same candidates.
    p = synthetic_proposals(400, image_size=(160, 192), config=AnchorConfig(16, (32.0, 64.0), (0.5, 1.0, 2.0)),
                            seed=seed)
    b, s, t, top_k = nms.check_nms_inputs(p.boxes, p.scores, 0.6)
    keep, num_iou, suppressor = nms._greedy_kernel(b, s, t, top_k, nms.STAGE_FULL, nms.NO_REPLAY, nms.NO_REPLAY)
    ptr, idx = nms.replay_table(suppressor)
    assert ptr[-1] == len(s) - len(keep) == len(idx)
    for stage in (nms.STAGE_BOOKKEEPING, nms.STAGE_GATHER):
        staged_keep, staged_count, _ = nms._greedy_kernel(b, s, t, top_k, stage, ptr, idx)
        assert np.array_equal(staged_keep, keep)
        assert staged_count == (num_iou if stage == nms.STAGE_GATHER else 0)
    sort_only = nms._greedy_kernel(b, s, t, top_k, nms.STAGE_SORT, ptr, idx)
    assert len(sort_only[0]) == 0 and sort_only[1] == 0


def test_replay_table_groups_by_suppressor():
    ptr, idx = nms.replay_table(np.array([-1, 0, 0, -1, 3, 0, 3]))
    assert ptr.tolist() == [0, 3, 3, 3, 5, 5, 5, 5]
    assert idx.tolist() == [1, 2, 5, 4, 6]


def test_greedy_phase_profile_adds_up_to_the_call():
    p = synthetic_proposals(2000, image_size=640, seed=0)
    phases = phase_profile("greedy", p.boxes, p.scores, 0.7, repeats=5)
    assert set(phases) == {*PHASES, "total"} and all(math.isfinite(v) for v in phases.values())
    # Greedy's O(N K) IoU tests dominate; the sum of the phases is the whole kernel, the total the
    # public call timed apart (input checks on top): close, on any machine's speed.
    assert phases["iou"] > phases["sort"] and phases["iou"] > phases["bookkeeping"]
    assert 0.5 < sum(phases[name] for name in PHASES) / phases["total"] < 1.5
    with pytest.raises(ValueError, match="method"):
        phase_profile("fast", p.boxes, p.scores, 0.7)
    with pytest.raises(ValueError, match="cells"):
        phase_profile("asap", p.boxes, p.scores, 0.7)

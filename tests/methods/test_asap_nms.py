import math
import pickle

import pytest
import torch

from labkit.methods.asap_nms import ASAP_IMPLS, AnchorLUT, asap_nms
from labkit.models.anchors import AnchorConfig
from labkit.nms import PROPOSAL_ANCHORS, greedy_numba, greedy_python, keep_jaccard, synthetic_proposals

SMALL = AnchorConfig(stride=16, scales=(32.0, 64.0), ratios=(0.5, 1.0, 2.0))  # 6 shapes


def _small_proposals(seed, num=250, delta_std=0.1, image_size=(160, 192)):
    return synthetic_proposals(num, image_size=image_size, config=SMALL, seed=seed, delta_std=delta_std)


def test_lut_of_one_square_anchor_by_hand():
    # 32 px squares at stride 16: a 1-cell shift has IoU 512 / 1536 = 1/3, a diagonal one 256 / 1792 = 1/7.
    config = AnchorConfig(stride=16, scales=(32.0,), ratios=(1.0,))
    lut = AnchorLUT(config, anchor_iou_cutoff=0.2)
    assert sorted(map(tuple, lut.neighbours(0).tolist())) == [(-1, 0, 0), (0, -1, 0), (0, 1, 0), (1, 0, 0)]
    assert lut.size == 4
    assert AnchorLUT(config, anchor_iou_cutoff=0.1).size == 8
    assert AnchorLUT(config, anchor_iou_cutoff=0.0, radius=1).size == 8  # cutoff 0: the whole window


def test_lut_is_symmetric_and_shrinks_with_the_cutoff():
    lut = AnchorLUT(PROPOSAL_ANCHORS, anchor_iou_cutoff=0.2)
    table = {k: set(map(tuple, lut.neighbours(k).tolist())) for k in range(lut.num_shapes)}
    for k in range(lut.num_shapes):
        for dy, dx, k2 in table[k]:
            assert (-dy, -dx, k) in table[k2]  # IoU is symmetric
    sizes = [AnchorLUT(PROPOSAL_ANCHORS, c).size for c in (0.1, 0.2, 0.3, 0.4)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    assert lut.build_seconds > 0


def test_lut_pickles_and_full_radius_grows_with_the_grid():
    lut = AnchorLUT(SMALL, anchor_iou_cutoff=0.3)
    copy = pickle.loads(pickle.dumps(lut))
    assert torch.equal(copy.neighbours(2), lut.neighbours(2)) and copy.size == lut.size
    full = AnchorLUT(SMALL, anchor_iou_cutoff=0.0, radius="full")
    assert full.size == math.inf
    assert full.table((3, 4))[1].tolist() == [5 * 7 * 6 - 1] * 6  # every other cell and shape
    assert pickle.loads(pickle.dumps(full)).table((2, 2))[1][0] == 3 * 3 * 6 - 1
    # With a positive cutoff "full" adds nothing: the default window already holds every overlap.
    assert AnchorLUT(SMALL, 0.1, radius="full").size == AnchorLUT(SMALL, 0.1).size


@pytest.mark.parametrize("seed", range(4))
def test_full_radius_limit_equals_greedy_exactly(seed):
    # Large deltas move boxes far from their anchors: only the full neighbourhood is exact.
    props = _small_proposals(seed, num=200, delta_std=0.5, image_size=(128, 160))
    lut = AnchorLUT(SMALL, anchor_iou_cutoff=0.0, radius="full")
    for t in (0.3, 0.7):
        expected = greedy_numba(props.boxes, props.scores, t, return_count=True)
        assert torch.equal(expected.keep, greedy_python(props.boxes, props.scores, t))
        for impl in ASAP_IMPLS:
            got = asap_nms(*props, lut, t, impl=impl, return_count=True)
            assert torch.equal(got.keep, expected.keep), impl
            assert got.num_iou == expected.num_iou, impl  # the same pairs, in another order


def test_a_small_neighbourhood_is_only_approximate():
    # The exactness test above is not vacuous: with a high cutoff and far-moved boxes ASAP misses some.
    props = _small_proposals(0, num=200, delta_std=0.5, image_size=(128, 160))
    approx = asap_nms(*props, AnchorLUT(SMALL, anchor_iou_cutoff=0.5), 0.3)
    assert len(approx) > len(greedy_numba(props.boxes, props.scores, 0.3))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cutoff", [0.1, 0.3])
def test_implementations_agree_with_each_other(seed, cutoff):
    props = _small_proposals(seed)
    lut = AnchorLUT(SMALL, anchor_iou_cutoff=cutoff)
    results = [asap_nms(*props, lut, 0.7, impl=impl, return_count=True) for impl in ASAP_IMPLS]
    for got in results[1:]:
        assert torch.equal(got.keep, results[0].keep) and got.num_iou == results[0].num_iou


def test_e1_tenfold_fewer_iou_evaluations_at_6000():
    props = synthetic_proposals(6000, image_size=640, config=PROPOSAL_ANCHORS, seed=0)
    lut = AnchorLUT(PROPOSAL_ANCHORS, anchor_iou_cutoff=0.2)
    greedy = greedy_numba(props.boxes, props.scores, 0.7, return_count=True)
    asap = asap_nms(*props, lut, 0.7, return_count=True)
    assert asap.num_iou * 10 <= greedy.num_iou  # spec E1
    assert keep_jaccard(asap.keep, greedy.keep) >= 0.99  # spec E2


def test_e5_one_lut_serves_every_resolution():
    lut = AnchorLUT(PROPOSAL_ANCHORS, anchor_iou_cutoff=0.2)
    size, offsets = lut.size, lut.offsets.copy()
    for image_size, num in ((256, 1000), (1024, 2000)):
        props = synthetic_proposals(num, image_size=image_size, config=PROPOSAL_ANCHORS, seed=1)
        assert props.grid_shape == (image_size // 16,) * 2
        keep = asap_nms(*props, lut, 0.7)
        assert keep_jaccard(keep, greedy_numba(props.boxes, props.scores, 0.7)) >= 0.98
        assert lut.size == size and (lut.offsets == offsets).all()


@pytest.mark.parametrize("impl", ASAP_IMPLS)
def test_top_k_keeps_the_first_of_an_unlimited_run(impl):
    props = _small_proposals(2)
    lut = AnchorLUT(SMALL)
    full = asap_nms(*props, lut, 0.7, impl=impl)
    assert len(full) > 30
    assert torch.equal(asap_nms(*props, lut, 0.7, top_k=30, impl=impl), full[:30])


@pytest.mark.parametrize("impl", ASAP_IMPLS)
def test_ties_and_empty_input(impl):
    lut = AnchorLUT(SMALL)
    boxes = torch.tensor([[0.0, 0, 32, 32], [0.0, 0, 32, 32], [1.0, 1, 33, 33]])
    cells = torch.tensor([[1, 1, 1], [1, 2, 1], [2, 1, 1]])
    assert asap_nms(boxes, torch.ones(3), cells, (4, 4), lut, 0.5, impl=impl).tolist() == [0]
    half = torch.tensor([[0.0, 0, 32, 32], [0.0, 0, 32, 16]])  # IoU exactly 1/2: kept at t = 1/2 (strict >)
    assert asap_nms(half, torch.ones(2), cells[:2], (4, 4), lut, 0.5, impl=impl).tolist() == [0, 1]
    assert asap_nms(half, torch.ones(2), cells[:2], (4, 4), lut, 0.49, impl=impl).tolist() == [0]
    keep = asap_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 3, dtype=torch.long), (4, 4), lut, 0.5, impl=impl)
    assert keep.dtype == torch.int64 and keep.shape == (0,)


@pytest.mark.parametrize("impl", ASAP_IMPLS)
@pytest.mark.parametrize("change, match", [
    ({"boxes": torch.tensor([[2.0, 0, 1, 1], [0.0, 0, 1, 1]])}, "boxes"),
    ({"scores": torch.tensor([0.5, math.nan])}, "scores"),
    ({"scores": torch.ones(3)}, "scores"),
    ({"t": 1.2}, "t"),
    ({"top_k": -1}, "top_k"),
    ({"cells": torch.tensor([[0, 0, 0]])}, "cells"),
    ({"cells": torch.tensor([[0.0, 0, 0], [0, 1, 0]])}, "cells"),
    ({"cells": torch.tensor([[0, 0, 0], [0, 4, 0]])}, "cells"),
    ({"cells": torch.tensor([[0, 0, 6], [0, 1, 0]])}, "cells"),
    ({"cells": torch.tensor([[1, 1, 2], [1, 1, 2]])}, "cells"),
    ({"grid_shape": (4, 0)}, "grid_shape"),
    ({"grid_shape": (4, 4, 1)}, "grid_shape"),
    ({"grid_shape": "44"}, "grid_shape"),
    ({"lut": "table"}, "lut"),
    ({"impl": "cuda"}, "impl"),
])
def test_bad_input_names_the_parameter(impl, change, match):
    args = {"boxes": torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 1, 1]]), "scores": torch.ones(2),
            "cells": torch.tensor([[0, 0, 0], [0, 1, 0]]), "grid_shape": (4, 4), "lut": AnchorLUT(SMALL),
            "t": 0.5, "top_k": None, "impl": impl}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        asap_nms(**args)


@pytest.mark.parametrize("kwargs, match", [
    ({"config": (16, 32)}, "config"),
    ({"anchor_iou_cutoff": 1.5}, "anchor_iou_cutoff"),
    ({"anchor_iou_cutoff": -0.1}, "anchor_iou_cutoff"),
    ({"radius": -1}, "radius"),
    ({"radius": "wide"}, "radius"),
])
def test_bad_lut_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnchorLUT(**{"config": SMALL, **kwargs})

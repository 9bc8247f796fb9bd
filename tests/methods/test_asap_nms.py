import math
import pickle

import numpy as np
import pytest
import torch

from labkit import nms
from labkit.methods import asap_nms as asap_module
from labkit.methods.asap_nms import (ASAP_IMPLS, AnchorLUT, asap_nms, setting_sweeps, speed_and_agreement,
                                     staged_asap)
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


def test_flat_table_is_the_padded_offsets_unsigned_and_cached():
    lut = AnchorLUT(SMALL, anchor_iou_cutoff=0.2)
    flat, lengths, shift, ry, rx = lut.flat_table((10, 12))
    assert flat.dtype == np.uint32 and (ry, rx) == (lut.radius_y, lut.radius_x)
    width_padded = 12 + 2 * rx
    for k in range(lut.num_shapes):
        dy, dx, k2 = lut.neighbours(k).numpy().T
        expected = (dy * width_padded + dx) * lut.num_shapes + k2 - k
        assert np.array_equal(flat[k, :lengths[k]].astype(np.int64) - shift, expected)
    assert lut.flat_table((10, 12))[0] is flat  # cached per grid
    assert pickle.loads(pickle.dumps(lut))._flat_tables == {}


def test_index_map_switches_to_int32_when_ranks_outgrow_int16():
    lut = AnchorLUT(SMALL)
    table = lut.flat_table((4, 4))
    assert asap_module._empty_grid(2 ** 15 - 1, 4, 4, table).dtype == np.int16
    assert asap_module._empty_grid(2 ** 15, 4, 4, table).dtype == np.int32
    props = _small_proposals(1)  # both widths give the same answer
    b, s, c, height, width, t, top_k = asap_module._checked_inputs(*props, lut, 0.7, None)
    table = lut.flat_table((height, width))
    runs = [asap_module._asap_kernel(np.full_like(asap_module._empty_grid(len(s), height, width, table), -1, dtype),
                                     b, s, c, height, width, *table, t, top_k, nms.STAGE_FULL, nms.NO_REPLAY,
                                     nms.NO_REPLAY) for dtype in (np.int16, np.int32)]
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


@pytest.mark.parametrize("seed", range(3))
def test_every_stage_of_the_asap_kernel_visits_the_same_proposals(seed):
    props = _small_proposals(seed, num=300)
    lut = AnchorLUT(SMALL, anchor_iou_cutoff=0.1)
    run, call = staged_asap(*props, lut, 0.6)
    keep, num_iou, suppressor = run(nms.STAGE_FULL, nms.NO_REPLAY, nms.NO_REPLAY)
    assert torch.equal(torch.from_numpy(keep), call())
    ptr, idx = nms.replay_table(suppressor)
    assert ptr[-1] == 300 - len(keep)
    for stage in (nms.STAGE_BOOKKEEPING, nms.STAGE_GATHER):
        staged_keep, staged_count, _ = run(stage, ptr, idx)
        assert np.array_equal(staged_keep, keep)
        assert staged_count == (num_iou if stage == nms.STAGE_GATHER else 0)


def test_staged_asap_refuses_shared_cells():
    boxes = torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 1, 1]])
    run, _ = staged_asap(boxes, torch.ones(2), torch.tensor([[1, 1, 2], [1, 1, 2]]), (4, 4), AnchorLUT(SMALL), 0.5)
    with pytest.raises(ValueError, match="cells"):
        run(nms.STAGE_FULL, nms.NO_REPLAY, nms.NO_REPLAY)


def test_asap_phase_profile_adds_up_to_the_call():
    props = synthetic_proposals(2000, image_size=640, config=PROPOSAL_ANCHORS, seed=0)
    phases = nms.phase_profile("asap", props.boxes, props.scores, 0.7, cells=props.cells,
                               grid_shape=props.grid_shape, lut=AnchorLUT(PROPOSAL_ANCHORS), repeats=5)
    assert set(phases) == {*nms.PHASES, "total"} and all(math.isfinite(v) for v in phases.values())
    assert phases["gather"] > 0 and phases["iou"] > 0
    assert 0.5 < sum(phases[name] for name in nms.PHASES) / phases["total"] < 1.5


def test_speed_and_agreement_reports_every_seed_and_baseline():
    row = speed_and_agreement(SMALL, (160, 192), num_proposals=200, seeds=(0, 1), repeats=2,
                              baselines=("numba", "simd"))
    assert row["lut_size"] == AnchorLUT(SMALL, 0.2).size and row["delta_std"] == 0.1
    assert set(row["speedup"]) == set(row["greedy_s"]) == {"numba", "simd"}
    assert all(len(v) == 2 for v in (row["asap_s"], row["jaccard"], row["iou_ratio"], *row["speedup"].values()))
    assert all(0.0 <= j <= 1.0 for j in row["jaccard"]) and all(r >= 1.0 for r in row["iou_ratio"])
    assert row["speedup"]["numba"][0] == pytest.approx(row["greedy_s"]["numba"][0] / row["asap_s"][0])
    with pytest.raises(ValueError, match="baselines"):
        speed_and_agreement(SMALL, (160, 192), num_proposals=200, baselines=("cuda",))


def test_setting_sweeps_vary_anchor_size_and_drift():
    sweeps = setting_sweeps(side_over_stride=(2, 8), delta_stds=(0.05,), num_proposals=300, seeds=(0,),
                            repeats=1, baselines=("numba",))
    sides = sweeps["anchor_side"]
    assert [row["side_over_stride"] for row in sides] == [2.0, 8.0]
    assert sides[0]["lut_size"] < sides[1]["lut_size"]  # larger anchors, larger neighbourhoods
    assert [row["delta_std"] for row in sweeps["drift"]] == [0.05]

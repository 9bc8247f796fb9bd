"""labkit.metrics.localization: the box post-processing on hand-made heatmaps, hits at each
threshold, the pointing game and MaxBoxAcc."""
import numpy as np
import pytest
import torch

from labkit.metrics import localization as loc


def test_box_from_heatmap_keeps_the_largest_component():
    heat = np.zeros((10, 10))
    heat[1:3, 1:3] = 1.0  # a small blob
    heat[5:9, 4:8] = 0.8  # the largest one
    assert loc.box_from_heatmap(heat, 0.5) == (4, 5, 8, 9)
    assert loc.box_from_heatmap(heat, 0.9) == (1, 1, 3, 3)
    assert loc.box_from_heatmap(heat, 1.0) == (1, 1, 3, 3)
    assert loc.box_from_heatmap(np.zeros((4, 4)), 0.5) is None
    with pytest.raises(ValueError, match="tau=1.5"):
        loc.box_from_heatmap(heat, 1.5)


def _square_heat():
    heat = torch.zeros(1, 20, 20)
    heat[0, 5:15, 5:15] = 0.5  # a wide plateau
    heat[0, 8:12, 8:12] = 1.0  # a tight core
    return heat


def test_hits_depend_on_the_threshold_and_on_iou():
    heat = _square_heat()
    tight, wide = [[8, 8, 12, 12]], [[5, 5, 15, 15]]
    hits_tight = loc.localization_hits(heat, [tight], taus=(0.3, 0.8))
    hits_wide = loc.localization_hits(heat, [wide], taus=(0.3, 0.8))
    assert hits_tight.tolist() == [[False, True]] and hits_wide.tolist() == [[True, False]]
    # a box of IoU 0.64 (8×8 inside 10×10) passes at 0.5, not at 0.7
    near = [[6, 6, 14, 14]]
    assert loc.localization_hits(heat, [near], taus=(0.3,), iou=0.5).tolist() == [[True]]
    assert loc.localization_hits(heat, [near], taus=(0.3,), iou=0.7).tolist() == [[False]]
    # any of several ground-truth boxes counts
    assert loc.localization_hits(heat, [[[0, 0, 2, 2], *tight]], taus=(0.8,)).tolist() == [[True]]


def test_pointing_and_max_box_accuracy():
    heat = _square_heat()
    assert loc.pointing_hits(heat, [[[8, 8, 12, 12]]]).tolist() == [True]
    assert loc.pointing_hits(heat, [[[0, 0, 8, 8]]]).tolist() == [False]  # x1 = 8 excludes column 8
    hits = np.array([[True, False, True], [False, False, True]])
    assert loc.max_box_accuracy(hits, taus=(0.1, 0.2, 0.3)) == (1.0, 0.3)


def test_normalise_maps_upsamples_and_spans_zero_to_one():
    maps = torch.tensor([[[0.0, 2.0], [4.0, 6.0]], [[1.0, 1.0], [1.0, 1.0]]])
    out = loc.normalise_maps(maps, (8, 8))
    assert out.shape == (2, 8, 8)
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == pytest.approx(1.0)
    assert float(out[1].abs().max()) == 0.0  # a flat map carries no location


def test_bad_inputs_name_the_parameter():
    heat = _square_heat()
    with pytest.raises(ValueError, match="boxes has 2 entries for 1 heatmaps"):
        loc.localization_hits(heat, [[[0, 0, 1, 1]], [[0, 0, 1, 1]]])
    with pytest.raises(ValueError, match="taus entry=1.2"):
        loc.localization_hits(heat, [[[0, 0, 1, 1]]], taus=(1.2,))
    with pytest.raises(ValueError, match=r"maps must be \(b, h, w\)"):
        loc.normalise_maps(torch.zeros(4, 4), (8, 8))

import math

import pytest
import torch

from labkit.models.anchors import AnchorConfig, anchor_lattice, anchor_shapes, decode_deltas, encode_boxes


def test_shapes_keep_area_and_ratio():
    shapes = anchor_shapes((32.0, 64.0), (0.5, 1.0, 2.0))
    assert shapes.shape == (6, 2)
    assert torch.allclose(shapes[:, 0] * shapes[:, 1], torch.tensor([32.0 ** 2] * 3 + [64.0 ** 2] * 3))
    assert torch.allclose(shapes[:3, 1] / shapes[:3, 0], torch.tensor([0.5, 1.0, 2.0]))


def test_lattice_centres_and_translation_invariance():
    config = AnchorConfig(stride=16, scales=(32.0,), ratios=(1.0,))
    lattice = anchor_lattice(3, 4, config)
    assert lattice.shape == (3, 4, 1, 4)
    assert torch.equal(lattice[0, 0, 0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))
    assert torch.equal(lattice[2, 3, 0] - lattice[0, 0, 0], torch.tensor([48.0, 32.0, 48.0, 32.0]))


def test_encode_decode_roundtrip():
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 50.0, 100.0]])
    boxes = torch.tensor([[2.0, 3.0, 30.0, 40.0], [0.0, 0.0, 64.0, 64.0]])
    assert torch.allclose(decode_deltas(anchors, encode_boxes(anchors, boxes)), boxes, atol=1e-4)
    huge = decode_deltas(anchors[:1], torch.tensor([[0.0, 0.0, 100.0, 100.0]]))
    assert huge[0, 2] - huge[0, 0] <= 32 * math.exp(math.log(1000 / 16)) + 1e-3


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="stride"):
        AnchorConfig(stride=0)
    with pytest.raises(ValueError, match="ratios"):
        AnchorConfig(ratios=(1.0, -2.0))

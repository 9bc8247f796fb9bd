"""Small CNN backbones: output shapes, ceil widths, parameter count, init, and bad input."""
import math

import pytest
import torch
from torch import nn

from labkit.models import BACKBONES, PlainCNN, ResNetSmall, init_weights, make_backbone, scaled_width


def conv_out_channels(model):
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("multiplier", [1.0, 0.5, 0.25, 0.3, 0.75])
def test_output_shape_for_every_backbone_and_width(name, multiplier):
    torch.manual_seed(0)
    model = make_backbone(name, num_classes=7, in_channels=1, width_multiplier=multiplier)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 7)
    assert model.classifier.out_features == 7
    assert model.classifier.in_features == math.ceil(multiplier * 128 - 1e-9)


@pytest.mark.parametrize("cls", [ResNetSmall, PlainCNN])
def test_widths_are_ceil_of_multiplier_times_width(cls):
    model = cls(10, in_channels=3, widths=(10, 20, 30), width_multiplier=0.3)
    assert model.widths == (3, 6, 9)  # 0.3 * 10 is 3.0000000000000004 in floats: still 3
    model = cls(10, in_channels=3, widths=(32, 64, 128), width_multiplier=0.4)
    assert model.widths == (13, 26, 52)  # ceil(12.8), ceil(25.6), ceil(51.2)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 3  # image channels never scale
    assert set(conv_out_channels(model)) == {13, 26, 52}


def test_scaled_width_is_ceil():
    assert [scaled_width(w, 0.5) for w in (1, 2, 3, 31, 32, 33)] == [1, 1, 2, 16, 16, 17]
    assert scaled_width(10, 0.3) == 3 and scaled_width(10, 0.31) == 4
    with pytest.raises(ValueError, match="width_multiplier"):
        scaled_width(10, 0.0)


def test_resnet_structure_and_parameter_count():
    model = ResNetSmall(10)
    names = dict(model.named_modules())
    assert {"stem", "stem.0", "stages.0", "stages.2", "stages.1.downsample.0", "classifier"} <= set(names)
    assert names["stages.0"].downsample is None  # same width, stride 1: identity shortcut
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    count = sum(p.numel() for p in model.parameters())
    assert 250_000 < count < 350_000


def test_resnet_downsamples_twice():
    model = ResNetSmall(10)
    out = model.stages(model.stem(torch.randn(1, 1, 16, 16)))
    assert out.shape == (1, 128, 4, 4)


def test_init_weights_is_kaiming_normal_fan_in_and_unit_batchnorm():
    torch.manual_seed(0)
    model = init_weights(ResNetSmall(10))
    weight = model.stages[2].conv2.weight  # (128, 128, 3, 3): fan_in 1152
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.03)
    bn = model.stages[2].bn2
    assert torch.equal(bn.weight, torch.ones(128)) and torch.equal(bn.bias, torch.zeros(128))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="backbone='vgg'.*'resnet'"):
        make_backbone("vgg", num_classes=10)
    with pytest.raises(ValueError, match="widths"):
        ResNetSmall(10, widths=(32, 64))
    with pytest.raises(ValueError, match="num_classes"):
        PlainCNN(0)

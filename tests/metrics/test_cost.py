"""Cost counting: hand-computed MACs and parameters, mode restoration, and slim scaling."""
import pytest
import torch
from torch import nn

from labkit.metrics import count_cost
from labkit.models import PlainCNN, ResNetSmall


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.pool(self.bn(self.conv(x))).flatten(1))


def test_hand_computed_macs_and_params():
    cost = count_cost(Tiny(), (1, 1, 8, 8))
    conv_macs = 8 * 8 * 4 * 1 * 9
    assert cost["conv_macs"] == conv_macs
    assert cost["macs"] == conv_macs + 4 * 10
    assert cost["conv_params"] == 4 * 9 + 4
    assert cost["params"] == (4 * 9 + 4) + (4 + 4) + (4 * 10 + 10)  # BN counted in params
    assert [(layer["name"], layer["kind"], layer["params"], layer["macs"]) for layer in cost["per_layer"]] == [
        ("conv", "conv", 40, conv_macs), ("fc", "linear", 50, 40)]


def test_strided_grouped_conv_and_batch_size():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=False))
    cost = count_cost(model, (5, 4, 8, 8))  # per sample, whatever the batch
    assert cost["macs"] == (4 * 4 * 8) * (4 // 2) * 9


def test_mode_is_restored():
    model = Tiny()
    model.train()
    model.bn.eval()
    count_cost(model, (1, 1, 8, 8))
    assert model.training and model.conv.training and not model.bn.training


def test_running_statistics_are_not_changed():
    model = Tiny().train()
    before = model.bn.running_mean.clone()
    count_cost(model, (1, 1, 8, 8))
    assert torch.equal(model.bn.running_mean, before)


@pytest.mark.parametrize("cls", [ResNetSmall, PlainCNN])
def test_slim_conv_macs_are_about_split_rate_squared(cls):
    dense = count_cost(cls(10), (1, 1, 16, 16))
    slim = count_cost(cls(10, width_multiplier=0.5), (1, 1, 16, 16))
    ratio = slim["conv_macs"] / dense["conv_macs"]
    assert abs(ratio - 0.25) < 0.05
    assert abs(slim["conv_params"] / dense["conv_params"] - 0.25) < 0.05

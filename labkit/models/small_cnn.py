"""Small image backbones shared by chapters: a mini-ResNet and a plain VGG-style CNN.

Both take a ``width_multiplier`` so that knowledge evolution's slim network (and a lottery
ticket's thinner variant) is the same constructor: every width ``w`` becomes
``ceil(width_multiplier * w)`` (``scaled_width``). The input channels of the first conv and the
number of classes never change. Inputs are ``(b, in_channels, h, w)`` images, outputs
``(b, num_classes)`` logits; global average pooling makes any ``h, w >= 4`` work.

Weights start as the official knowledge-evolution code starts generation 1 (``init_weights``):
``kaiming_normal_`` (fan_in, relu) for conv and linear weights, BatchNorm weight 1 and bias 0;
the classifier bias keeps PyTorch's default uniform init, as there.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from labkit.config import check_choice, check_positive_float, check_positive_int

__all__ = ["scaled_width", "init_weights", "BasicBlock", "ResNetSmall", "PlainCNN", "BACKBONES",
           "make_backbone"]


def scaled_width(width: int, multiplier: float) -> int:
    """``ceil(multiplier * width)``, at least 1.

    The product is rounded to 9 decimals before the ceiling so that float noise does not add a
    channel: ``0.3 * 10`` is ``3.0000000000000004`` in binary floating point and must give 3.
    """
    width = check_positive_int("width", width)
    multiplier = check_positive_float("width_multiplier", multiplier)
    return max(1, math.ceil(round(multiplier * width, 9)))


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Generation-1 init, in place: kaiming_normal_ (fan_in, relu) for every Conv2d and Linear
    weight, weight 1 / bias 0 for every BatchNorm. Conv and linear biases are left as they are
    (PyTorch's default uniform init, as the official code leaves them). Returns ``model``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu",
                                        generator=generator)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) + BN + ReLU: ``(b, in, h, w)`` → ``(b, out, h/stride, w/stride)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _set_sizes(model: nn.Module, num_classes: int, in_channels: int, widths: Sequence[int],
               width_multiplier: float) -> tuple[int, int, int]:
    """Validate and store the sizes both backbones share; return the scaled widths."""
    model.num_classes = check_positive_int("num_classes", num_classes)
    model.in_channels = check_positive_int("in_channels", in_channels)
    model.width_multiplier = check_positive_float("width_multiplier", width_multiplier)
    model.widths = tuple(scaled_width(w, width_multiplier) for w in _check_widths(widths))
    return model.widths


def _check_widths(widths: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(widths, numbers.Integral) or len(widths) != 3:
        raise ValueError(f"widths={widths!r} is not valid; pass three stage widths like (32, 64, 128)")
    return tuple(check_positive_int("widths", width) for width in widths)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: ``(b, in, h, w)`` → ``(b, out, h/stride, w/stride)``.

    The shortcut is a 1x1 conv + BN (``downsample``) when the stride or the width changes, and the
    identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNetSmall(nn.Module):
    """Mini-ResNet: 3x3 stem, three one-block stages (stride 1, 2, 2), global average pool, Linear.

    Modules: ``stem`` (conv, BN, ReLU), ``stages.0``–``stages.2`` (``BasicBlock``), ``pool``,
    ``classifier``. About 0.3M parameters at width 1 with 10 classes.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128),
                 width_multiplier: float = 1.0):
        super().__init__()
        w0, w1, w2 = _set_sizes(self, num_classes, in_channels, widths, width_multiplier)
        self.stem = _conv_bn_relu(self.in_channels, w0)
        self.stages = nn.Sequential(BasicBlock(w0, w0, 1), BasicBlock(w0, w1, 2), BasicBlock(w1, w2, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w2, self.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)  # (b, widths[2])
        return self.classifier(features)


class PlainCNN(nn.Module):
    """VGG-style net: three conv-BN-ReLU blocks (max-pool 2 after the first two), GAP, Linear.

    Modules: ``blocks.0``–``blocks.2`` (conv, BN, ReLU[, max-pool]), ``pool``, ``classifier``.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128),
                 width_multiplier: float = 1.0):
        super().__init__()
        w0, w1, w2 = _set_sizes(self, num_classes, in_channels, widths, width_multiplier)
        self.blocks = nn.Sequential(
            nn.Sequential(*_conv_bn_relu(self.in_channels, w0), nn.MaxPool2d(2)),
            nn.Sequential(*_conv_bn_relu(w0, w1), nn.MaxPool2d(2)),
            _conv_bn_relu(w1, w2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w2, self.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.blocks(x)).flatten(1)  # (b, widths[2])
        return self.classifier(features)


BACKBONES = {"resnet": ResNetSmall, "plain": PlainCNN}


def make_backbone(name: str, **kwargs) -> nn.Module:
    """Build the backbone ``name`` (a key of ``BACKBONES``) with the constructor's keyword args."""
    check_choice("backbone", name, BACKBONES)
    return BACKBONES[name](**kwargs)

r"""DCGAN-style image GANs at 16² and 32², shared by the GAN chapters (01, 04).

**Generator** ``ImageGenerator``: ``z (n, latent_dim)`` → Linear → ``(n, 4·width, 4, 4)`` → BN →
ReLU → upsampling blocks (nearest ×2, 3×3 conv, BN, ReLU; the width halves in each block) → 3×3
conv to ``channels`` → ``tanh(·)·0.5 + 0.5``, so images lie in [0, 1]. Widths by resolution, for
``width=w``: ``4w`` at 4², ``2w`` at 8², ``w`` at 16², ``w/2`` at 32².

**Discriminator** ``ImageDiscriminator`` mirrors it: ``trunk`` (a 3×3 conv at full resolution,
then 4×4 stride-2 convs doubling the width, LeakyReLU 0.2 after each; no BatchNorm, no spectral
norm) down to ``(n, 2w, 8, 8)``; an optional attention block at 8²; ``head`` (a 4×4 stride-2
conv to ``(n, 4w, 4, 4)``, LeakyReLU, flatten to ``16·4w`` features, Linear → 1 logit). A
reference-attention wrapper can compute ``head(attn(trunk(primary), trunk(reference)))``.

**Attention hooks.** ``attention`` is a factory ``channels -> nn.Module`` (e.g. a SAGAN block from
a method module) mapping ``(n, C, h, w)`` to the same shape. In G it acts on the output of
``blocks[attention_index]``, at ``image_size / 2`` (8² for 16², 16² for 32²); in D on the trunk's
8² output. The factory's module keeps its own init (SAGAN starts its gate γ at 0).

**Init** (as DCGAN, Radford et al. 2016): every Conv2d and Linear weight ~ N(0, 0.02) with zero
bias; BatchNorm weight ~ N(1, 0.02), bias 0. Draws use the global torch RNG, so
``torch.manual_seed`` fixes them.

G has BatchNorm: sample in ``eval()`` mode for outputs that do not depend on the batch.

Parameter counts (``width=32``, latent 64, no attention; ``tests/models/test_toy_gan.py`` pins
them): G 226,017 (16², 1 channel) to 230,803 (32², 3 channels), 59 % of it the stem Linear;
D 166,401 (16², 1 channel) to 174,753 (32², 3 channels), 79 % of it the head's 4×4 conv.
"""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import nn

from labkit.config import check_choice, check_positive_int

__all__ = ["IMAGE_SIZES", "IMAGE_CHANNELS", "ImageGenerator", "ImageDiscriminator", "DiscriminatorHead",
           "dcgan_init"]

IMAGE_SIZES = (16, 32)
IMAGE_CHANNELS = (1, 3)
#: spatial side of D's trunk output, where D's attention acts
TRUNK_RESOLUTION = 8

AttentionFactory = Callable[[int], nn.Module]


def dcgan_init(model: nn.Module) -> nn.Module:
    """DCGAN init, in place: conv/linear weights N(0, 0.02), biases 0; BN weights N(1, 0.02). Returns ``model``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
    return model


def _check_sizes(channels: object, image_size: object, width: object) -> tuple[int, int, int]:
    check_choice("channels", channels, IMAGE_CHANNELS)
    check_choice("image_size", image_size, IMAGE_SIZES)
    if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width < 2 or width % 2:
        raise ValueError(f"width={width!r} is not valid; it must be an even int >= 2 "
                         "(the 32² generator block has width/2 channels)")
    return int(channels), int(image_size), int(width)


def _make_attention(attention: AttentionFactory | None, channels: int) -> nn.Module | None:
    if attention is None:
        return None
    if not callable(attention):
        raise ValueError(f"attention={attention!r} is not valid; pass None or a factory channels -> nn.Module")
    module = attention(channels)
    if not isinstance(module, nn.Module):
        raise ValueError(f"the attention factory returned {type(module).__name__}; it must return an nn.Module")
    return module


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest ×2, 3×3 conv, BN, ReLU: ``(n, in, h, w)`` → ``(n, out, 2h, 2w)``."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class ImageGenerator(nn.Module):
    """``z (n, latent_dim)`` → images ``(n, channels, image_size, image_size)`` in [0, 1]."""

    def __init__(self, latent_dim: int = 64, channels: int = 1, image_size: int = 16, width: int = 32,
                 attention: AttentionFactory | None = None):
        super().__init__()
        self.channels, self.image_size, self.width = _check_sizes(channels, image_size, width)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        base = 4 * self.width
        self.stem = nn.Linear(self.latent_dim, base * 4 * 4)
        self.stem_norm = nn.Sequential(nn.BatchNorm2d(base), nn.ReLU())
        num_blocks = {16: 2, 32: 3}[self.image_size]  # 4 → 8 → 16 (→ 32)
        widths = [base // 2**i for i in range(num_blocks + 1)]
        self.blocks = nn.ModuleList(_up_block(w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.to_image = nn.Conv2d(widths[-1], self.channels, 3, padding=1)
        dcgan_init(self)  # before the attention module, which keeps its own init
        #: attention acts on the output of ``blocks[attention_index]``, at image_size / 2
        self.attention_index = num_blocks - 2
        self.attention_channels = widths[self.attention_index + 1]
        self.attention_resolution = self.image_size // 2
        self.attention = _make_attention(attention, self.attention_channels)

    def _check_z(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (n, {self.latent_dim}); got {shape}")

    def features_before_attention(self, z: torch.Tensor) -> torch.Tensor:
        """The map the attention sees: ``(n, attention_channels, image_size/2, image_size/2)``."""
        self._check_z(z)
        h = self.stem(z).view(len(z), 4 * self.width, 4, 4)
        h = self.stem_norm(h)
        for block in self.blocks[: self.attention_index + 1]:
            h = block(h)
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.features_before_attention(z)
        if self.attention is not None:
            h = self.attention(h)
        for block in self.blocks[self.attention_index + 1:]:
            h = block(h)
        return torch.tanh(self.to_image(h)) * 0.5 + 0.5


class DiscriminatorHead(nn.Module):
    """8² trunk features ``(n, 2w, 8, 8)`` → logits ``(n,)``; ``features`` gives ``(n, 64w)``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 2 * in_channels, 4, stride=2, padding=1),  # 8² → 4²
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.num_features = 2 * in_channels * 4 * 4
        self.linear = nn.Linear(self.num_features, 1)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.body(h)).squeeze(1)


class ImageDiscriminator(nn.Module):
    """Images ``(n, channels, image_size, image_size)`` → real/fake logits ``(n,)``."""

    def __init__(self, channels: int = 1, image_size: int = 16, width: int = 32,
                 attention: AttentionFactory | None = None):
        super().__init__()
        self.channels, self.image_size, self.width = _check_sizes(channels, image_size, width)
        # mirror G's widths: w/2 at 32², w at 16², 2w at 8²
        first = self.width if self.image_size == 16 else self.width // 2
        layers: list[nn.Module] = [nn.Conv2d(self.channels, first, 3, padding=1), nn.LeakyReLU(0.2)]
        width, resolution = first, self.image_size
        while resolution > TRUNK_RESOLUTION:
            layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width, resolution = 2 * width, resolution // 2
        self.trunk = nn.Sequential(*layers)
        self.trunk_channels = width
        self.head = DiscriminatorHead(width)
        dcgan_init(self)
        self.attention = _make_attention(attention, self.trunk_channels)

    def _check_x(self, x: torch.Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (n, {', '.join(map(str, expected))}); got {shape}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output after the optional attention: ``(n, trunk_channels, 8, 8)``."""
        self._check_x(x)
        h = self.trunk(x)
        return h if self.attention is None else self.attention(h)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the final Linear: ``(n, head.num_features)`` (= 64·width)."""
        return self.head.features(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

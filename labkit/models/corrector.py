"""A small JPEG artifact corrector: a residual CNN FiLM-conditioned on the quantization table.

A light stand-in for QGAC (Ehrlich et al., ECCV 2020), whose networks are guided by the JPEG
quantization table. Here a head conv, ``num_blocks`` residual blocks (two 3x3 convs with a ReLU
between) and a tail conv predict a residual that is added to the decoded image:
``corrected = clamp(images + residual, 0, 1)``. With ``conditioned=True`` a small MLP maps the
table (``log`` of the 64 luma + 64 chroma quantization steps, ``table_dim`` entries) to a
per-channel scale and shift (FiLM, Perez et al. 2018) for the first conv of every block:
``h = (1 + gamma) * conv1(x) + beta``. ``conditioned=False`` is the ablation that ignores the
table and must guess the quality from the pixels alone.

The tail conv starts at zero, so an untrained corrector is exactly the identity ("no
correction") and training can only move away from doing nothing. About 68k parameters at the
defaults (57k unconditioned). Any ``H, W`` works: every conv is 3x3 with padding 1.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from labkit.config import check_positive_int

__all__ = ["Corrector", "TABLE_SCALE"]

# log of the largest 8-bit quantization step: log-tables divided by it lie in [0, 1]
TABLE_SCALE = math.log(255.0)


class _FiLMBlock(nn.Module):
    """``x + conv2(relu((1 + gamma) * conv1(x) + beta))``: ``(n, c, h, w)`` → ``(n, c, h, w)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, gamma: torch.Tensor | None = None,
                beta: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(x)
        if gamma is not None:
            h = h * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]  # gamma, beta: (n, c)
        return x + self.conv2(self.relu(h))


class Corrector(nn.Module):
    """``forward(images (n, 3, H, W) in [0, 1], tables (n, table_dim) or None)`` → ``(n, 3, H, W)``.

    ``tables`` hold natural-log quantization steps (``log Q``, each step in 1..255); they are
    required when ``conditioned`` and ignored otherwise. Modules: ``head``, ``blocks``, ``tail``
    and, when conditioned, ``film`` (Linear, ReLU, Linear → ``2 * channels`` per block).
    """

    def __init__(self, channels: int = 32, num_blocks: int = 3, table_dim: int = 128,
                 conditioned: bool = True):
        super().__init__()
        if not isinstance(conditioned, bool):
            raise ValueError(f"conditioned={conditioned!r} is not valid; pass True or False")
        self.channels = check_positive_int("channels", channels)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.table_dim = check_positive_int("table_dim", table_dim)
        self.conditioned = conditioned
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_FiLMBlock(channels) for _ in range(num_blocks))
        self.relu = nn.ReLU()
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        # zero tail: the residual is exactly 0 at init, so the corrector starts as the identity
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.film: nn.Sequential | None = None
        if conditioned:
            self.film = nn.Sequential(nn.Linear(table_dim, channels), nn.ReLU(),
                                      nn.Linear(channels, 2 * channels * num_blocks))

    def _check_inputs(self, images: torch.Tensor, tables: torch.Tensor | None) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
                or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            dtype = images.dtype if isinstance(images, torch.Tensor) else None
            raise ValueError(f"images must be a float tensor (n, 3, H, W); got {shape} "
                             f"with dtype {dtype}")
        if not self.conditioned:
            return
        expected = (images.shape[0], self.table_dim)
        if tables is None:
            raise ValueError(f"tables is None, but this Corrector is conditioned; pass log "
                             f"quantization tables {expected} or build it with conditioned=False")
        if not isinstance(tables, torch.Tensor) or tuple(tables.shape) != expected \
                or not tables.is_floating_point():
            shape = tuple(tables.shape) if isinstance(tables, torch.Tensor) else type(tables).__name__
            raise ValueError(f"tables must be a float tensor {expected} (one log quantization "
                             f"table of table_dim={self.table_dim} entries per image); got {shape}")

    def forward(self, images: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(images, tables)
        gammas = betas = [None] * self.num_blocks
        if self.conditioned:
            film = self.film(tables / TABLE_SCALE - 0.5)  # (n, 2 * c * num_blocks), input in [-0.5, 0.5]
            film = film.view(images.shape[0], self.num_blocks, 2, self.channels)
            gammas, betas = film[:, :, 0].unbind(1), film[:, :, 1].unbind(1)  # each (n, c)
        x = self.relu(self.head(images - 0.5))  # centred input
        for block, gamma, beta in zip(self.blocks, gammas, betas):
            x = block(x, gamma, beta)
        residual = self.tail(self.relu(x))
        return (images + residual).clamp(0.0, 1.0)

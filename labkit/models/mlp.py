"""Multi-layer perceptrons: the digits embedding network and the ring-GAN generator/discriminator."""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from labkit.config import check_choice

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _check_width(name: str, value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; it must be an int >= 1")
    return int(value)


class MLP(nn.Module):
    """Linear layers with ``activation`` between them and none after the last.

    ``(b, in_features)`` → ``(b, out_features)``; with ``normalize_output`` each output row is
    L2-normalized, as the embedding networks of metric learning are.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (128, 128),
                 out_features: int | None = None, activation: str = "relu",
                 normalize_output: bool = False):
        super().__init__()
        # out_features follows hidden to read in layer order; it is still required
        if out_features is None:
            raise ValueError("out_features is required; pass out_features=<int >= 1>")
        self.in_features = _check_width("in_features", in_features)
        self.out_features = _check_width("out_features", out_features)
        if isinstance(hidden, numbers.Integral):
            raise ValueError(f"hidden={hidden!r} is not valid; pass a sequence of widths like (128, 128)")
        self.hidden = tuple(_check_width("hidden", width) for width in hidden)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.normalize_output = bool(normalize_output)

        widths = (self.in_features, *self.hidden, self.out_features)
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            if index > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(width_in, width_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return F.normalize(out, dim=1) if self.normalize_output else out


def make_embedding_net(in_features: int, embedding_dim: int, hidden: Sequence[int] = (128, 128)) -> MLP:
    """The SVMax digits embedding network: ``in_features`` → hidden → ``embedding_dim``, unit rows."""
    embedding_dim = _check_width("embedding_dim", embedding_dim)
    return MLP(in_features, hidden, embedding_dim, activation="relu", normalize_output=True)


def ring_gan_models(latent_dim: int = 16, hidden: int = 128) -> tuple[MLP, MLP]:
    """The 2-D GAN of SVMax Part B: generator z ``(b, latent_dim)`` → ``(b, 2)`` and discriminator
    ``(b, 2)`` → logits ``(b, 1)``, each with two ReLU hidden layers of width ``hidden``."""
    latent_dim = _check_width("latent_dim", latent_dim)
    hidden = _check_width("hidden", hidden)
    generator = MLP(latent_dim, (hidden, hidden), 2)
    discriminator = MLP(2, (hidden, hidden), 1)
    return generator, discriminator

"""Small backbones shared by chapters."""
from labkit.models.mlp import ACTIVATIONS, MLP, make_embedding_net, ring_gan_models

__all__ = ["ACTIVATIONS", "MLP", "make_embedding_net", "ring_gan_models"]

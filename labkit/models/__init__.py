"""Small backbones shared by chapters."""
from labkit.models.mlp import ACTIVATIONS, MLP, make_embedding_net, ring_gan_models

__all__ = ["ACTIVATIONS", "MLP", "make_embedding_net", "ring_gan_models"]
from labkit.models.small_cnn import (BACKBONES, BasicBlock, PlainCNN, ResNetSmall, init_weights,
                                     make_backbone, scaled_width)

__all__ += ["BACKBONES", "BasicBlock", "PlainCNN", "ResNetSmall", "init_weights", "make_backbone",
            "scaled_width"]
from labkit.models.tiny_detector import (DEFAULT_ANCHORS, DETECTOR_MODULES, TinyDetector, detect,
                                         detector_losses, greedy_rpn_nms, train_detector)

__all__ += ["DEFAULT_ANCHORS", "DETECTOR_MODULES", "TinyDetector", "detect", "detector_losses",
            "greedy_rpn_nms", "train_detector"]
from labkit.models.corrector import Corrector

__all__ += ["Corrector"]
from labkit.models.toy_gan import ImageDiscriminator, ImageGenerator

__all__ += ["ImageDiscriminator", "ImageGenerator"]

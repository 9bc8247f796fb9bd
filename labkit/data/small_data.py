"""Small image datasets for the small-data regime: few training images per class, many for test.

``ImageSplit`` is the common container: images ``(n, C, H, W)`` float32 in [0, 1] and long labels,
for a train and a test part. Two kinds of split use it:

- **closed-set** (``digits_few_shot``, ``glyphs.glyphs_few_shot``): train and test hold the same
  classes, as in Knowledge Evolution's small-data classification;
- **open-set** (``glyphs.glyph_open_set``): test classes are disjoint from train classes, as in the
  retrieval chapters (CUB-style class split).

``digits_few_shot`` upsamples scikit-learn's 8×8 digits and keeps ``samples_per_class`` training
images per class; every other image is a test image. ``load_small_data(name, **kwargs)`` picks a
set from ``SMALL_DATASETS`` by name.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from labkit.config import as_generator, check_choice, check_positive_int
from labkit.data.digits import IMAGE_SIZE, NUM_CLASSES, all_digits
from labkit.data.glyphs import check_image_size, check_seed, glyphs_few_shot


@dataclasses.dataclass(frozen=True)
class ImageSplit:
    """Train and test images with their labels.

    Shapes: ``X_*`` ``(n, C, H, W)`` float32 in [0, 1]; ``y_*`` ``(n,)`` long. ``num_classes`` is the
    size of the label space (labels lie in ``0..num_classes-1``); in an open-set split the train
    and test parts use disjoint parts of it. ``name`` says which dataset and split this is.
    """
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            X, y = getattr(self, f"X_{part}"), getattr(self, f"y_{part}")
            if X.ndim != 4 or y.ndim != 1 or len(X) != len(y):
                raise ValueError(f"X_{part} must be (n, C, H, W) and y_{part} (n,); got "
                                 f"{tuple(X.shape)} and {tuple(y.shape)}")

    @property
    def train_classes(self) -> tuple[int, ...]:
        """The sorted class ids present in the training part."""
        return tuple(torch.unique(self.y_train).tolist())

    @property
    def test_classes(self) -> tuple[int, ...]:
        """The sorted class ids present in the test part."""
        return tuple(torch.unique(self.y_test).tolist())

    @property
    def is_open_set(self) -> bool:
        """True when no test class appears in training (a held-out-class split)."""
        return not set(self.train_classes) & set(self.test_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.X_train.shape[1:])


def class_counts(y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Images per class: ``(num_classes,)`` long, ``num_classes`` defaulting to ``max(y) + 1``."""
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must be a 1-D integer label tensor; got shape {tuple(y.shape)}, "
                         f"dtype {y.dtype}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"y holds the negative label {int(y.min())}; labels must be >= 0")
    minlength = 0 if num_classes is None else check_positive_int("num_classes", num_classes)
    if y.numel() and num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(f"num_classes={num_classes} is too small; y holds the label {int(y.max())}")
    return torch.bincount(y.long().cpu(), minlength=minlength)


def stratified_indices(y: torch.Tensor, samples_per_class: int,
                       generator: torch.Generator | int | None = None) -> torch.Tensor:
    """A boolean mask ``(n,)`` choosing ``samples_per_class`` random indices of every class in ``y``.

    Drawn without replacement and fixed by ``generator``. A class with ``samples_per_class`` or
    fewer members is taken whole; checking that each class keeps some images back is the caller's.
    """
    counts = class_counts(y)  # validates y
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    y = torch.as_tensor(y).long().cpu()
    keys = torch.rand(len(y), generator=as_generator(generator))
    # sort by random key, then stably by class: each class's members end up in random order
    order = torch.argsort(keys)
    order = order[torch.argsort(y[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(y)) - starts[y[order]]
    return rank < samples_per_class


def upsampled_digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits resized bilinearly: ``(1797, 1, size, size)`` float32 in [0, 1] and ``y``."""
    size = check_image_size(size)
    X, y = all_digits()
    images = X.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    if size != IMAGE_SIZE:
        # bilinear weights are a convex combination, so values stay in [0, 1]; clamp guards rounding
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0).contiguous(), y


def digits_few_shot(samples_per_class: int = 15, size: int = 16, seed: int = 0) -> ImageSplit:
    """scikit-learn digits at ``size × size``: ``samples_per_class`` training images per class.

    Training images are drawn per class without replacement, fixed by ``seed``; every other image
    (about 1,650 at 15 per class) is a test image, so train + test is all 1,797 digits.
    """
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    seed = check_seed(seed)
    X, y = upsampled_digits(size)
    smallest = int(class_counts(y, NUM_CLASSES).min())
    if samples_per_class >= smallest:
        raise ValueError(f"samples_per_class={samples_per_class} is too large; the smallest digit "
                         f"class has {smallest} images and must keep some for test, so the maximum "
                         f"is {smallest - 1}")
    in_train = stratified_indices(y, samples_per_class, seed)
    return ImageSplit(X_train=X[in_train], y_train=y[in_train], X_test=X[~in_train],
                      y_test=y[~in_train], num_classes=NUM_CLASSES,
                      name=f"digits-{size}px-{samples_per_class}-per-class")


SMALL_DATASETS: dict[str, Callable[..., ImageSplit]] = {
    "digits": digits_few_shot,
    "glyphs": glyphs_few_shot,
}


def load_small_data(name: str = "digits", **kwargs) -> ImageSplit:
    """The closed-set few-shot split ``name`` (a key of ``SMALL_DATASETS``), built with ``kwargs``."""
    check_choice("name", name, SMALL_DATASETS)
    return SMALL_DATASETS[name](**kwargs)

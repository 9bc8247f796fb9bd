"""scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), pixel values scaled to [0, 1].

The data ship inside the scikit-learn wheel, so nothing is downloaded. For metric learning the
classes are split open-set style, like CUB's class split: the model trains on some digits and
retrieval is measured on digits it never saw. ``class_balanced_batches`` yields the P classes ×
K samples batches that ranking losses need.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Iterator

import numpy as np
import torch

from labkit.config import as_generator, check_positive_int

NUM_CLASSES = 10
IMAGE_SIZE = 8
MAX_PIXEL = 16.0  # load_digits pixels are counts in 0..16


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """A class-disjoint split. Labels keep their digit values (test labels are e.g. 5..9).

    Shapes: ``X_*`` ``(n, 64)`` float32 in [0, 1]; ``y_*`` ``(n,)`` long; ``images_*`` ``(n, 8, 8)``.
    """
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    images_train: torch.Tensor
    images_test: torch.Tensor
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # imported here so that importing labkit.data stays cheap; cached because load_digits parses
    # a CSV on every call
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = (bunch.data / MAX_PIXEL).astype(np.float32)
    y = bunch.target.astype(np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits: ``X`` ``(1797, 64)`` float32 in [0, 1] and ``y`` ``(1797,)`` long in 0..9."""
    X, y = _digits_arrays()
    # copies, so a caller editing its tensors cannot corrupt the cache
    return torch.tensor(X), torch.tensor(y)


def _check_classes(name: str, classes: Iterable[int]) -> tuple[int, ...]:
    try:
        values = tuple(classes)
    except TypeError:
        raise ValueError(f"{name}={classes!r} is not valid; pass a sequence of digit classes") from None
    if not values:
        raise ValueError(f"{name} is empty; it needs at least one digit class")
    for value in values:
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not is_int or not 0 <= value < NUM_CLASSES:
            raise ValueError(f"{name} holds {value!r}; classes must be ints in 0..{NUM_CLASSES - 1}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={values!r} repeats a class")
    return tuple(int(v) for v in values)


def load_digits_split(train_classes: Iterable[int] = (0, 1, 2, 3, 4),
                      test_classes: Iterable[int] = (5, 6, 7, 8, 9)) -> DigitsSplit:
    """Every image of ``train_classes`` for training and every image of ``test_classes`` for test.

    The two class sets must be disjoint: retrieval is measured on classes the model never saw.
    """
    train_classes = _check_classes("train_classes", train_classes)
    test_classes = _check_classes("test_classes", test_classes)
    shared = sorted(set(train_classes) & set(test_classes))
    if shared:
        raise ValueError(f"train_classes and test_classes share {shared}; an open-set split needs "
                         "disjoint classes")
    X, y = all_digits()
    in_train = torch.isin(y, torch.tensor(train_classes))
    in_test = torch.isin(y, torch.tensor(test_classes))
    images = X.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return DigitsSplit(
        X_train=X[in_train], y_train=y[in_train], X_test=X[in_test], y_test=y[in_test],
        images_train=images[in_train], images_test=images[in_test],
        train_classes=train_classes, test_classes=test_classes,
    )


def _check_labels(y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.numel() == 0:
        raise ValueError(f"y must be a non-empty 1-D label tensor; got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer labels; got dtype {y.dtype}")
    return y.long().cpu()


def class_balanced_batches(y: torch.Tensor, num_classes_per_batch: int, samples_per_class: int,
                           generator: torch.Generator | int | None = None) -> Iterator[torch.Tensor]:
    """Yield index batches forever: ``num_classes_per_batch`` classes × ``samples_per_class`` each.

    Classes are drawn without replacement from those present in ``y`` ``(n,)``. Within a class,
    samples are drawn without replacement, unless the class has fewer than ``samples_per_class``
    examples, in which case that class alone is drawn with replacement. Each yielded batch is a
    long tensor ``(num_classes_per_batch * samples_per_class,)`` of indices into ``y``, grouped by
    class (block ``i`` holds class ``i``'s samples). The sequence is fixed by ``generator``.
    """
    y = _check_labels(y)
    classes, class_of_sample = torch.unique(y, return_inverse=True)
    num_classes_per_batch = check_positive_int("num_classes_per_batch", num_classes_per_batch)
    if num_classes_per_batch > len(classes):
        raise ValueError(f"num_classes_per_batch={num_classes_per_batch} is not valid; y has only "
                         f"{len(classes)} classes")
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    rng = as_generator(generator)
    # validation above runs at call time; the generator below runs lazily
    return _balanced_batches(class_of_sample, len(classes), num_classes_per_batch, samples_per_class, rng)


def _members_by_class(class_of_sample: torch.Tensor, num_classes: int,
                      min_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample indices of each class, padded with -1: ``(num_classes, width)``, and ``counts``.

    ``width`` is at least ``min_width`` so that a batch can always slice that many columns.
    """
    counts = torch.bincount(class_of_sample, minlength=num_classes)
    order = torch.argsort(class_of_sample, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(len(order)) - starts[class_of_sample[order]]
    width = max(int(counts.max()), min_width)
    members = torch.full((num_classes, width), -1, dtype=torch.long)
    members[class_of_sample[order], rank_in_class] = order
    return members, counts


def _balanced_batches(class_of_sample: torch.Tensor, num_classes: int, num_classes_per_batch: int,
                      samples_per_class: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    members, counts = _members_by_class(class_of_sample, num_classes, samples_per_class)
    is_member = members >= 0
    while True:
        chosen = torch.randperm(num_classes, generator=rng)[:num_classes_per_batch]  # (p,)
        chosen_counts = counts[chosen, None]  # (p, 1)
        # without replacement: random keys with padding keys last; keep the first k columns
        keys = torch.rand(num_classes_per_batch, members.shape[1], generator=rng)
        keys = keys.masked_fill(~is_member[chosen], 2.0)
        distinct = torch.argsort(keys, dim=1)[:, :samples_per_class]  # (p, k)
        # with replacement, used only where a class is smaller than k
        uniform = torch.rand(num_classes_per_batch, samples_per_class, generator=rng)
        repeated = (uniform * chosen_counts).long().clamp_max(chosen_counts - 1)  # (p, k)
        positions = torch.where(chosen_counts < samples_per_class, repeated, distinct)
        yield members[chosen[:, None], positions].reshape(-1)

"""Embedded datasets, each deterministic from a seed and vectorized (see ``data/README.md``)."""
from labkit.data.digits import (
    DigitsSplit,
    all_digits,
    class_balanced_batches,
    load_digits_split,
)
from labkit.data.gaussian_mixture import (
    MIXTURES,
    as_generator,
    grid_centres,
    mixture_centres,
    ring_centres,
    sample_mixture,
)

__all__ = [
    "DigitsSplit",
    "MIXTURES",
    "all_digits",
    "as_generator",
    "class_balanced_batches",
    "grid_centres",
    "load_digits_split",
    "mixture_centres",
    "ring_centres",
    "sample_mixture",
]

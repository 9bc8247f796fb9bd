"""Real photographs that ship inside the scikit-image wheel, and a "patch source" task on them.

The PNGs are read straight from ``skimage.data.data_dir`` with Pillow, so nothing is ever
downloaded (scikit-image's own loaders fall back to pooch for files a wheel lacks). JPEG sources
(rocket, retina, hubble_deep_field) are left out on purpose: a chapter on JPEG artifacts needs
pixels that have not been through the codec already. Some PNGs (chelsea, coffee, astronaut) may
still carry an old compression history; they are photographs all the same.

``PHOTO_NAMES`` are the photos of the classification task: textured and visually diverse, with
high-frequency content everywhere, so a 48 px crop from any of them is recognisable and JPEG at
low quality visibly hurts it. ``PHOTO_FILES`` also lists flat or synthetic extras (horse, logo,
colorwheel, ...) that ``load_photo`` can load for demonstrations.

``photo_patches`` labels each crop by the photo it comes from. Train crops lie wholly inside the
left ``train_fraction`` of each photo's width and test crops wholly inside the right remainder,
so no test pixel was ever seen in training.
"""
from __future__ import annotations

import functools
import numbers
import os
from typing import Sequence

import numpy as np
import torch

from labkit.config import check_choice, check_positive_int

__all__ = ["PHOTO_FILES", "PHOTO_NAMES", "SPLITS", "class_names", "load_photo", "photo_patches",
           "split_boundary"]

# name -> PNG file in skimage.data.data_dir (every one of them is in the wheel; none is a JPEG)
PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",  # 512 x 512 RGB
    "brick": "brick.png",  # 512 x 512 gray
    "camera": "camera.png",  # 512 x 512 gray
    "cell": "cell.png",  # 660 x 550 gray
    "chelsea": "chelsea.png",  # 300 x 451 RGB
    "clock": "clock_motion.png",  # 300 x 400 gray
    "coffee": "coffee.png",  # 400 x 600 RGB
    "coins": "coins.png",  # 303 x 384 gray
    "grass": "grass.png",  # 512 x 512 gray
    "gravel": "gravel.png",  # 512 x 512 gray
    "ihc": "ihc.png",  # 512 x 512 RGB (immunohistochemistry)
    "moon": "moon.png",  # 512 x 512 gray
    "motorcycle": "motorcycle_left.png",  # 500 x 741 RGB
    "page": "page.png",  # 191 x 384 gray
    "text": "text.png",  # 172 x 448 gray
    # extras, not in PHOTO_NAMES: flat, synthetic, tiny or a near-duplicate
    "colorwheel": "color.png",  # 370 x 371 RGB, smooth
    "horse": "horse.png",  # 328 x 400 RGBA, a binary silhouette
    "logo": "logo.png",  # 500 x 500 RGBA, flat colours on transparency
    "microaneurysms": "microaneurysms.png",  # 102 x 102 gray, too small to split
    "motorcycle_right": "motorcycle_right.png",  # 500 x 741 RGB, the other stereo view
    "phantom": "phantom.png",  # 400 x 400, Shepp-Logan, flat
}

PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "ihc", "moon", "motorcycle", "page", "text",
)

SPLITS = ("train", "test")


def _photo_path(name: str) -> str:
    import skimage.data  # imported here so that importing labkit.data stays cheap

    return os.path.join(skimage.data.data_dir, PHOTO_FILES[name])


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in PHOTO_FILES:
        listed = ", ".join(repr(n) for n in PHOTO_FILES)
        raise ValueError(f"name={name!r} is not a known photo; choose one of: {listed}")
    return name


@functools.lru_cache(maxsize=None)
def _photo_tensor(name: str) -> torch.Tensor:
    """``(3, H, W)`` float32 in [0, 1], shared by every caller: never edit it in place."""
    from PIL import Image

    path = _photo_path(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"photo {name!r} should ship with scikit-image at {path}, but the "
                                "file is missing; reinstall scikit-image")
    with Image.open(path) as image:
        if image.mode == "L":
            gray = np.asarray(image, dtype=np.float32) / 255.0
            rgb = np.repeat(gray[..., None], 3, axis=-1)
        elif image.mode == "RGB":
            rgb = np.asarray(image, dtype=np.float32) / 255.0
        else:  # RGBA, LA, P, 1 (binary), ...: composite over white, as skimage's rgba2rgb does
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[..., 3:]
            rgb = rgba[..., :3] * alpha + (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1),
                                                 dtype=np.float32))


def load_photo(name: str) -> torch.Tensor:
    """Photo ``name`` (a key of ``PHOTO_FILES``) as ``(3, H, W)`` float32 in [0, 1].

    Gray photos are repeated to 3 channels; RGBA photos are composited over white. The decoded
    pixels are cached; each call returns a fresh copy, so editing it cannot corrupt the cache.
    """
    return _photo_tensor(_check_name(name)).clone()


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"names={names!r} is not valid; pass a sequence of photo names, e.g. "
                         "PHOTO_NAMES")
    values = tuple(names)
    if not values:
        raise ValueError("names is empty; it needs at least one photo name")
    for value in values:
        _check_name(value)
    if len(set(values)) != len(values):
        raise ValueError(f"names={values!r} repeats a photo")
    return values


def class_names(names: Sequence[str] = PHOTO_NAMES) -> tuple[str, ...]:
    """The class names of ``photo_patches(..., names=names)``: label ``i`` is ``names[i]``."""
    return _check_names(names)


def _check_fraction(train_fraction: object) -> float:
    is_real = isinstance(train_fraction, numbers.Real) and not isinstance(train_fraction, bool)
    if not is_real or not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"train_fraction={train_fraction!r} is not valid; pass a number strictly "
                         "between 0 and 1")
    return float(train_fraction)


def split_boundary(name: str, train_fraction: float = 0.7) -> int:
    """The column that splits photo ``name``: train crops lie in ``[0, b)``, test crops in ``[b, W)``."""
    width = _photo_tensor(_check_name(name)).shape[2]
    return int(np.floor(_check_fraction(train_fraction) * width))


def _region(name: str, split: str, train_fraction: float) -> tuple[int, int]:
    """Columns ``[x0, x1)`` of ``split`` in photo ``name``."""
    boundary = split_boundary(name, train_fraction)
    width = _photo_tensor(name).shape[2]
    return (0, boundary) if split == "train" else (boundary, width)


def _split_generator(seed: object, split: str) -> torch.Generator:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not valid; pass an int >= 0")
    # train and test draw from independent streams, so their crop positions are not correlated
    state = np.random.SeedSequence([int(seed), SPLITS.index(split)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def photo_patches(num_per_class: int, patch_size: int = 48, split: str = "train", seed: int = 0,
                  names: Sequence[str] = PHOTO_NAMES, train_fraction: float = 0.7,
                  return_offsets: bool = False):
    """Class-balanced random crops labelled by the photo they come from ("patch source").

    Returns ``X`` ``(n, 3, p, p)`` float32 in [0, 1] and ``y`` ``(n,)`` long with
    ``n = num_per_class * len(names)`` and label ``i`` meaning ``names[i]``; rows are grouped by
    class (class 0 first), so shuffle before taking a prefix. Crop corners are uniform over every
    position whose crop lies fully inside the split's region (``split_boundary``), fixed by
    ``seed``. Crops of one split may overlap each other; crops of different splits never share a
    pixel. With ``return_offsets=True`` a third tensor ``(n, 3)`` long gives each crop's
    ``(photo index, top row, left column)`` in its photo. The data are not augmented: flips and
    colour jitter belong to training.
    """
    num_per_class = check_positive_int("num_per_class", num_per_class)
    patch_size = check_positive_int("patch_size", patch_size)
    check_choice("split", split, SPLITS)
    names = _check_names(names)
    train_fraction = _check_fraction(train_fraction)
    rng = _split_generator(seed, split)
    offsets_arange = torch.arange(patch_size)
    X, offsets = [], []
    for index, name in enumerate(names):
        photo = _photo_tensor(name)  # the cached tensor; advanced indexing below copies
        height = photo.shape[1]
        x0, x1 = _region(name, split, train_fraction)
        if patch_size > min(height, x1 - x0):
            raise ValueError(
                f"patch_size={patch_size} does not fit the {split} region of photo {name!r} "
                f"({height} x {x1 - x0} px at train_fraction={train_fraction}); use a smaller "
                f"patch_size or another train_fraction")
        ys = torch.randint(0, height - patch_size + 1, (num_per_class,), generator=rng)
        xs = torch.randint(x0, x1 - patch_size + 1, (num_per_class,), generator=rng)
        rows = ys[:, None] + offsets_arange  # (k, p)
        cols = xs[:, None] + offsets_arange  # (k, p)
        crops = photo[:, rows[:, :, None], cols[:, None, :]]  # (3, k, p, p)
        X.append(crops.permute(1, 0, 2, 3))
        offsets.append(torch.stack([torch.full_like(ys, index), ys, xs], dim=1))
    X = torch.cat(X).contiguous()
    y = torch.arange(len(names)).repeat_interleave(num_per_class)
    if return_offsets:
        return X, y, torch.cat(offsets)
    return X, y

r"""Compositional scenes: the CPU-scale stand-in for CLEVR in chapter 01 (dual contrastive GAN).

A plain grey background (``BACKGROUNDS``) with ``min_objects``–``max_objects`` flat primitives
(count uniform); each has a shape (``SHAPES``) and colour (``COLOURS``), uniform and independent,
and a size ``r`` uniform in ``SIZE_RANGE · image_size / 32`` (2.5–4.5 px at 32²), giving the
circumradius ``R = r · SHAPE_EXTENT[shape]``: a circle of radius ``r``, an axis-aligned square of
half-side ``0.85 r``, an upright equilateral triangle with ``R = 1.3 r`` (areas within 20 %).

Edges are anti-aliased from exact signed distances (coverage ``clamp(0.5 - sd, 0, 1)``), so an
object colours no pixel centre beyond ``R + 0.5``. Centres keep ``R_i + R_j + GAP`` apart (``GAP``
2.5 px > 1 + √2): objects never overlap or touch (no 8-neighbouring pixels), so each is one
``scipy.ndimage.label`` component, and they lie wholly inside the image.

**Placement**, vectorized over images: largest object first, each at the first of
``NUM_CANDIDATES`` random positions clear of those placed. An image that fails (0.7 % at 32² with
2–4 objects) redraws its positions from a stream ``(seed, j, attempt)``; after
``POSITION_RETRIES`` its objects also shrink by ``SHRINK`` per retry (not below the smallest
size). Counts, shapes and colours are never redrawn, so they stay uniform.

**Determinism:** image ``j`` depends only on ``(seed, j)`` and the arguments, bit for bit: the
first 10 images of a 20-image set are the 10-image set. About 0.1–0.2 s per 1,000 images at 32².
"""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import torch

from labkit.config import check_choice, check_positive_int
from labkit.data.glyphs import check_seed

__all__ = ["SHAPES", "COLOURS", "BACKGROUNDS", "CompositionalScenes", "make_compositional", "max_objects_for"]

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.22, 0.20),
    "green": (0.25, 0.78, 0.30),
    "blue": (0.22, 0.38, 0.92),
}
BACKGROUNDS: dict[str, tuple[float, ...]] = {"dark": (0.12,), "light": (0.78,), "mixed": (0.12, 0.78)}
SIZE_RANGE = (2.5, 4.5)  # object size r in px at 32², scaled by image_size / 32
SHAPE_EXTENT = (1.0, 1.2, 1.3)  # circumradius / r per shape: circle, square, triangle
GAP = 2.5  # px between circumcircles: > 1 (two AA half-pixels) + sqrt(2) (8-neighbour pixel centres)
NUM_CANDIDATES = 128  # candidate positions per object
POSITION_RETRIES = 10  # retries that redraw positions only, before objects shrink too
SHRINK = 0.95  # per retry after POSITION_RETRIES, down to the smallest size
MAX_OBJECTS = 6
MAX_ATTEMPTS = 200
CHUNK = 2048  # images generated at once; bounds the memory of the candidate arrays
MIN_IMAGE_SIZE = 16
_STREAM_TAG = 0xC0_1E  # separates these streams from other datasets' (seed, j) streams


@dataclasses.dataclass(frozen=True)
class CompositionalScenes:
    """``n`` scenes with up to ``M = max_objects`` objects each (slots past ``counts`` are padding).

    ``images`` ``(n, 3, S, S)`` float32 in [0, 1]; ``counts`` ``(n,)`` long; ``shapes`` and
    ``colours`` ``(n, 3)`` long presence counts (per ``SHAPES`` / ``COLOURS`` entry, summing to
    ``counts``); ``object_shapes`` / ``object_colours`` ``(n, M)`` long, -1 in padding;
    ``centres`` ``(n, M, 2)`` float32 (x, y) in pixels (pixel ``i`` spans ``[i, i+1)``), NaN in
    padding; ``radii`` ``(n, M)`` float32 circumradii, NaN in padding; ``backgrounds`` ``(n,)``
    float32 grey levels.
    """
    images: torch.Tensor
    counts: torch.Tensor
    shapes: torch.Tensor
    colours: torch.Tensor
    object_shapes: torch.Tensor
    object_colours: torch.Tensor
    centres: torch.Tensor
    radii: torch.Tensor
    backgrounds: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def _check_image_size(value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={value!r} is not valid; it must be an int >= {MIN_IMAGE_SIZE}")
    return int(value)


def max_objects_for(image_size: int) -> int:
    """The most objects ``make_compositional`` accepts at ``image_size``: ``min(6, image_size // 4)``.

    Sizes scale with the image but ``GAP`` does not, so small images hold fewer objects.
    """
    return min(MAX_OBJECTS, _check_image_size(image_size) // 4)


def _uniforms(seed: int, index: int, attempt: int, size: int) -> np.ndarray:
    sequence = np.random.SeedSequence([seed, _STREAM_TAG, index, attempt])
    return np.random.Generator(np.random.PCG64(sequence)).random(size)


def _place(u: np.ndarray, radius: np.ndarray, targets: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(b, M, 2)`` (NaN beyond ``targets``) from candidate uniforms ``u`` ``(b, M, T, 2)``.

    Objects are placed largest first; each takes its first candidate position that keeps ``GAP``
    from the objects already placed. Returns the centres and ``ok`` ``(b,)``: every object placed.
    """
    b, m = radius.shape
    active = np.arange(m)[None] < targets[:, None]  # (b, M): the image's objects
    order = np.argsort(np.where(active, -radius, np.inf), axis=1, kind="stable")
    centres = np.full((b, m, 2), np.nan)
    placed_r = np.full((b, m), np.nan)
    ok = np.ones(b, dtype=bool)
    rows = np.arange(b)
    for k in range(m):
        slot = order[:, k]
        r = radius[rows, slot]  # (b,)
        margin = (r + 0.5)[:, None, None]  # the AA edge reaches R + 0.5: wholly inside the image
        candidates = margin + (image_size - 2 * margin) * u[rows, slot]  # (b, T, 2)
        distance = np.linalg.norm(candidates[:, :, None] - centres[:, None], axis=3)  # (b, T, M)
        # NaN (free slots) compares False, so only placed objects can block a candidate
        blocked = (distance < r[:, None, None] + placed_r[:, None] + GAP).any(axis=2)  # (b, T)
        first = np.argmin(blocked, axis=1)
        fits = ~blocked[rows, first] & active[rows, slot]
        ok &= fits | ~active[rows, slot]
        centres[rows[fits], slot[fits]] = candidates[rows[fits], first[fits]]
        placed_r[rows[fits], slot[fits]] = r[fits]
    return centres, ok


def _circle(px: np.ndarray, py: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Exact signed distance (px, < 0 inside) at offsets ``(px, py)`` from the centre."""
    return np.sqrt(px**2 + py**2) - radius


def _square(px: np.ndarray, py: np.ndarray, radius: np.ndarray) -> np.ndarray:
    half = radius / math.sqrt(2)  # axis-aligned; its circumradius is ``radius``
    qx, qy = np.abs(px) - half, np.abs(py) - half
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle(px: np.ndarray, py: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Upright equilateral triangle of circumradius ``radius`` (Inigo Quilez's exact SDF)."""
    k = math.sqrt(3.0)
    half_side = radius * k / 2
    tx, ty = np.broadcast_arrays(np.abs(px) - half_side, -py + half_side / k)  # flip y: apex up
    fold = tx + k * ty > 0
    tx, ty = np.where(fold, (tx - k * ty) / 2, tx), np.where(fold, (-k * tx - ty) / 2, ty)
    tx = tx - np.maximum(np.minimum(tx, 0), -2 * half_side)
    return -np.sqrt(tx**2 + ty**2) * np.sign(ty)


_SIGNED_DISTANCES = (_circle, _square, _triangle)  # in SHAPES order


def _render(shape, colour, centres, radius, targets, backgrounds, image_size: int) -> torch.Tensor:
    """Images ``(n, 3, S, S)``: each object's SDF on a square patch (all objects of a shape at
    once), scattered in. NumPy, as torch's intra-op threads thrash on a busy 2-core machine."""
    n, m = shape.shape
    image_of, slot = np.nonzero(np.arange(m)[None] < targets[:, None])  # the k objects, flattened
    xy, r, kinds = centres[image_of, slot], radius[image_of, slot], shape[image_of, slot]  # (k, 2), (k,), (k,)
    # one patch side for every object of every image: R + 0.5 around any centre, however placed
    largest = SIZE_RANGE[1] * image_size / 32 * max(SHAPE_EXTENT)
    side = math.ceil(2 * largest + 1) + 1
    origin = np.floor(xy - side / 2).astype(np.int64)  # (k, 2) top-left pixel of each patch
    offsets = np.arange(side)
    pixel_x = origin[:, 0, None] + offsets + 0.5  # (k, side) pixel centres, exact
    pixel_y = origin[:, 1, None] + offsets + 0.5
    coverage = np.empty((len(r), side, side))
    for kind in range(len(SHAPES)):
        of_kind = np.flatnonzero(kinds == kind)
        px = (pixel_x[of_kind] - xy[of_kind, 0, None])[:, None, :]  # (k_s, 1, side)
        py = (pixel_y[of_kind] - xy[of_kind, 1, None])[:, :, None]  # (k_s, side, 1)
        sd = _SIGNED_DISTANCES[kind](px, py, r[of_kind, None, None])
        coverage[of_kind] = np.clip(0.5 - sd, 0.0, 1.0)
    # patch pixels off the image have zero coverage (objects lie wholly inside); clip their index
    cols = np.clip(origin[:, 0, None, None] + offsets[None, None, :], 0, image_size - 1)
    rows = np.clip(origin[:, 1, None, None] + offsets[None, :, None], 0, image_size - 1)
    pixel = ((image_of[:, None, None] * image_size + rows) * image_size + cols).reshape(-1)
    # objects never overlap, so each pixel mixes the background with at most one colour
    size = n * image_size**2
    alpha = np.bincount(pixel, coverage.reshape(-1), minlength=size)
    rgb = np.asarray(list(COLOURS.values()))[colour[image_of, slot]]  # (k, 3)
    paint = np.stack([np.bincount(pixel, (coverage * rgb[:, c, None, None]).reshape(-1), minlength=size)
                      for c in range(3)])  # (3, n·S·S)
    images = backgrounds[None, :, None] * (1 - alpha.reshape(n, -1)) + paint.reshape(3, n, -1)
    images = np.clip(images, 0.0, 1.0).astype(np.float32).reshape(3, n, image_size, image_size)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(1, 0, 2, 3)))


def _scene_arrays(seed: int, indices: range, image_size: int, min_objects: int, max_objects: int,
                  greys: np.ndarray):
    """Shape, colour ``(b, M)``, centres ``(b, M, 2)``, circumradii ``(b, M)``, counts and grey
    levels ``(b,)`` of images ``indices``; slots past an image's count are unused."""
    # one stream per image: [count, background, M × (shape, colour, size), M × T × (x, y)];
    # a retry stream (seed, j, attempt) holds new positions only
    m, per_object = max_objects, 3 + 2 * NUM_CANDIDATES
    u = np.stack([_uniforms(seed, j, 0, 2 + m * per_object) for j in indices])
    span = max_objects - min_objects + 1
    targets = min_objects + np.minimum((u[:, 0] * span).astype(np.int64), span - 1)
    backgrounds = greys[np.minimum((u[:, 1] * len(greys)).astype(np.int64), len(greys) - 1)]
    objects = u[:, 2:2 + 3 * m].reshape(-1, m, 3)
    shape = np.minimum((objects[..., 0] * len(SHAPES)).astype(np.int64), len(SHAPES) - 1)
    colour = np.minimum((objects[..., 1] * len(COLOURS)).astype(np.int64), len(COLOURS) - 1)
    low, high = (size * image_size / 32 for size in SIZE_RANGE)
    radius = (low + (high - low) * objects[..., 2]) * np.asarray(SHAPE_EXTENT)[shape]
    centres, ok = _place(u[:, 2 + 3 * m:].reshape(-1, m, NUM_CANDIDATES, 2), radius, targets, image_size)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        short = np.flatnonzero(~ok)
        if len(short) == 0:
            break
        if attempt == MAX_ATTEMPTS:
            raise RuntimeError(f"could not place the objects of {len(short)} images of size {image_size}; "
                               "lower max_objects or raise image_size")
        retry = np.stack([_uniforms(seed, indices[j], attempt, m * 2 * NUM_CANDIDATES) for j in short])
        if attempt > POSITION_RETRIES:  # these objects may not fit at all: shrink them a little
            radius[short] = np.maximum(radius[short] * SHRINK, low * np.asarray(SHAPE_EXTENT)[shape[short]])
        centres[short], ok[short] = _place(retry.reshape(-1, m, NUM_CANDIDATES, 2), radius[short],
                                           targets[short], image_size)
    return shape, colour, centres, radius, targets, backgrounds


def make_compositional(num_images: int, image_size: int = 32, seed: int = 0, min_objects: int = 2,
                       max_objects: int = 4, background: str = "dark") -> CompositionalScenes:
    """Draw ``num_images`` scenes (see the module docstring); image ``j`` depends only on ``(seed, j)``.

    ``background`` is a key of ``BACKGROUNDS``: ``"dark"``, ``"light"`` or ``"mixed"`` (each image
    picks one of the two greys).
    """
    num_images = check_positive_int("num_images", num_images)
    image_size = _check_image_size(image_size)
    seed = check_seed(seed)
    min_objects = check_positive_int("min_objects", min_objects)
    max_objects = check_positive_int("max_objects", max_objects)
    if max_objects < min_objects:
        raise ValueError(f"max_objects={max_objects} is not valid; it must be >= min_objects={min_objects}")
    capacity = max_objects_for(image_size)
    if max_objects > capacity:
        raise ValueError(f"max_objects={max_objects} is not valid for image_size={image_size}; at most "
                         f"{capacity} objects fit without touching (max_objects_for(image_size))")
    check_choice("background", background, BACKGROUNDS)
    greys = np.asarray(BACKGROUNDS[background])

    chunks = [_scene_arrays(seed, range(first, min(first + CHUNK, num_images)), image_size,
                            min_objects, max_objects, greys) for first in range(0, num_images, CHUNK)]
    shape, colour, centres, radius, targets, backgrounds = (np.concatenate(parts) for parts in zip(*chunks))
    images = torch.cat([_render(*chunk, image_size) for chunk in chunks])
    padding = np.arange(max_objects)[None] >= targets[:, None]
    shape[padding], colour[padding], radius[padding] = -1, -1, np.nan
    object_shapes, object_colours = torch.from_numpy(shape), torch.from_numpy(colour)

    def presence(labels: torch.Tensor, k: int) -> torch.Tensor:
        return (labels[..., None] == torch.arange(k)).sum(1)  # (n, k); -1 padding matches nothing

    return CompositionalScenes(
        images=images, counts=torch.from_numpy(targets), shapes=presence(object_shapes, len(SHAPES)),
        colours=presence(object_colours, len(COLOURS)), object_shapes=object_shapes,
        object_colours=object_colours, centres=torch.from_numpy(centres).float(),
        radii=torch.from_numpy(radius).float(), backgrounds=torch.from_numpy(backgrounds).float(),
    )

r"""Shape scenes: images with boxes, labels and instance masks for the detection chapters (05, 07, 08).

Each scene is a textured, cluttered background with 1–``max_objects`` filled shapes on it. Objects
come in ``len(CLASS_NAMES)`` classes (circle, square, triangle, diamond, ring, cross, star and a
thin bar), each with its own colour (a random offset from the background colour underneath it, so
contrast is controlled), a small rotation plus a random quarter turn, and a gentle shading
gradient. Edges are anti-aliased (coverage ramps over one pixel).

**Sizes follow COCO's buckets as fractions of the image area.** COCO calls an object small below
32² px and large from 96² px, in images of about 640×480 = 307,200 px². As fractions of the image
area that is small < 1/300 (0.333 %), medium < 3 %, large ≥ 3 % (``SIZE_BUCKETS``). At 128×128
that is small < 54.6 px² (about 7×7) and large ≥ 491.5 px² (about 22×22); ``coco_area_ranges``
gives the pixel ranges for pycocotools and ``size_bucket`` names the bucket of an area. Every
object first draws a bucket from ``SceneConfig.size_mix`` (40/35/25 % by default), then a shape
area log-uniformly inside the bucket, so each scene set mixes all three.

**Classes are Zipf-like:** class ``c`` (its position in ``SceneConfig.classes``) has frequency
proportional to ``1 / (c + 1) ** zipf_alpha``. With the default eight classes and alpha 1 that is
37 % for circles down to 4.6 % for the last class, the thin bar: rare and thin, like COCO's skis.

**Occlusion and what is annotated.** Objects are drawn back to front in decreasing area, so later
(smaller) objects occlude earlier ones. The *visible* mask of an object is its pixels (pixel centre
inside the shape) that no later object covers. An object whose visible mask keeps less than
``min_visible`` of its full shape, or fewer than ``MIN_VISIBLE_PIXELS`` pixels, is removed from
the scene entirely (it is not drawn either), so every drawn object is annotated. Boxes are tight
around the **visible** mask, as in COCO: ``x1, y1`` are the first mask column and row, ``x2, y2``
one past the last (pixel-edge coordinates), so a one-pixel mask at column 3 has ``x1=3, x2=4``.
Areas (``Scenes.areas`` and COCO's ``area``) are visible mask pixel counts, as in COCO.

**Clutter.** Before the objects, each image gets distractor strokes (thin line segments) and
soft blobs (blurred ellipses) in the same contrast range as the objects; they are not annotated.
The background itself is a smooth random colour field plus mid-frequency colour noise and two
fine gratings, and Gaussian pixel noise is added at the end.

**Determinism.** Image ``start + i`` depends only on ``(seed, start + i)`` and the config: it has
its own random stream, so the first 100 images of a 1,000-image set are the 100-image set, and a
subset can be regenerated alone with ``start``.

**Vectorized rendering.** Every object and clutter primitive is rendered into a square patch just
large enough to hold it (patch sides 8, 12, 16, 24, 32, ...), with signed-distance formulas
evaluated for all objects of a patch size and class at once; patches are scattered into the
images with flat indices. The only Python loops are over images to seed their streams, over patch
sizes and classes, and over the ``max_objects`` depth slots when compositing.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import check_positive_int
from labkit.data.glyphs import check_seed

# --- size buckets -----------------------------------------------------------------------------

COCO_IMAGE_AREA = 640 * 480
BUCKET_NAMES = ("small", "medium", "large")
#: name -> (low, high) thresholds as fractions of the image area (COCO's 32² and 96² of 640×480)
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "small": (0.0, 32**2 / COCO_IMAGE_AREA),
    "medium": (32**2 / COCO_IMAGE_AREA, 96**2 / COCO_IMAGE_AREA),
    "large": (96**2 / COCO_IMAGE_AREA, math.inf),
}
COCO_MAX_AREA = 1e10  # pycocotools' upper bound for the "all" and "large" ranges


def _image_area(image_size: int | Sequence[int]) -> int:
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        height = width = int(image_size)
    elif (isinstance(image_size, Sequence) and len(image_size) == 2
          and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in image_size)):
        height, width = (int(s) for s in image_size)
    else:
        raise ValueError(f"image_size={image_size!r} is not valid; pass an int side or (height, width)")
    if height < 1 or width < 1:
        raise ValueError(f"image_size={image_size!r} is not valid; sides must be >= 1")
    return height * width


def size_thresholds(image_size: int | Sequence[int]) -> dict[str, tuple[float, float]]:
    """``SIZE_BUCKETS`` in pixels² for square images of side ``image_size`` (or ``(height, width)``)."""
    area = _image_area(image_size)
    return {name: (low * area, high * area) for name, (low, high) in SIZE_BUCKETS.items()}


def coco_area_ranges(image_size: int | Sequence[int]) -> dict[str, list[float]]:
    """pycocotools-style area ranges in pixels² for our image size.

    ``{"all": [0, 1e10], "small": [0, s], "medium": [s, m], "large": [m, 1e10]}`` with ``s`` and
    ``m`` COCO's 32² and 96² scaled from a 640×480 image to this one (1/300 and 3 % of its area).
    Set ``COCOeval.params.areaRng`` to ``list(ranges.values())`` and ``areaRngLbl`` to its keys.
    """
    thresholds = size_thresholds(image_size)
    small, medium = thresholds["small"][1], thresholds["medium"][1]
    return {"all": [0.0, COCO_MAX_AREA], "small": [0.0, small], "medium": [small, medium],
            "large": [medium, COCO_MAX_AREA]}


def size_bucket(area: float, image_area: float) -> str:
    """The COCO size bucket (``"small"``, ``"medium"`` or ``"large"``) of ``area`` px² in an image of
    ``image_area`` px². Boundaries belong to the larger bucket, as in pycocotools' ranges."""
    for name, value in (("area", area), ("image_area", image_area)):
        is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_real or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} is not valid; it must be a finite number >= 0")
    if image_area <= 0:
        raise ValueError(f"image_area={image_area!r} is not valid; it must be > 0")
    fraction = area / image_area
    for name in BUCKET_NAMES:
        if fraction < SIZE_BUCKETS[name][1]:
            return name
    return "large"


def size_bucket_index(areas: torch.Tensor, image_area: float) -> torch.Tensor:
    """Vectorized ``size_bucket``: 0 small, 1 medium, 2 large (indices into ``BUCKET_NAMES``)."""
    areas = torch.as_tensor(areas, dtype=torch.float64)
    if image_area <= 0:
        raise ValueError(f"image_area={image_area!r} is not valid; it must be > 0")
    edges = torch.tensor([SIZE_BUCKETS["small"][1], SIZE_BUCKETS["medium"][1]], dtype=torch.float64)
    return torch.bucketize(areas / image_area, edges, right=True)


# --- shapes -----------------------------------------------------------------------------------
# Signed distances in unit coordinates: every shape fits the unit circle (circumradius 1), so an
# object of radius r spans 2r pixels whatever its rotation. Negative inside.

def _box(x: torch.Tensor, y: torch.Tensor, hx: float, hy: float) -> torch.Tensor:
    qx, qy = x.abs() - hx, y.abs() - hy
    outside = torch.hypot(qx.clamp_min(0), qy.clamp_min(0))
    return outside + torch.maximum(qx, qy).clamp_max(0)


def _circle(x, y):
    return torch.hypot(x, y) - 1


def _square(x, y):
    return _box(x, y, 0.5**0.5, 0.5**0.5)


def _triangle(x, y):
    """Equilateral triangle centred on its centroid (after Inigo Quilez's exact 2-D distances)."""
    k, h = 3**0.5, 3**0.5 / 2          # half side for circumradius 1
    px, py = x.abs() - h, -y + h / k   # apex up in image coordinates (y down)
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - px.clamp(-2 * h, 0)
    return -torch.hypot(px, py) * torch.sign(py)


_DIAMOND = (1.0, 0.6)  # half diagonals: an elongated rhombus, never a rotated square


def _diamond(x, y):
    bx, by = _DIAMOND
    px, py = x.abs(), y.abs()
    h = (((bx - 2 * px) * bx - (by - 2 * py) * by) / (bx * bx + by * by)).clamp(-1, 1)
    distance = torch.hypot(px - 0.5 * bx * (1 - h), py - 0.5 * by * (1 + h))
    return distance * torch.sign(px * by + py * bx - bx * by)


def _ring(x, y):
    return (torch.hypot(x, y) - 0.72).abs() - 0.28  # outer radius 1, inner 0.44


_CROSS_ARM = 0.32  # arm half-width / arm half-length


def _cross(x, y):
    a = 1 / math.hypot(1, _CROSS_ARM)
    w = _CROSS_ARM * a
    return torch.minimum(_box(x, y, a, w), _box(x, y, w, a))


def _star(x, y, inner: float = 0.45):
    """Five-pointed star, outer radius 1, inner radius ``inner`` (after Inigo Quilez)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px, py = x.abs(), y
    d = (k1x * px + k1y * py).clamp_min(0)
    px, py = px - 2 * d * k1x, py - 2 * d * k1y
    d = (k2x * px + k2y * py).clamp_min(0)
    px, py = px - 2 * d * k2x, py - 2 * d * k2y
    px, py = px.abs(), py - 1
    bax, bay = -inner * k1y, inner * k1x - 1
    h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0, 1)
    return torch.hypot(px - bax * h, py - bay * h) * torch.sign(py * bax - px * bay)


_BAR_WIDTH = 0.16  # half width / half length: the thin class


def _bar(x, y):
    a = 1 / math.hypot(1, _BAR_WIDTH)
    return _box(x, y, a, _BAR_WIDTH * a)


SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": _circle, "square": _square, "triangle": _triangle, "diamond": _diamond,
    "ring": _ring, "cross": _cross, "star": _star, "bar": _bar,
}
#: the default classes, most frequent first; the last, "bar", is the rare thin class
CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "bar")


@functools.lru_cache(maxsize=None)
def shape_area(name: str) -> float:
    """Area of shape ``name`` at circumradius 1 (measured on a 1024² grid, about 0.1 % accurate)."""
    axis = (torch.arange(1024, dtype=torch.float32) + 0.5) / 512 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return float((SHAPES[name](x, y) < 0).float().mean()) * 4


# --- configuration ----------------------------------------------------------------------------

MIN_IMAGE_SIZE = 64          # below this, small objects (< 1/300 of the area) are under ~13 px²
MAX_IMAGE_SIZE = 512
MAX_OBJECTS = 32
MIN_CROP_SIZE = 16
MIN_OBJECT_AREA = 6.0        # px²: no object is drawn smaller, whatever the image size
MIN_VISIBLE_PIXELS = 4       # objects with fewer visible pixels are removed
_EDGE_MARGIN = 8e-2          # objects' areas stay this far (relatively) inside their bucket


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Lengths are pixels, areas fractions of the image area.

    - ``image_size``: side of the square images, ``MIN_IMAGE_SIZE``..``MAX_IMAGE_SIZE`` (64..512);
    - ``min_objects``, ``max_objects``: objects placed per image (uniform count); mostly hidden
      objects are removed afterwards, so an image can end with fewer (never with none in practice:
      the top object is never occluded);
    - ``classes``: shape names from ``SHAPES``, most frequent first;
    - ``zipf_alpha``: class ``c`` has frequency ∝ ``1 / (c + 1) ** zipf_alpha`` (0 = uniform);
    - ``size_mix``: probabilities of drawing a small, medium and large object (normalised);
    - ``min_area``: smallest object area (at least ``MIN_OBJECT_AREA`` px²);
    - ``max_area``: largest object area (the large bucket runs from 3 % to this);
    - ``rotation_deg``: rotation uniform in ±``rotation_deg``, on top of a random quarter turn;
    - ``contrast``: (low, high) range of the colour distance between an object (or a clutter
      primitive) and the background under its centre, per RGB channel on average;
    - ``clutter``: distractor density, 1 = 24 strokes and blobs per 128×128 image (0 = none);
    - ``texture``: amplitude factor of the background's mid-frequency noise and gratings;
    - ``noise``: standard deviation of the Gaussian pixel noise;
    - ``min_visible``: objects whose visible mask keeps less than this fraction of their full
      shape are removed (and not drawn).
    """
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    classes: tuple[str, ...] = CLASS_NAMES
    zipf_alpha: float = 1.0
    size_mix: tuple[float, float, float] = (0.40, 0.35, 0.25)
    min_area: float = 0.0008
    max_area: float = 0.2
    rotation_deg: float = 15.0
    contrast: tuple[float, float] = (0.1, 0.4)
    clutter: float = 1.0
    texture: float = 1.0
    noise: float = 0.03
    min_visible: float = 0.4

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f"config.{name}={getattr(self, name)!r} is not valid; {why}")

        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value <= high:
                fail(name, f"it must be an int in {low}..{high}")

        def real(name: str, low: float, high: float = math.inf) -> None:
            value = getattr(self, name)
            if not _is_real(value) or not low <= value <= high:
                fail(name, f"it must be a finite number in [{low}, {high}]")

        integer("image_size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        integer("min_objects", 1, MAX_OBJECTS)
        integer("max_objects", 1, MAX_OBJECTS)
        if self.min_objects > self.max_objects:
            fail("min_objects", f"it must be <= max_objects={self.max_objects!r}")
        classes = self.classes
        if (not isinstance(classes, tuple) or len(classes) < 2 or len(set(classes)) != len(classes)
                or any(name not in SHAPES for name in classes)):
            fail("classes", f"pass a tuple of at least 2 distinct names from {tuple(SHAPES)}")
        real("zipf_alpha", 0.0, 10.0)
        mix = self.size_mix
        if (not isinstance(mix, tuple) or len(mix) != 3 or not all(_is_real(p) and p >= 0 for p in mix)
                or sum(mix) <= 0):
            fail("size_mix", "pass 3 numbers >= 0 (small, medium, large) with a positive sum")
        real("min_area", 0.0, SIZE_BUCKETS["small"][1] / 2)
        real("max_area", SIZE_BUCKETS["large"][0] * 1.5, 0.3)
        small_floor = max(self.min_area, MIN_OBJECT_AREA / self.image_size**2)
        if mix[0] > 0 and small_floor >= SIZE_BUCKETS["small"][1] * (1 - 2 * _EDGE_MARGIN):
            fail("image_size", "it is too small for small objects (< 1/300 of the area but at least "
                 f"{MIN_OBJECT_AREA} px²); use a larger image or size_mix[0]=0")
        real("rotation_deg", 0.0, 180.0)
        low_high = self.contrast
        if (not isinstance(low_high, tuple) or len(low_high) != 2
                or not all(_is_real(c) and 0 <= c <= 1 for c in low_high) or low_high[0] > low_high[1]):
            fail("contrast", "pass (low, high) with 0 <= low <= high <= 1")
        real("clutter", 0.0, 20.0)
        real("texture", 0.0, 5.0)
        real("noise", 0.0, 1.0)
        real("min_visible", 0.0, 1.0)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_probabilities(self) -> torch.Tensor:
        """The Zipf class frequencies ``(num_classes,)``, summing to 1."""
        weights = 1 / torch.arange(1, self.num_classes + 1, dtype=torch.float64) ** self.zipf_alpha
        return weights / weights.sum()

    def area_ranges(self) -> torch.Tensor:
        """``(3, 2)`` (low, high) area fractions drawn for the small, medium and large bucket."""
        small_floor = max(self.min_area, MIN_OBJECT_AREA / self.image_size**2)
        edges = [small_floor, SIZE_BUCKETS["small"][1], SIZE_BUCKETS["medium"][1], self.max_area]
        ranges = torch.tensor([[edges[i], edges[i + 1]] for i in range(3)], dtype=torch.float64)
        # stay clear of the boundaries so rasterisation and mild occlusion keep the bucket
        ranges[1:, 0] *= 1 + _EDGE_MARGIN
        ranges[:2, 1] *= 1 - _EDGE_MARGIN
        return ranges


# --- random streams ---------------------------------------------------------------------------

_SCENE_STREAM, _CROP_STREAM = 11, 12
_OBJECT_UNIFORMS = 14   # per slot: class, bucket, area, x, y, rotation, quarter, contrast, 3 hue,
                        # 2 shade, opacity
_BACKGROUND_LOW, _BACKGROUND_MID, _GRATINGS = 3, 10, 2
_BACKGROUND_UNIFORMS = 3 + 4 * _BACKGROUND_LOW**2 + 3 * _BACKGROUND_MID**2 + _GRATINGS * 7
_CLUTTER_UNIFORMS = 14  # per primitive: x, y, kind, length, angle, width, rx, ry, soft, alpha, contrast, 3 hue
_CLUTTER_PER_128 = 24


def _generator(seed: int, tag: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, tag, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _num_clutter(config: SceneConfig, size: int) -> int:
    return int(round(config.clutter * _CLUTTER_PER_128 * size * size / 128**2))


def _draws(seed: int, tag: int, indices: range, num_objects: int, num_clutter: int, size: int):
    """Every random number of images ``indices``, each from its own stream ``(seed, tag, index)``.

    The order inside a stream is objects, background, clutter, noise, so changing the clutter
    density leaves objects and background unchanged.
    """
    objects, background, clutter, noise = [], [], [], []
    for index in indices:
        rng = _generator(seed, tag, index)
        objects.append(torch.rand(1 + num_objects * _OBJECT_UNIFORMS, generator=rng))
        background.append(torch.rand(_BACKGROUND_UNIFORMS, generator=rng))
        clutter.append(torch.rand(num_clutter * _CLUTTER_UNIFORMS, generator=rng))
        noise.append(torch.randn(3, size, size, generator=rng))
    return (torch.stack(objects), torch.stack(background),
            torch.stack(clutter).reshape(len(indices), num_clutter, _CLUTTER_UNIFORMS), torch.stack(noise))


# --- rendering --------------------------------------------------------------------------------

def _patch_side(extent: torch.Tensor, size: int) -> torch.Tensor:
    """The smallest side in 8, 12, 16, 24, 32, 48, ... holding ``extent`` pixels, at most ``size``."""
    sides = torch.tensor(sorted({s for k in range(8) for s in (8 << k, 12 << k) if s < size} | {size}))
    which = torch.bucketize(extent, sides.to(extent.dtype))
    return sides[which.clamp_max(len(sides) - 1)]


def _patch_grid(cx, cy, side: int, size: int):
    """Patch origins ``(m,)`` (clamped into the image) and pixel-centre coordinates ``(m, side)``."""
    ox = (cx - side / 2).floor().long().clamp(0, size - side)
    oy = (cy - side / 2).floor().long().clamp(0, size - side)
    steps = torch.arange(side)
    return ox, oy, ox[:, None] + steps + 0.5, oy[:, None] + steps + 0.5


def _flat_index(image, ox, oy, side: int, size: int) -> torch.Tensor:
    """Flat pixel indices ``(m, side, side)`` into ``(b * size * size)`` of patches at ``(ox, oy)``."""
    steps = torch.arange(side)
    rows = (oy[:, None] + steps)[:, :, None]
    cols = (ox[:, None] + steps)[:, None, :]
    return image[:, None, None] * (size * size) + rows * size + cols


def _contrast_colour(base: torch.Tensor, u: torch.Tensor, contrast: tuple[float, float]) -> torch.Tensor:
    """Colours ``(..., 3)`` that differ from ``base`` by a random offset of mean absolute size in
    ``contrast``; ``u`` ``(..., 4)`` uniforms (size, 3 for the direction). Offsets that would leave
    [0, 1] are mirrored to the other side of ``base``."""
    low, high = contrast
    direction = u[..., 1:4] * 2 - 1
    direction = direction / direction.abs().mean(-1, keepdim=True).clamp_min(1e-3)
    offset = (low + (high - low) * u[..., :1]) * direction
    colour = torch.where((base + offset - 0.5).abs() <= 0.5, base + offset, base - offset)
    return colour.clamp(0, 1)


@functools.lru_cache(maxsize=None)
def _upsampling_matrix(steps: int, size: int, align_corners: bool) -> torch.Tensor:
    """``(size, steps)``: bicubic upsampling of ``steps`` samples to ``size`` as a matrix."""
    eye = torch.eye(steps).reshape(steps, 1, 1, steps)
    rows = F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=align_corners)
    return rows.reshape(steps, size).T.contiguous()


def _background(u: torch.Tensor, size: int, texture: float) -> torch.Tensor:
    """Smooth random colour fields with mid-frequency noise and gratings, channels last:
    ``(b * size * size, 3)`` (row-major pixels of each image, image after image).

    Every term is separable, so the whole field is one batched matrix product ``L @ R`` with
    ``L`` ``(b, 3, K, size)`` and ``R`` ``(b, K, size)``: bicubic upsampling ``A X Aᵀ`` of a 3×3 colour
    field and of a 10×10 noise field, and ``cos(fx·x + fy·y + φ) = cos(fx·x + φ) cos(fy·y) −
    sin(fx·x + φ) sin(fy·y)`` for each grating.
    """
    b = len(u)
    n_low, n_mid = 3 + 4 * _BACKGROUND_LOW**2, 3 * _BACKGROUND_MID**2
    # a base colour, per-channel (hue) and shared (brightness) variation at 3×3 control points
    base = 0.2 + 0.6 * u[:, :3, None, None]
    hue = 0.2 * (2 * u[:, 3:3 + 3 * _BACKGROUND_LOW**2] - 1).reshape(b, 3, _BACKGROUND_LOW, _BACKGROUND_LOW)
    brightness = 0.2 * (2 * u[:, 3 + 3 * _BACKGROUND_LOW**2:n_low] - 1).reshape(b, 1, _BACKGROUND_LOW,
                                                                                 _BACKGROUND_LOW)
    low = base + hue + brightness
    mid = (0.12 * texture) * (u[:, n_low:n_low + n_mid] * 2 - 1).reshape(b, 3, _BACKGROUND_MID,
                                                                          _BACKGROUND_MID)
    up_low = _upsampling_matrix(_BACKGROUND_LOW, size, True)          # (size, 3)
    up_mid = _upsampling_matrix(_BACKGROUND_MID, size, False)         # (size, 10)
    # rows: the x-basis (columns of the image); left: per channel, the y-basis times coefficients
    left = [up_low @ low.transpose(2, 3), up_mid @ mid.transpose(2, 3)]   # (b, 3, H, k)
    right = [up_low.T.expand(b, -1, -1), up_mid.T.expand(b, -1, -1)]      # (b, k, W)
    if texture > 0:
        g = u[:, n_low + n_mid:].reshape(b, _GRATINGS, 7)
        period = 3 + 9 * g[..., 0]                            # px
        angle = math.pi * g[..., 1]
        phase = 2 * math.pi * g[..., 2]
        amplitude = 0.05 * texture * g[..., 3]
        tint = 0.7 + 0.6 * g[..., 4:7]                        # (b, G, 3): mostly grey
        axis = torch.arange(size, dtype=torch.float32) + 0.5
        ax = (2 * math.pi * angle.cos() / period)[..., None] * axis + phase[..., None]   # (b, G, W)
        ay = (2 * math.pi * angle.sin() / period)[..., None] * axis                      # (b, G, H)
        rows = torch.cat([ay.cos(), -ay.sin()], dim=1)                                   # (b, 2G, H)
        weight = (amplitude[..., None] * tint).repeat(1, 2, 1)                           # (b, 2G, 3)
        left.append(rows.transpose(1, 2)[:, None] * weight.transpose(1, 2)[:, :, None])  # (b, 3, H, 2G)
        right.append(torch.cat([ax.cos(), ax.sin()], dim=1))                             # (b, 2G, W)
    left = torch.cat(left, dim=3).permute(0, 2, 1, 3)                                    # (b, H, 3, K)
    right = torch.cat(right, dim=1)                                                      # (b, K, W)
    field = (left.reshape(b, size * 3, -1) @ right).reshape(b, size, 3, size)
    return field.transpose(2, 3).clamp_(0, 1).reshape(b * size * size, 3)


def _add_clutter(flat: torch.Tensor, u: torch.Tensor, config: SceneConfig, size: int) -> torch.Tensor:
    """Composite strokes and soft blobs ``u`` ``(b, J, _CLUTTER_UNIFORMS)`` onto the channels-last
    canvas ``flat`` ``(b * size * size, 3)``, in place, one primitive slot at a time."""
    b, J = u.shape[:2]
    if J == 0:
        return flat
    cx, cy = u[..., 0] * size, u[..., 1] * size                       # (b, J)
    is_stroke = u[..., 2] < 0.65
    max_length = 3 + 0.07 * size
    length = 3 + (max_length - 3) * u[..., 3]
    angle = math.pi * u[..., 4]
    width = 0.7 + 1.3 * u[..., 5]
    rx, ry = 1.2 + 0.016 * size * u[..., 6], 1.0 + 0.01 * size * u[..., 7]
    soft = 0.2 + 0.3 * u[..., 8]       # edge width relative to the radius: blurry
    alpha = 0.55 + 0.45 * u[..., 9]
    side = int(_patch_side(torch.tensor([max_length + 4.0]), size)[0])
    image = torch.arange(b)
    centre = (cy.long().clamp(0, size - 1) * size + cx.long().clamp(0, size - 1)) + image[:, None] * size**2
    for j in range(J):
        ox, oy, xs, ys = _patch_grid(cx[:, j], cy[:, j], side, size)
        dx = (xs - cx[:, j, None])[:, None, :]
        dy = (ys - cy[:, j, None])[:, :, None]
        cos, sin = angle[:, j, None, None].cos(), angle[:, j, None, None].sin()
        along, across = cos * dx + sin * dy, cos * dy - sin * dx
        half = (length[:, j] / 2)[:, None, None]
        distance = torch.hypot((along.abs() - half).clamp_min(0), across) - (width[:, j] / 2)[:, None, None]
        stroke = (0.5 - distance).clamp(0, 1)
        radius = torch.hypot(along / rx[:, j, None, None], across / ry[:, j, None, None])
        blob = torch.sigmoid((1 - radius) / soft[:, j, None, None])
        coverage = torch.where(is_stroke[:, j, None, None], stroke, blob) * alpha[:, j, None, None]
        colour = _contrast_colour(flat[centre[:, j]], u[:, j, 10:14], config.contrast)
        index = _flat_index(image, ox, oy, side, size)
        under = flat[index]
        flat[index] = under + coverage[..., None] * (colour[:, None, None] - under)
    return flat


@dataclasses.dataclass
class _Layout:
    """Objects of a batch of ``b`` images in ``K`` depth slots (slot 0 is drawn first)."""
    present: torch.Tensor   # (b, K) bool
    label: torch.Tensor     # (b, K) long, index into config.classes
    cx: torch.Tensor        # (b, K) centre, pixels
    cy: torch.Tensor
    radius: torch.Tensor    # (b, K) circumradius, pixels
    angle: torch.Tensor     # (b, K) radians
    colour_u: torch.Tensor  # (b, K, 4) uniforms for the contrast colour
    shade: torch.Tensor     # (b, K, 2) shading gradient per radius
    opacity: torch.Tensor   # (b, K): the background texture shows through a little


def _scene_layout(u: torch.Tensor, config: SceneConfig) -> _Layout:
    b, K, size = len(u), config.max_objects, config.image_size
    count = config.min_objects + (u[:, 0] * (K - config.min_objects + 1)).long().clamp_max(
        K - config.min_objects)
    v = u[:, 1:].reshape(b, K, _OBJECT_UNIFORMS)
    present = torch.arange(K) < count[:, None]
    cumulative = config.class_probabilities().cumsum(0).float()
    label = torch.bucketize(v[..., 0].contiguous(), cumulative, right=True).clamp_max(config.num_classes - 1)
    mix = torch.tensor(config.size_mix, dtype=torch.float32)
    bucket = torch.bucketize(v[..., 1].contiguous(), (mix / mix.sum()).cumsum(0), right=True).clamp_max(2)
    ranges = config.area_ranges().float().log()
    log_area = ranges[bucket, 0] + (ranges[bucket, 1] - ranges[bucket, 0]) * v[..., 2]
    unit = torch.tensor([shape_area(name) for name in config.classes])
    radius = (log_area.exp() * size * size / unit[label]).sqrt().clamp_max(size / 2 - 1.5)
    # back to front by decreasing area; absent slots go last
    key = torch.where(present, log_area, -math.inf)
    order = key.argsort(dim=1, descending=True, stable=True)
    take = lambda t: t.gather(1, order) if t.ndim == 2 else t.gather(1, order[..., None].expand_as(t))
    label, radius, v = take(label), take(radius), take(v)
    span = size - 2 * radius - 2
    cx = radius + 1 + span * v[..., 3]
    cy = radius + 1 + span * v[..., 4]
    angle = math.radians(config.rotation_deg) * (2 * v[..., 5] - 1) + math.pi / 2 * (v[..., 6] * 4).floor()
    return _Layout(present, label, cx, cy, radius, angle, v[..., 7:11], 0.3 * (v[..., 11:13] - 0.5),
                   0.8 + 0.2 * v[..., 13])


def _object_patches(layout: _Layout, classes: Sequence[str], size: int):
    """Render every present object into its patch; yields, per patch side, the objects' flat
    ``(image, slot)`` indices, flat pixel indices ``(m, s, s)`` and signed distances in pixels."""
    image, slot = layout.present.nonzero(as_tuple=True)
    radius = layout.radius[image, slot]
    sides = _patch_side(2 * radius + 3, size)
    for side in sides.unique().tolist():
        pick = (sides == side).nonzero().squeeze(1)
        i, k, r = image[pick], slot[pick], radius[pick]
        cx, cy = layout.cx[i, k], layout.cy[i, k]
        ox, oy, xs, ys = _patch_grid(cx, cy, side, size)
        dx = ((xs - cx[:, None]) / r[:, None])[:, None, :]
        dy = ((ys - cy[:, None]) / r[:, None])[:, :, None]
        angle = layout.angle[i, k]
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        x, y = cos * dx + sin * dy, -sin * dx + cos * dy        # rotate the pixels back
        distance = torch.empty(len(pick), side, side)
        labels = layout.label[i, k]
        for c in labels.unique().tolist():
            same = labels == c
            distance[same] = SHAPES[classes[c]](x[same], y[same])
        yield i, k, _flat_index(i, ox, oy, side, size), distance * r[:, None, None]


def _instance_ids(patches, keep: torch.Tensor, b: int, size: int) -> torch.Tensor:
    """``(b * size * size,)`` uint8: 1 + the slot of the top kept object covering a pixel, else 0."""
    ids = torch.zeros(b * size * size, dtype=torch.uint8)
    for image, slot, index, distance in patches:
        value = torch.where((distance < 0) & keep[image, slot][:, None, None],
                            (slot[:, None, None] + 1).to(torch.uint8), torch.zeros((), dtype=torch.uint8))
        ids.scatter_reduce_(0, index.reshape(-1), value.reshape(-1), reduce="amax")
    return ids


def _render(flat: torch.Tensor, layout: _Layout, config: SceneConfig, size: int):
    """Draw ``layout`` onto the channels-last canvas ``flat`` ``(b * size * size, 3)`` in place;
    returns kept ``(b, K)``, visible areas and boxes ``(b, K, 4)`` and the slot-id map
    ``(b, size, size)`` (1 + slot of the visible object, 0 for background)."""
    b, K = layout.present.shape
    classes = config.classes
    patches = list(_object_patches(layout, classes, size))

    def visibility(keep):
        ids = _instance_ids(patches, keep, b, size)
        area = torch.zeros(b, K)
        boxes = torch.zeros(b, K, 4)
        full = torch.zeros(b, K)
        for image, slot, index, distance in patches:
            visible = ids[index] == (slot + 1)[:, None, None]
            area[image, slot] = visible.sum((1, 2)).float()
            full[image, slot] = (distance < 0).sum((1, 2)).float()
            rows, cols = visible.any(2), visible.any(1)             # (m, s)
            side = rows.shape[1]
            first = lambda m: m.float().argmax(1)
            last = lambda m: side - m.flip(1).float().argmax(1)
            origin_x, origin_y = index[:, 0, 0] % size, (index[:, 0, 0] // size) % size
            boxes[image, slot] = torch.stack([origin_x + first(cols), origin_y + first(rows),
                                              origin_x + last(cols), origin_y + last(rows)], 1).float()
        return ids, area, full, boxes

    keep = layout.present
    ids, area, full, boxes = visibility(keep)
    needed = torch.maximum(config.min_visible * full, torch.tensor(float(MIN_VISIBLE_PIXELS)))
    kept = keep & (area >= needed)
    if not torch.equal(kept, keep):
        # removing an object only uncovers the ones beneath it, so one more pass is final
        ids, area, _, boxes = visibility(kept)

    centre = (layout.cy.long().clamp(0, size - 1) * size + layout.cx.long().clamp(0, size - 1)
              + torch.arange(b)[:, None] * size * size)
    colour = _contrast_colour(flat[centre], layout.colour_u, config.contrast)   # (b, K, 3)
    for depth in range(K):                     # back to front
        for image, slot, index, distance in patches:
            pick = (slot == depth) & kept[image, slot]
            if not pick.any():
                continue
            i, index, distance = image[pick], index[pick], distance[pick]
            coverage = (0.5 - distance).clamp(0, 1)[..., None] * layout.opacity[i, depth, None, None, None]
            # a gentle linear shading across the object
            r = layout.radius[i, depth]
            cx, cy = layout.cx[i, depth], layout.cy[i, depth]
            xs = (index[:, 0, :] % size).float() + 0.5
            ys = ((index[:, :, 0] // size) % size).float() + 0.5
            gx, gy = layout.shade[i, depth, 0], layout.shade[i, depth, 1]
            shading = (1 + (gx / r)[:, None, None] * (xs - cx[:, None])[:, None, :]
                       + (gy / r)[:, None, None] * (ys - cy[:, None])[:, :, None])
            paint = (colour[i, depth][:, None, None, :] * shading[..., None]).clamp(0, 1)
            under = flat[index]
            flat[index] = under + coverage * (paint - under)
    return kept, area, boxes, ids.reshape(b, size, size)


# --- datasets ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scenes:
    """Scene images with their annotations.

    - ``images``: ``(n, 3, H, W)`` float32 in [0, 1];
    - ``boxes``: per image ``(m_i, 4)`` float32 ``x1, y1, x2, y2`` in pixels, tight around the
      visible mask (``x2``, ``y2`` one past the last mask column, row);
    - ``labels``: per image ``(m_i,)`` long in ``0..num_classes-1`` (COCO category id = label + 1);
    - ``masks``: per image ``(m_i, H, W)`` bool visible masks (disjoint within an image);
    - ``areas``: per image ``(m_i,)`` float32 visible mask areas in pixels²;
    - ``instance_maps``: ``(n, H, W)`` uint8, 0 for background and ``j + 1`` where object ``j`` of
      the image is visible (objects are listed back to front);
    - ``class_names``: the class of each label; ``start``: the scene index of ``images[0]``.
    """
    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    masks: list[torch.Tensor]
    areas: list[torch.Tensor]
    instance_maps: torch.Tensor
    class_names: tuple[str, ...]
    start: int = 0

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def num_objects(self) -> int:
        return sum(len(labels) for labels in self.labels)

    def targets(self) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes", "labels", "masks"}``, the torchvision detection target format."""
        return [{"boxes": b, "labels": l, "masks": m} for b, l, m in zip(self.boxes, self.labels, self.masks)]


def _chunk_size(size: int) -> int:
    return max(1, 2**22 // (size * size))


def _check_count(name: str, value: object) -> int:
    return check_positive_int(name, value)


def _check_config(config: object) -> SceneConfig:
    if not isinstance(config, SceneConfig):
        raise ValueError(f"config={config!r} is not valid; pass a SceneConfig")
    return config


def _check_start(start: object) -> int:
    if not isinstance(start, numbers.Integral) or isinstance(start, bool) or start < 0:
        raise ValueError(f"start={start!r} is not valid; it must be an int >= 0")
    return int(start)


def _generate(config: SceneConfig, size: int, seed: int, tag: int, indices: range, num_objects: int,
              layout_fn: Callable[[torch.Tensor, range], _Layout]):
    """Images ``(len(indices), 3, size, size)`` of scenes ``indices`` and, per chunk, ``_render``'s
    ``(kept, areas, boxes, slot ids)`` plus the labels."""
    num_clutter = _num_clutter(config, size)
    images = torch.empty(len(indices), 3, size, size)
    parts = []
    chunk = _chunk_size(size)
    for lo in range(0, len(indices), chunk):
        part = indices[lo:lo + chunk]
        u_obj, u_bg, u_cl, noise = _draws(seed, tag, part, num_objects, num_clutter, size)
        layout = layout_fn(u_obj, part)
        flat = _add_clutter(_background(u_bg, size, config.texture), u_cl, config, size)
        kept, area, boxes, ids = _render(flat, layout, config, size)
        out = images[lo:lo + len(part)]
        torch.add(flat.reshape(len(part), size, size, 3).permute(0, 3, 1, 2), noise,
                  alpha=config.noise, out=out)
        out.clamp_(0, 1)
        parts.append((kept, area, boxes, ids, layout.label))
    return images, parts


def make_scenes(num_images: int, config: SceneConfig = SceneConfig(), seed: int = 0, *,
                start: int = 0) -> Scenes:
    """Scenes ``start .. start + num_images - 1`` drawn with ``config``; see the module docstring.

    Image ``j`` depends only on ``(seed, start + j)`` and ``config``, so any subset can be redrawn
    alone. Every placed object that survives occlusion is drawn and annotated.
    """
    num_images = _check_count("num_images", num_images)
    config = _check_config(config)
    seed, start = check_seed(seed), _check_start(start)
    size = config.image_size
    images, parts = _generate(config, size, seed, _SCENE_STREAM, range(start, start + num_images),
                              config.max_objects, lambda u, indices: _scene_layout(u, config))
    boxes, labels, masks, areas, instance_maps = [], [], [], [], []
    for kept, area, box, slot_ids, label in parts:
        # renumber the kept objects of each image 1..m_i in draw order
        rank = (kept.cumsum(1) * kept).to(torch.uint8)
        lookup = torch.cat([torch.zeros(len(kept), 1, dtype=torch.uint8), rank], dim=1)
        maps = lookup.gather(1, slot_ids.reshape(len(kept), -1).long()).reshape(slot_ids.shape)
        counts = kept.sum(1).tolist()
        image_of, _ = kept.nonzero(as_tuple=True)
        masks += (maps[image_of] == rank[kept][:, None, None]).split(counts)
        boxes += box[kept].split(counts)
        labels += label[kept].split(counts)
        areas += area[kept].split(counts)
        instance_maps.append(maps)
    return Scenes(images=images, boxes=boxes, labels=labels, masks=masks, areas=areas,
                  instance_maps=torch.cat(instance_maps), class_names=config.classes, start=start)


def make_object_crops(num_images: int, config: SceneConfig = SceneConfig(), seed: int = 0,
                      size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A single-object classification set: one roughly centred object per ``size × size`` crop.

    Returns ``X`` ``(num_images, 3, size, size)`` float32 in [0, 1] and ``y`` ``(num_images,)`` long.
    Labels cycle through the classes (image ``j`` has class ``(start + j) % num_classes``, here
    ``start = 0``), so every class is equally common. Objects span 45–85 % of the crop, are shifted
    by up to 6 % of it and use the config's rotation, contrast, clutter, texture and noise (clutter
    density per pixel as in scenes). Streams are independent of ``make_scenes``'s for the same seed.
    """
    num_images = _check_count("num_images", num_images)
    config = _check_config(config)
    seed = check_seed(seed)
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or not MIN_CROP_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"size={size!r} is not valid; it must be an int in {MIN_CROP_SIZE}..{MAX_IMAGE_SIZE}")
    size = int(size)

    def layout(u: torch.Tensor, indices: range) -> _Layout:
        b, v = len(indices), u[:, 1:]
        label = torch.tensor(list(indices)) % config.num_classes
        radius = size * (0.225 + 0.2 * v[:, 2])
        shift = 0.06 * size * (2 * v[:, 3:5] - 1)
        angle = (math.radians(config.rotation_deg) * (2 * v[:, 5] - 1)
                 + math.pi / 2 * (v[:, 6] * 4).floor())
        return _Layout(present=torch.ones(b, 1, dtype=torch.bool), label=label[:, None],
                       cx=(size / 2 + shift[:, 0])[:, None], cy=(size / 2 + shift[:, 1])[:, None],
                       radius=radius[:, None], angle=angle[:, None], colour_u=v[:, None, 7:11],
                       shade=0.3 * (v[:, None, 11:13] - 0.5), opacity=0.8 + 0.2 * v[:, None, 13])

    X, _ = _generate(config, size, seed, _CROP_STREAM, range(num_images), 1, layout)
    return X, torch.arange(num_images) % config.num_classes


def scenes_to_coco(scenes: Scenes, include_masks: bool = True) -> dict:
    """A COCO-format ground-truth dict for ``scenes`` that ``pycocotools.coco.COCO`` can index.

    - images: ``id`` = 1 + position in ``scenes`` (as in ``labkit.metrics.detection``), ``width``,
      ``height``, ``file_name``;
    - annotations: ``id`` 1..N, ``image_id``, ``category_id`` = label + 1, ``bbox`` ``[x, y, w, h]``
      of the visible-mask box, ``area`` = visible mask pixel count (COCO's convention, which
      pycocotools uses for the size buckets), ``iscrowd`` 0, and with ``include_masks`` a
      ``segmentation`` as compressed RLE (for ``iouType="segm"``);
    - categories: ``id`` = label + 1, ``name`` from ``scenes.class_names``.

    Build the index without a file: ``coco = COCO(); coco.dataset = d; coco.createIndex()``.
    """
    if not isinstance(scenes, Scenes):
        raise ValueError(f"scenes={type(scenes).__name__} is not valid; pass the Scenes from make_scenes")
    height, width = scenes.images.shape[-2:]
    images, annotations = [], []
    if include_masks:
        from pycocotools import mask as mask_utils
    for i, (boxes, labels, areas, masks) in enumerate(zip(scenes.boxes, scenes.labels, scenes.areas,
                                                          scenes.masks)):
        images.append({"id": i + 1, "width": int(width), "height": int(height),
                       "file_name": f"scene_{scenes.start + i:06d}.png"})
        if include_masks and len(labels):
            encoded = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
        for j, (box, label, area) in enumerate(zip(boxes.tolist(), labels.tolist(), areas.tolist())):
            annotation = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                          "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                          "area": float(area), "iscrowd": 0}
            if include_masks:
                rle = encoded[j]
                annotation["segmentation"] = {"size": [int(height), int(width)],
                                              "counts": rle["counts"].decode("ascii")}
            annotations.append(annotation)
    categories = [{"id": c + 1, "name": name, "supercategory": "shape"}
                  for c, name in enumerate(scenes.class_names)]
    return {"info": {"description": "labkit shape scenes", "version": "1"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}

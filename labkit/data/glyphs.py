r"""Glyphs: a procedural, fine-grained image dataset with as many classes as you ask for.

Each class is a glyph: 2–4 strokes (line segments and circular arcs), often joined end-to-end or
to the middle of an earlier stroke, so a glyph looks like a small made-up letter. Its geometry is
drawn from random streams that depend only on the seed and the class id (and its family), so
adding classes never changes the existing ones, and held-out classes are just further class ids.
Every image of a class is that glyph with per-sample nuisance: endpoint and curvature jitter,
rotation, scale, translation, stroke thickness, edge blur, pixel noise and an optional
low-frequency background texture.

Classes come in families of ``FAMILY_SIZE`` siblings, like species of one genus: siblings share
the family's strokes up to a small displacement and differ in their last stroke. With the
nuisance moving strokes by about a pixel, a small CNN trained on ten images per class of 30
classes scores well below 100% (about 85–90% in our scouting), a fine-grained regime at CPU
scale; ``family_size=1`` gives unrelated, easier classes (about 95%).

**Coordinates.** The image spans ``[-1, 1]`` on both axes (x to the right, y down), so a length
of ``2 / size`` is one pixel; at 32×32, 0.125 is 2 px. Each glyph is centred and scaled to fit a
circle of radius ``GLYPH_RADIUS`` so that the nuisance never pushes it out of the frame.

**Prototype layout.** ``glyph_prototypes`` returns ``(num_classes, MAX_STROKES, 6)`` float32:

==========  =====================================================================
column      meaning
==========  =====================================================================
0, 1        start point ``(x0, y0)``
2, 3        end point ``(x1, y1)``
4           bend ``b``: 0 for a segment; otherwise an arc through both ends whose
            sagitta is ``b`` half-chords (``|b| = 1`` a half circle, ``|b| > 1`` a
            major arc), bulging along ``(−dy, dx)`` for a chord ``(dx, dy)`` when ``b > 0``
5           present: 1 for a stroke of the glyph, 0 for an unused slot
==========  =====================================================================

Rendering is vectorized: the distances from every pixel to every stroke of a batch of images are
one ``(strokes, size * size)`` tensor; the only Python loops are over classes (seeding their
streams) and over memory-sized chunks of images, so thousands of images take a fraction of a
second.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from labkit.config import as_generator, check_positive_int

if TYPE_CHECKING:  # small_data imports this module at load time; ImageSplit is imported lazily
    from labkit.data.small_data import ImageSplit

MAX_STROKES = 4
MIN_STROKES = 2
FAMILY_SIZE = 4         # sibling classes per family: the fine-grained part
SIBLING_SPREAD = 0.06   # std of a sibling's displacement of the shared strokes (before centring)
GLYPH_RADIUS = 0.62
STROKE_WIDTH = 0.13     # 2.1 px at 32×32, before thickness jitter
EDGE_SOFTNESS = 0.025   # sigmoid edge scale, 0.4 px at 32×32
MIN_BEND = 0.05         # below this a stroke is rendered as a straight segment
MIN_IMAGE_SIZE = 8
_CHUNK_ELEMENTS = 2**20  # images × strokes × pixels per rendering chunk (4 MB per tensor)

# stream tags, so that prototypes and each split's nuisance come from independent streams
_PROTOTYPE_STREAM, _MAKE_STREAM, _TRAIN_STREAM, _TEST_STREAM = 0, 1, 2, 3
_OPEN_TRAIN_STREAM, _OPEN_TEST_STREAM = 4, 5
_FAMILY_TAG, _CLASS_TAG = 0, 1
_UNIFORMS_PER_STROKE = 10


@dataclasses.dataclass(frozen=True)
class GlyphJitter:
    """Per-sample nuisance. Lengths are in image units (the image spans [-1, 1]: 0.0625 = 1 px at 32).

    - ``rotation_deg``: uniform rotation in ``±rotation_deg`` degrees;
    - ``scale``: uniform scale factor in ``1 ± scale``;
    - ``shift``: uniform translation in ``±shift`` on each axis;
    - ``endpoint``: std of independent Gaussian jitter on every stroke end;
    - ``bend``: std of Gaussian jitter on arc bends (segments stay straight);
    - ``thickness``: stroke width factor uniform in ``1 ± thickness``;
    - ``blur``: extra edge softness, uniform in ``[0, blur]``, added to ``EDGE_SOFTNESS``;
    - ``noise``: std of Gaussian pixel noise;
    - ``texture``: amplitude of a smooth random background (0 = black background).

    ``GlyphJitter()`` is the default nuisance; ``GlyphJitter.none()`` renders clean prototypes.
    """
    rotation_deg: float = 15.0
    scale: float = 0.15
    shift: float = 0.125
    endpoint: float = 0.04
    bend: float = 0.1
    thickness: float = 0.25
    blur: float = 0.025
    noise: float = 0.05
    texture: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not is_real or not math.isfinite(value) or value < 0:
                raise ValueError(f"jitter.{field.name}={value!r} is not valid; it must be a finite "
                                 "number >= 0")
        for name in ("scale", "thickness"):
            if getattr(self, name) >= 1:
                raise ValueError(f"jitter.{name}={getattr(self, name)!r} is too large; it must be < 1")

    @classmethod
    def none(cls) -> "GlyphJitter":
        """No nuisance at all: every image of a class is the same clean render."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})

    def scaled(self, factor: float) -> "GlyphJitter":
        """Every field multiplied by ``factor`` (0 gives ``none()``, 2 doubles the nuisance)."""
        return GlyphJitter(**{f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self)})


def _check_int(name: str, value: object, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}={value!r} is not valid; it must be an int >= {low}")
    return int(value)


def check_seed(seed: object) -> int:
    """Return ``seed`` if it is an int >= 0; otherwise raise a ValueError naming it."""
    return _check_int("seed", seed, 0)


def check_image_size(size: object) -> int:
    """Return ``size`` if it is an int >= ``MIN_IMAGE_SIZE``; otherwise raise a ValueError."""
    return _check_int("size", size, MIN_IMAGE_SIZE)


def _as_jitter(jitter: GlyphJitter | float) -> GlyphJitter:
    if isinstance(jitter, GlyphJitter):
        return jitter
    is_real = isinstance(jitter, numbers.Real) and not isinstance(jitter, bool)
    if not is_real or not math.isfinite(jitter) or jitter < 0:
        raise ValueError(f"jitter={jitter!r} is not valid; pass a GlyphJitter or a factor >= 0 of "
                         "the default nuisance")
    try:
        return GlyphJitter().scaled(float(jitter))
    except ValueError as error:
        raise ValueError(f"jitter={jitter!r} is too large: {error}") from None


def _stream(seed: int, *keys: int) -> torch.Generator:
    """A torch generator for the stream ``(seed, *keys)``; SeedSequence mixes the keys well."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


# --- geometry -------------------------------------------------------------------------------

def _arc_frame(p0: torch.Tensor, p1: torch.Tensor, bend: torch.Tensor):
    """Centre ``(..., 2)``, radius ``(...)`` and chord normal ``(−dy, dx)`` of arcs p0→p1."""
    chord = p1 - p0
    half = chord.norm(dim=-1).clamp_min(1e-6) / 2
    u = chord / (2 * half[..., None])
    normal = torch.stack([-u[..., 1], u[..., 0]], dim=-1)  # u turned +90°
    sagitta = bend * half
    radius = (half**2 + sagitta**2) / (2 * sagitta.abs())
    # the apex is mid + normal·sagitta; the centre lies one radius beyond it, back across the chord
    centre = (p0 + p1) / 2 + normal * (torch.sign(sagitta) * (sagitta.abs() - radius))[..., None]
    return centre, radius, normal


def stroke_points(strokes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points at fractions ``t`` ``(m,)`` along strokes ``(..., 5+)`` (columns x0 y0 x1 y1 bend).

    Returns ``(..., m, 2)``: straight interpolation for a segment, equal angles for an arc.
    """
    p0, p1, bend = strokes[..., 0:2], strokes[..., 2:4], strokes[..., 4]
    is_arc = bend.abs() >= MIN_BEND
    safe_bend = torch.where(is_arc, bend, torch.ones_like(bend))
    centre, radius, _ = _arc_frame(p0, p1, safe_bend)
    start = p0 - centre
    angle0 = torch.atan2(start[..., 1], start[..., 0])
    sweep = -4 * torch.atan(safe_bend)  # tan(central angle / 4) = sagitta / half-chord
    angles = angle0[..., None] + sweep[..., None] * t
    arc = centre[..., None, :] + radius[..., None, None] * torch.stack([angles.cos(), angles.sin()], -1)
    line = p0[..., None, :] + (p1 - p0)[..., None, :] * t[:, None]
    return torch.where(is_arc[..., None, None], arc, line)


def _segment_distance(qx: torch.Tensor, qy: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """Squared distance from pixels ``(p,)`` to segments ``(m, 5+)``: ``(m, p)``."""
    x0, y0, x1, y1 = (strokes[:, j, None] for j in range(4))              # (m, 1)
    cx, cy = x1 - x0, y1 - y0
    dx, dy = qx - x0, qy - y0
    # project onto the chord and clamp to its ends
    t = ((dx * cx + dy * cy) * (1 / (cx * cx + cy * cy).clamp_min(1e-12))).clamp_(0, 1)
    dx -= t * cx
    dy -= t * cy
    return dx.square_() + dy.square_()


def _arc_distance(qx: torch.Tensor, qy: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """Squared distance from pixels ``(p,)`` to arcs ``(m, 5+)`` (``|bend| >= MIN_BEND``): ``(m, p)``.

    The arc is the part of its circle on the apex side of the chord line. A pixel whose radial
    projection onto the circle lands there is ``|‖q − c‖ − r|`` away; others are nearest an end.
    """
    bend = strokes[:, 4]
    centre, radius, normal = _arc_frame(strokes[:, 0:2], strokes[:, 2:4], bend)
    normal = normal * torch.sign(bend)[:, None]                           # points to the apex
    nx, ny = normal[:, 0, None], normal[:, 1, None]
    ox, oy = qx - centre[:, 0, None], qy - centre[:, 1, None]              # (m, p)
    reach = (ox * ox + oy * oy).sqrt_()
    radius = radius[:, None]
    # sign of (landing − p0)·n with landing = c + o·r/‖o‖, times ‖o‖ ≥ 0
    base = ((centre - strokes[:, 0:2]) * normal).sum(dim=1, keepdim=True)
    apex_side = (ox * nx + oy * ny) * radius + base * reach >= 0
    to_start = (qx - strokes[:, 0, None]).square_() + (qy - strokes[:, 1, None]).square_()
    to_end = (qx - strokes[:, 2, None]).square_() + (qy - strokes[:, 3, None]).square_()
    return torch.where(apex_side, (reach - radius).square_(), torch.minimum(to_start, to_end))


def stroke_distance(points: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """Distance from each of ``points`` ``(p, 2)`` to each stroke ``(..., 5+)``: ``(..., p)``.

    Columns of a stroke: x0 y0 x1 y1 bend (see the module docstring). Segments and arcs are
    computed separately, so each stroke costs only its own formula.
    """
    qx, qy = points[:, 0].contiguous(), points[:, 1].contiguous()
    flat = strokes.reshape(-1, strokes.shape[-1])
    is_arc = flat[:, 4].abs() >= MIN_BEND
    squared = torch.empty(len(flat), len(points))
    squared[~is_arc] = _segment_distance(qx, qy, flat[~is_arc])
    squared[is_arc] = _arc_distance(qx, qy, flat[is_arc])
    return squared.sqrt_().reshape(*strokes.shape[:-1], len(points))


# --- prototypes -----------------------------------------------------------------------------

def _stream_draws(ids: torch.Tensor, seed: int, tag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per id, from the stream (seed, tag, id) alone: uniforms ``(m, 1 + MAX_STROKES * U)`` and
    normals ``(m, MAX_STROKES, 5)``."""
    uniforms, normals = [], []
    for i in ids.tolist():
        rng = _stream(seed, _PROTOTYPE_STREAM, tag, i)
        uniforms.append(torch.rand(1 + MAX_STROKES * _UNIFORMS_PER_STROKE, generator=rng))
        normals.append(torch.randn(MAX_STROKES, 5, generator=rng))
    return torch.stack(uniforms), torch.stack(normals)


def glyph_prototypes(num_classes: int, seed: int = 0, family_size: int = FAMILY_SIZE) -> torch.Tensor:
    """The stroke parameters of classes ``0..num_classes-1``: ``(num_classes, MAX_STROKES, 6)``.

    See the module docstring for the column layout. Classes come in families of ``family_size``
    siblings (classes ``f·family_size .. (f+1)·family_size − 1``): siblings share the family's
    strokes up to a small class-specific displacement, and each draws its own last stroke. Class c
    depends only on ``(seed, family_size, c)``, so more classes never change the first ones.
    ``family_size=1`` makes every class an unrelated glyph (an easier, coarse-grained set).
    """
    num_classes = check_positive_int("num_classes", num_classes)
    seed = check_seed(seed)
    family_size = check_positive_int("family_size", family_size)
    classes = torch.arange(num_classes)
    shared, _ = _stream_draws(classes // family_size, seed, _FAMILY_TAG)
    own, displacement = _stream_draws(classes, seed, _CLASS_TAG)
    count = MIN_STROKES + (shared[:, 0] * (MAX_STROKES - MIN_STROKES + 1)).long()   # (c,)
    shape = (num_classes, MAX_STROKES, _UNIFORMS_PER_STROKE)
    is_last = torch.arange(MAX_STROKES) == (count - 1)[:, None]                     # (c, k)
    u = torch.where(is_last[..., None], own[:, 1:].reshape(shape), shared[:, 1:].reshape(shape))
    displacement = displacement * SIBLING_SPREAD
    strokes = torch.zeros(num_classes, MAX_STROKES, 6)
    anchors_t = torch.tensor([0.0, 1.0, 0.5])  # start, end or middle of an earlier stroke
    for i in range(MAX_STROKES):
        v, d = u[:, i], displacement[:, i]
        start = (v[:, 0:2] * 2 - 1) * 0.7 + d[:, 0:2]
        if i > 0:
            # most strokes grow out of an earlier one, which makes connected, letter-like shapes
            earlier = (v[:, 2] * i).long()
            which = (v[:, 3] * 3).long()
            anchors = stroke_points(strokes[classes, earlier], anchors_t)[classes, which]
            start = torch.where((v[:, 4] < 0.75)[:, None], anchors, start)
        angle = v[:, 5] * 2 * math.pi
        length = 0.6 + 0.7 * v[:, 6]
        end = start + length[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1) + d[:, 2:4]
        magnitude = (0.35 + 0.85 * v[:, 8] + 2 * d[:, 4]).clamp_min(0.2)
        bend = torch.where(v[:, 7] < 0.5, torch.where(v[:, 9] < 0.5, -magnitude, magnitude), 0.0)
        strokes[:, i, :5] = torch.cat([start, end, bend[:, None]], dim=1)
        strokes[:, i, 5] = (i < count).float()
    return _normalise(strokes)


def _normalise(strokes: torch.Tensor) -> torch.Tensor:
    """Centre each glyph on its bounding box and scale it to fit a circle of ``GLYPH_RADIUS``."""
    points = stroke_points(strokes, torch.linspace(0, 1, 33))              # (c, k, 33, 2)
    present = strokes[:, :, 5, None, None].bool()
    big = torch.tensor(1e9)
    low = torch.where(present, points, big).amin(dim=(1, 2))               # (c, 2)
    high = torch.where(present, points, -big).amax(dim=(1, 2))
    centre = (low + high) / 2
    spread = torch.where(present[..., 0], (points - centre[:, None, None]).norm(dim=-1), 0.0)
    factor = GLYPH_RADIUS / spread.amax(dim=(1, 2)).clamp_min(1e-6)       # (c,)
    out = strokes.clone()
    ends = (strokes[:, :, :4].reshape(-1, MAX_STROKES, 2, 2) - centre[:, None, None])
    out[:, :, :4] = (ends * factor[:, None, None, None]).reshape(-1, MAX_STROKES, 4)
    out[:, :, :5] *= strokes[:, :, 5, None]  # unused slots are all zeros
    return out


# --- rendering ------------------------------------------------------------------------------

def _check_labels(labels: torch.Tensor, num_prototypes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    not_integer = labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    if labels.ndim != 1 or not_integer:
        raise ValueError(f"labels must be a 1-D integer tensor; got shape {tuple(labels.shape)}, "
                         f"dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_prototypes):
        raise ValueError(f"labels must lie in 0..{num_prototypes - 1} (one per prototype); got "
                         f"{int(labels.min())}..{int(labels.max())}")
    return labels.long().cpu()


def render_glyphs(labels: torch.Tensor, prototypes: torch.Tensor, size: int = 32,
                  generator: torch.Generator | int | None = None,
                  jitter: GlyphJitter | float = 1.0) -> torch.Tensor:
    """Render one image per label ``(n,)`` from ``prototypes`` ``(num_classes, MAX_STROKES, 6)``.

    ``jitter`` is a ``GlyphJitter`` or a factor of the default one (0 = clean renders). Returns
    ``(n, 1, size, size)`` float32 in [0, 1], white strokes on a dark background; fixed by
    ``generator``.
    """
    prototypes = torch.as_tensor(prototypes, dtype=torch.float32).cpu()
    if prototypes.ndim != 3 or prototypes.shape[1:] != (MAX_STROKES, 6):
        raise ValueError(f"prototypes must be (num_classes, {MAX_STROKES}, 6); got "
                         f"{tuple(prototypes.shape)}")
    labels = _check_labels(labels, len(prototypes))
    size = check_image_size(size)
    jitter = _as_jitter(jitter)
    rng = as_generator(generator)
    n = len(labels)

    # every random draw happens up front, so the result does not depend on the chunking below
    strokes = prototypes[labels]                                           # (n, k, 6)
    ends = strokes[..., :4] + jitter.endpoint * torch.randn(n, MAX_STROKES, 4, generator=rng)
    bend = strokes[..., 4]
    bend = torch.where(bend != 0, bend + jitter.bend * torch.randn(n, MAX_STROKES, generator=rng), bend)
    angle = math.radians(jitter.rotation_deg) * (2 * torch.rand(n, generator=rng) - 1)
    scale = 1 + jitter.scale * (2 * torch.rand(n, generator=rng) - 1)
    shift = jitter.shift * (2 * torch.rand(n, 2, generator=rng) - 1)
    width = STROKE_WIDTH * (1 + jitter.thickness * (2 * torch.rand(n, generator=rng) - 1))
    softness = EDGE_SOFTNESS + jitter.blur * torch.rand(n, generator=rng)
    noise = jitter.noise * torch.randn(n, size, size, generator=rng)
    texture = jitter.texture * torch.rand(n, 1, 4, 4, generator=rng)

    # a similarity transform keeps the bend (a ratio of lengths) unchanged
    cos, sin = (angle.cos() * scale)[:, None, None], (angle.sin() * scale)[:, None, None]
    ends = ends.reshape(n, MAX_STROKES, 2, 2)
    x, y = ends[..., 0], ends[..., 1]
    ends = torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1) + shift[:, None, None]
    strokes = torch.cat([ends.reshape(n, MAX_STROKES, 4), bend[..., None]], dim=-1)
    present = prototypes[labels, :, 5] > 0                                  # (n, k)

    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2 / size) - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    pixels = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)           # (p, 2)

    images = torch.empty(n, size * size)
    chunk = max(1, _CHUNK_ELEMENTS // (MAX_STROKES * size * size))
    for lo in range(0, n, chunk):
        part = slice(lo, lo + chunk)
        # only the strokes a glyph has are measured; absent slots stay infinitely far
        distance = torch.full((len(labels[part]), MAX_STROKES, size * size), math.inf)
        distance[present[part]] = stroke_distance(pixels, strokes[part][present[part]])
        nearest = distance.amin(dim=1)                                     # (b, p)
        half, soft = width[part, None] / 2, softness[part, None]
        # a sigmoid edge, rescaled so that the stroke's centre line is full ink however blurred
        images[part] = torch.sigmoid((half - nearest) / soft) / torch.sigmoid(half / soft)
    images = images.reshape(n, 1, size, size)
    if jitter.texture > 0:
        background = F.interpolate(texture, size=(size, size), mode="bilinear", align_corners=False)
        images = images + (1 - images) * background
    return (images + noise[:, None]).clamp(0.0, 1.0)


# --- datasets -------------------------------------------------------------------------------

def make_glyphs(num_classes: int, samples_per_class: int, size: int = 32, seed: int = 0,
                jitter: GlyphJitter | float = 1.0,
                family_size: int = FAMILY_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples_per_class`` images of each of classes ``0..num_classes-1``, class-major order.

    Returns ``X`` ``(num_classes * samples_per_class, 1, size, size)`` float32 in [0, 1] and
    ``y`` long. Deterministic from ``seed``.
    """
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    prototypes = glyph_prototypes(num_classes, seed, family_size)
    y = torch.arange(len(prototypes)).repeat_interleave(samples_per_class)
    return render_glyphs(y, prototypes, size, _stream(seed, _MAKE_STREAM), jitter), y


def _split(prototypes: torch.Tensor, train_classes: range, test_classes: range, train_per_class: int,
           test_per_class: int, size: int, seed: int, streams: tuple[int, int],
           jitter: GlyphJitter | float, name: str) -> "ImageSplit":
    from labkit.data.small_data import ImageSplit  # here: small_data imports this module

    size, jitter = check_image_size(size), _as_jitter(jitter)
    y_train = torch.tensor(train_classes).repeat_interleave(train_per_class)
    y_test = torch.tensor(test_classes).repeat_interleave(test_per_class)
    X_train = render_glyphs(y_train, prototypes, size, _stream(seed, streams[0]), jitter)
    X_test = render_glyphs(y_test, prototypes, size, _stream(seed, streams[1]), jitter)
    return ImageSplit(X_train, y_train, X_test, y_test, len(prototypes), name)


def glyphs_few_shot(num_classes: int = 30, samples_per_class: int = 15, test_per_class: int = 30,
                    size: int = 32, seed: int = 0, jitter: GlyphJitter | float = 1.0,
                    family_size: int = FAMILY_SIZE) -> "ImageSplit":
    """A closed-set split: ``samples_per_class`` training and ``test_per_class`` test images per class.

    Train and test images are independent renders of the same classes. The test set is drawn
    from its own stream, so it stays the same when only ``samples_per_class`` changes (a sweep over
    training-set sizes is scored on one test set).
    """
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    test_per_class = check_positive_int("test_per_class", test_per_class)
    prototypes = glyph_prototypes(num_classes, seed, family_size)
    classes = range(num_classes)
    return _split(prototypes, classes, classes, samples_per_class, test_per_class, size, seed,
                  (_TRAIN_STREAM, _TEST_STREAM), jitter,
                  f"glyphs-{num_classes}-classes-{samples_per_class}-per-class")


def glyph_open_set(num_train_classes: int = 50, num_test_classes: int = 50,
                   samples_per_class: int = 20, size: int = 32, seed: int = 0,
                   jitter: GlyphJitter | float = 1.0, test_per_class: int | None = None,
                   family_size: int = FAMILY_SIZE) -> "ImageSplit":
    """A held-out-class split for retrieval: train on classes ``0..num_train_classes-1``, test on
    the next ``num_test_classes`` class ids, which the model never sees.

    ``test_per_class`` defaults to ``samples_per_class``; ``num_classes`` of the result is
    ``num_train_classes + num_test_classes``. Class c is the same glyph in every split with the
    same seed and ``family_size``. When ``num_train_classes`` is a multiple of ``family_size`` the
    test classes also come from unseen families; otherwise one family straddles the split.
    """
    num_train_classes = check_positive_int("num_train_classes", num_train_classes)
    num_test_classes = check_positive_int("num_test_classes", num_test_classes)
    samples_per_class = check_positive_int("samples_per_class", samples_per_class)
    test_per_class = check_positive_int(
        "test_per_class", samples_per_class if test_per_class is None else test_per_class)
    total = num_train_classes + num_test_classes
    prototypes = glyph_prototypes(total, seed, family_size)
    return _split(prototypes, range(num_train_classes), range(num_train_classes, total),
                  samples_per_class, test_per_class, size, seed,
                  (_OPEN_TRAIN_STREAM, _OPEN_TEST_STREAM), jitter,
                  f"glyphs-open-set-{num_train_classes}+{num_test_classes}-classes")

r"""Moving shapes: grayscale clips whose class is the motion and nothing else (the video track).

Each clip shows one shape moving by its class's motion, a second *distractor* shape moving in a
random straight line, and per-frame background noise. Appearance is drawn independently of the
class (shape kind, size, intensity, where the motion happens, the speed within a jitter), and time
is centred: the trajectory's time-averaged position is the clip's random centre, so a model that
averages appearance over time learns nothing about the class.

**The eight classes** (``MOTIONS``): translate right, left, down, up; expand, shrink; and an
out-and-back pair. In an out-and-back clip the shape moves one way and turns back (left or right,
drawn per clip). The two classes of the pair are *time reversals of each other*: "late turn" goes
out for ``steps // 2 + 1`` steps and back for the rest, "early turn" is the same frames in mirrored
order. Every two-frame motion of one class also occurs in the other; only when the turn happens
tells them apart.

**Coordinates.** The frame spans ``[-1, 1]`` on both axes (x to the right, y down), so one pixel
is ``2 / size``. Speeds are given in pixels per frame.

**Displacement field.** ``displacement[n, t]`` ``(2, size, size)`` is where the content of each
pixel of frame ``t`` moves by frame ``t + 1`` (in pixels, x then y): the main shape's motion where
it is drawn (radial for expand / shrink), the distractor's where only it is, 0 on the background
and on the last frame. It is the ground truth for probing features and the oracle's input.

Everything is drawn up front from one generator and rendered in vectorized chunks, so a clip set
is deterministic from its seed whatever the chunking.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from labkit.config import as_generator, check_positive_int, check_range

__all__ = ["MOTIONS", "OUT_AND_BACK", "SHAPES", "MovingShapes", "make_moving_shapes", "motion_offsets",
           "fold_time", "unfold_time"]

MOTIONS = ("right", "left", "down", "up", "expand", "shrink", "out-and-back, late turn",
           "out-and-back, early turn")
OUT_AND_BACK = (6, 7)  # the pair told apart only by temporal structure
SHAPES = ("disk", "square", "triangle")
_CHUNK_ELEMENTS = 2 ** 23


@dataclasses.dataclass(frozen=True)
class MovingShapes:
    """``clips`` ``(n, T, 1, S, S)`` in [0, 1], ``labels`` ``(n,)`` (index into ``MOTIONS``),
    ``displacement`` ``(n, T, 2, S, S)`` in pixels per frame, and the nuisance each clip drew."""

    clips: torch.Tensor
    labels: torch.Tensor
    displacement: torch.Tensor
    shape: torch.Tensor  # (n,) index into SHAPES
    radius: torch.Tensor  # (n,) main shape's radius at the centre of time, in frame units
    intensity: torch.Tensor  # (n,)


def _steps_out(frames: int) -> int:
    return (frames - 1) // 2 + 1


def motion_offsets(frames: int) -> torch.Tensor:
    """Per class, the main shape's offset from the clip centre at each frame, in units of the clip's
    speed: ``(len(MOTIONS), frames, 3)`` holding (dx, dy, log-scale), each time-centred."""
    frames = check_positive_int("frames", frames)
    if frames < 4:
        raise ValueError(f"frames={frames} is not valid; the out-and-back pair needs frames >= 4")
    s = torch.arange(frames, dtype=torch.float32) - (frames - 1) / 2  # centred time
    out = torch.zeros(len(MOTIONS), frames, 3)
    out[0, :, 0], out[1, :, 0], out[2, :, 1], out[3, :, 1] = s, -s, s, -s
    out[4, :, 2], out[5, :, 2] = s, -s
    steps = torch.cat([torch.ones(_steps_out(frames) - 1), -torch.ones(frames - _steps_out(frames))])
    late = torch.cat([torch.zeros(1), steps.cumsum(0)])
    out[6, :, 0] = late - late.mean()
    out[7, :, 0] = late.flip(0) - late.mean()  # the same positions in mirrored order
    return out


def _signed_edge(points: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Distance-like ``radius · (1 − d)``, positive inside the shape: ``points`` ``(P, 2)``, the rest
    ``(m, …)`` broadcast to ``(m, P)``."""
    rel = points[None] - centre[:, None]  # (m, P, 2)
    disk = rel.norm(dim=-1) / radius[:, None]
    square = rel.abs().amax(dim=-1) / radius[:, None]
    angles = torch.tensor([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])  # outward normals of a triangle
    normals = torch.stack([angles.cos(), angles.sin()], dim=1)  # (3, 2)
    triangle = (rel @ normals.T).amax(dim=-1) / (radius[:, None] / 2)  # inradius = circumradius / 2
    d = torch.where(kind[:, None] == 0, disk, torch.where(kind[:, None] == 1, square, triangle))
    return radius[:, None] * (1 - d)


def make_moving_shapes(labels: torch.Tensor, frames: int = 6, size: int = 24,
                       generator: torch.Generator | int | None = None, *, speed: float = 1.5,
                       speed_jitter: float = 0.3, scale_rate: float = 0.12, distractor: bool = True,
                       noise: float = 0.08, radius_range: tuple = (0.18, 0.3)) -> MovingShapes:
    """One clip per entry of ``labels`` (indices into ``MOTIONS``); see the module docstring.

    ``speed`` is the main shape's speed in pixels per frame, scaled per clip by ``1 ± speed_jitter``;
    ``scale_rate`` the log-radius change per frame of expand / shrink; the distractor moves in a
    random direction at 0.5–1.5 × ``speed``; ``noise`` is the std of per-pixel Gaussian noise."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if labels.ndim != 1 or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(MOTIONS)):
        raise ValueError(f"labels must be a 1-D tensor of class indices in [0, {len(MOTIONS)}); got "
                         f"shape {tuple(labels.shape)}")
    offsets = motion_offsets(frames)
    size = check_positive_int("size", size)
    if size < 8:
        raise ValueError(f"size={size} is not valid; it must be at least 8 pixels")
    check_range("speed", speed, 0.0, size / frames, low_open=True)
    check_range("speed_jitter", speed_jitter, 0.0, 0.9)
    check_range("scale_rate", scale_rate, 0.0, 0.5)
    check_range("noise", noise, 0.0, 1.0)
    low, high = radius_range
    check_range("radius_range[0]", low, 0.05, 0.5)
    check_range("radius_range[1]", high, low, 0.5)
    rng = as_generator(generator)
    n, pixel = len(labels), 2.0 / size

    # every draw up front: the result does not depend on the chunking below
    kind = torch.randint(len(SHAPES), (n,), generator=rng)
    radius = low + (high - low) * torch.rand(n, generator=rng)
    intensity = 0.55 + 0.45 * torch.rand(n, generator=rng)
    clip_speed = speed * pixel * (1 + speed_jitter * (2 * torch.rand(n, generator=rng) - 1))
    turn_sign = torch.where(torch.rand(n, generator=rng) < 0.5, -1.0, 1.0)
    centre_draw = 2 * torch.rand(n, 2, generator=rng) - 1
    d_kind = torch.randint(len(SHAPES), (n,), generator=rng)
    d_radius = low + (high - low) * torch.rand(n, generator=rng)
    d_intensity = 0.55 + 0.45 * torch.rand(n, generator=rng)
    d_angle = 2 * math.pi * torch.rand(n, generator=rng)
    d_speed = speed * pixel * (0.5 + torch.rand(n, generator=rng))
    d_centre_draw = 2 * torch.rand(n, 2, generator=rng) - 1
    frame_noise = noise * torch.randn(n, frames, size, size, generator=rng)

    # the main shape: offsets in speed units, the out-and-back direction per clip
    offset = offsets[labels].clone()  # (n, T, 3)
    offset[..., 0] = torch.where((labels[:, None] >= OUT_AND_BACK[0]), offset[..., 0] * turn_sign[:, None],
                                 offset[..., 0])
    shift = offset[..., :2] * clip_speed[:, None, None]  # (n, T, 2) in frame units
    radii = radius[:, None] * torch.exp(scale_rate * offset[..., 2])  # (n, T)
    reach = shift.abs().amax(dim=1) + radii.amax(dim=1, keepdim=True)  # keep the whole path inside
    centre = centre_draw * (1 - reach).clamp(min=0)
    centres = centre[:, None] + shift
    s = torch.arange(frames, dtype=torch.float32) - (frames - 1) / 2
    d_velocity = torch.stack([d_angle.cos(), d_angle.sin()], dim=1) * d_speed[:, None]
    d_shift = s[None, :, None] * d_velocity[:, None]
    d_reach = d_shift.abs().amax(dim=1) + d_radius[:, None]
    d_centres = (d_centre_draw * (1 - d_reach).clamp(min=0))[:, None] + d_shift

    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * pixel - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # (P, 2)
    softness = 0.5 * pixel
    clips = torch.empty(n, frames, size * size)
    displacement = torch.zeros(n, frames, 2, size * size)
    chunk = max(1, _CHUNK_ELEMENTS // (frames * size * size))
    for lo in range(0, n, chunk):
        part = slice(lo, lo + chunk)
        m = len(labels[part])
        flat = lambda x: x[part].reshape(m * frames, *x.shape[2:])  # noqa: E731
        main = torch.sigmoid(_signed_edge(points, flat(centres), flat(radii),
                                          kind[part].repeat_interleave(frames)) / softness)
        main = main.reshape(m, frames, -1)
        if distractor:
            other = torch.sigmoid(_signed_edge(points, flat(d_centres), d_radius[part].repeat_interleave(frames),
                                               d_kind[part].repeat_interleave(frames)) / softness)
            other = other.reshape(m, frames, -1) * d_intensity[part, None, None]
        else:
            other = torch.zeros(m, frames, size * size)
        ink = intensity[part, None, None] * main + (1 - main) * other
        clips[part] = (ink + frame_noise[part].reshape(m, frames, -1)).clamp(0, 1)

        # where each pixel's content goes by the next frame, in pixels
        step = (centres[part, 1:] - centres[part, :-1]) / pixel  # (m, T-1, 2)
        growth = radii[part, 1:] / radii[part, :-1] - 1  # (m, T-1)
        radial = (points[None, None] - centres[part, :-1, None]) / pixel * growth[..., None, None]  # (m, T-1, P, 2)
        main_flow = step[:, :, None] + radial
        other_flow = (d_velocity[part] / pixel)[:, None, None].expand(m, frames - 1, size * size, 2)
        inside, inside_other = main[:, :-1] > 0.5, (other[:, :-1] > 0) & (main[:, :-1] <= 0.5)
        if distractor:
            inside_other = inside_other & (other[:, :-1] / d_intensity[part, None, None] > 0.5)
        flow = torch.where(inside[..., None], main_flow, torch.where(inside_other[..., None], other_flow, 0.0))
        displacement[part, :-1] = flow.permute(0, 1, 3, 2)
    return MovingShapes(clips.reshape(n, frames, 1, size, size), labels,
                        displacement.reshape(n, frames, 2, size, size), kind, radius, intensity)


def fold_time(clips: torch.Tensor) -> torch.Tensor:
    """``(b, T, C, H, W)`` → ``(b·T, C, H, W)``, frames of a clip contiguous: for 2-D backbones."""
    if clips.ndim != 5:
        raise ValueError(f"clips must have shape (b, T, C, H, W); got {tuple(clips.shape)}")
    return clips.reshape(-1, *clips.shape[2:])


def unfold_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """The inverse of ``fold_time``: ``(b·T, …)`` → ``(b, T, …)``."""
    frames = check_positive_int("frames", frames)
    if x.shape[0] % frames:
        raise ValueError(f"the leading dimension {x.shape[0]} is not a multiple of frames={frames}")
    return x.reshape(x.shape[0] // frames, frames, *x.shape[1:])

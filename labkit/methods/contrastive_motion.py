r"""Hierarchical Contrastive Motion Learning for Video Action Recognition.

Xitong Yang, Xiaodong Yang, Sifei Liu, Deqing Sun, Larry S. Davis, Jan Kautz. BMVC 2021,
arXiv 2007.10321. No official code exists and only the abstract and introduction were readable:
the paper states (i) a hierarchy of motion features learned from raw frames, (ii) at each level a
contrastive loss making the current level's motion predict the *future* features of the level
below, (iii) appearance and motion fused at several levels, (iv) a lightweight motion module. **The
module design below is labkit's reconstruction** (the spec's), every choice a constructor argument.

**Equations** (ours; the paper's numbering is unknown).

- causal motion encoders, on the current and the previous step only (zero before the first):
  $m^1_t = E^1([z^0_{t-1}, z^0_t])$, $m^l_t = E^l([m^{l-1}_{t-1}, m^{l-1}_t])$, with $z^0 = \mathrm{stem}(x)$;
- prediction of the next step of the level below: $\hat z^{l-1}_{t+1} = P^l([\mathrm{pool}(z^{l-1}_t), m^l_t])$,
  target $\tilde z^{l-1}_{t+1} = Q^l(\mathrm{sg}[\mathrm{pool}(z^{l-1}_{t+1})])$, both L2-normalised per position;
- dense InfoNCE over sampled anchors $\Omega$ (clip, time, position), τ = 0.1:
  $\mathcal L^l = -\frac{1}{|\Omega|}\sum_{i\in\Omega}\log\frac{\exp(\hat z_i^\top\tilde z_i/\tau)}{\sum_{j\in\Omega}\exp(\hat z_i^\top\tilde z_j/\tau)}$;
- lateral fusion $a^l_t \leftarrow a^l_t + W^l_f m^l_t$, and the clip logit is the mean over frames
  of per-frame logits from the top stage (TSN).

| symbol | variable |
|---|---|
| $z^0_t$, $a^l_t$ | ``stem(x)``, ``stages[l-1]`` outputs ``(b·T, C, H, W)`` (time folded into the batch) |
| $m^l_t$ | ``motion[l-1]`` ``(b, T, C_l, H_l, W_l)`` |
| $P^l$, $Q^l$ | ``predictors[l-1]``, ``targets[l-1]`` (1×1 convs to ``proj_dim``) |
| $\Omega$, τ | ``num_anchors`` sampled positions, ``temperature`` |
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_positive_int, check_range

__all__ = ["LOSSES", "NEGATIVES", "FUSIONS", "MOTION_INPUTS", "conv_block", "previous_step", "MotionEncoder", "HierarchicalMotionNet",
           "sample_anchors", "info_nce", "prediction_loss"]

LOSSES = ("nce", "l2")
NEGATIVES = ("dense", "spatial")
FUSIONS = ("all", "top", "none")
MOTION_INPUTS = ("features", "frames", "flow", "none")


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def previous_step(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(b, T, …)`` shifted one step later in time, zeros at t = 0 (never a wrap-around)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


class MotionEncoder(nn.Module):
    """$E^l$: two 3×3 conv-BN-ReLU layers (the first with stride 2) on the channel concatenation of
    the previous and the current step (and, with ``with_difference``, their difference)."""

    def __init__(self, in_channels: int, out_channels: int, with_difference: bool = False):
        super().__init__()
        self.with_difference = with_difference
        inputs = (3 if with_difference else 2) * in_channels
        self.layers = nn.Sequential(conv_block(inputs, out_channels, stride=2), conv_block(out_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(b, T, C, H, W)`` → ``(b, T, C_out, H/2, W/2)``, step t seeing only steps ≤ t."""
        b, frames = x.shape[:2]
        before = previous_step(x)
        parts = [before, x] + ([x - before] if self.with_difference else [])
        out = self.layers(torch.cat(parts, dim=2).flatten(0, 1))
        return out.reshape(b, frames, *out.shape[1:])


class HierarchicalMotionNet(nn.Module):
    """The two-pathway network: a per-frame appearance backbone (stem + ``len(widths) - 1`` strided
    stages) and a motion pathway of ``levels`` causal encoders, fused laterally.

    ``motion_input`` picks what level 1 sees: ``"features"`` (the stem's, the method),
    ``"frames"`` (raw frames, the RGB-difference baseline with ``with_difference``), ``"flow"``
    (a 2-channel displacement field passed to ``forward``, the oracle) or ``"none"`` (appearance
    only). ``fusion`` is ``"all"`` levels, the ``"top"`` one, or ``"none"``."""

    def __init__(self, num_classes: int, widths: tuple = (8, 16, 32), levels: int = 2, proj_dim: int = 16,
                 fusion: str = "all", motion_input: str = "features", with_difference: bool = False,
                 in_channels: int = 1):
        super().__init__()
        widths = tuple(check_positive_int("widths entry", w) for w in widths)
        if len(widths) < 2:
            raise ValueError(f"widths={widths} is not valid; it needs a stem width and at least one stage")
        self.levels = check_positive_int("levels", levels)
        if levels > len(widths) - 1:
            raise ValueError(f"levels={levels} is not valid; with widths={widths} it must be at most {len(widths) - 1}")
        self.fusion = check_choice("fusion", fusion, FUSIONS)
        self.motion_input = check_choice("motion_input", motion_input, MOTION_INPUTS)
        self.stem = conv_block(in_channels, widths[0])
        self.stages = nn.ModuleList(conv_block(widths[i], widths[i + 1], stride=2) for i in range(len(widths) - 1))
        self.classifier = nn.Linear(widths[-1], check_positive_int("num_classes", num_classes))
        if motion_input == "none":
            self.levels, levels = 0, 0
        first_in = {"features": widths[0], "frames": in_channels, "flow": 2}.get(motion_input, 0)
        ins = [first_in] + [widths[l] for l in range(1, levels)]
        self.encoders = nn.ModuleList(MotionEncoder(ins[l], widths[l + 1], with_difference) for l in range(levels))
        self.fuse = nn.ModuleList(nn.Conv2d(widths[l + 1], widths[l + 1], 1) for l in range(levels))
        # level l predicts level l-1's next step from [pool(level l-1 now), m^l]
        below = [widths[0]] + [widths[l] for l in range(1, levels)]
        self.predictors = nn.ModuleList(nn.Conv2d(below[l] + widths[l + 1], check_positive_int("proj_dim", proj_dim), 1)
                                        for l in range(levels))
        self.targets = nn.ModuleList(nn.Conv2d(below[l], proj_dim, 1) for l in range(levels))

    def fused_levels(self) -> set[int]:
        if self.fusion == "none" or not self.levels:
            return set()
        return {self.levels - 1} if self.fusion == "top" else set(range(self.levels))

    def forward(self, clips: torch.Tensor, flow: torch.Tensor | None = None) -> dict:
        """``clips`` ``(b, T, C, H, W)`` → ``logits`` ``(b, classes)`` (mean of per-frame logits), the
        stem features ``z0`` and ``motion`` ``[m^1, …]`` ``(b, T, C_l, H_l, W_l)``. ``flow``
        ``(b, T, 2, H, W)`` is level 1's input when ``motion_input="flow"``."""
        if clips.ndim != 5:
            raise ValueError(f"clips must have shape (b, T, C, H, W); got {tuple(clips.shape)}")
        if (flow is None) != (self.motion_input != "flow"):
            raise ValueError("flow must be given exactly when motion_input='flow'")
        b, frames = clips.shape[:2]
        z0 = self.stem(clips.flatten(0, 1))
        z0_clip = z0.reshape(b, frames, *z0.shape[1:])
        motion = []
        below = {"features": z0_clip, "frames": clips, "flow": flow}.get(self.motion_input)
        for encoder in self.encoders:
            below = encoder(below)
            motion.append(below)
        a = z0
        fused = self.fused_levels()
        for l, stage in enumerate(self.stages):
            a = stage(a)
            if l in fused:
                a = a + self.fuse[l](motion[l].flatten(0, 1))
        frame_logits = self.classifier(a.mean(dim=(2, 3))).reshape(b, frames, -1)
        return {"logits": frame_logits.mean(dim=1), "z0": z0_clip, "motion": motion}

    def predictions(self, out: dict, level: int, stop_gradient: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Level ``level`` (1-based)'s predictions and targets ``(b, T-1, D, H_l, W_l)``, each L2-normalised
        over D: prediction at t from steps ≤ t, target from step t + 1 of the level below."""
        check_range("level", level, 1, self.levels)
        below = out["z0"] if level == 1 else out["motion"][level - 2]
        m = out["motion"][level - 1]
        b, frames = below.shape[:2]
        pooled = F.adaptive_avg_pool2d(below.flatten(0, 1), m.shape[-2:]).reshape(b, frames, -1, *m.shape[-2:])
        now = torch.cat([pooled[:, :-1], m[:, :-1]], dim=2).flatten(0, 1)
        future = pooled[:, 1:].flatten(0, 1)
        prediction = self.predictors[level - 1](now)
        target = self.targets[level - 1](future.detach() if stop_gradient else future)
        shape = (b, frames - 1, -1, *m.shape[-2:])
        return F.normalize(prediction, dim=1).reshape(shape), F.normalize(target, dim=1).reshape(shape)


def sample_anchors(batch: int, steps: int, positions: int, num_anchors: int, first_step: int = 0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(num_anchors, all)`` distinct (clip, step, position) triples ``(n, 3)`` with step ≥
    ``first_step`` (earlier steps see the zero padding), without replacement."""
    num_anchors = check_positive_int("num_anchors", num_anchors)
    if not 0 <= first_step < steps:
        raise ValueError(f"first_step={first_step} is not valid; it must lie in [0, steps={steps})")
    usable = steps - first_step
    total = batch * usable * positions
    flat = torch.randperm(total, generator=generator)[:num_anchors]
    clip, rest = flat // (usable * positions), flat % (usable * positions)
    return torch.stack([clip, rest // positions + first_step, rest % positions], dim=1)


def info_nce(prediction: torch.Tensor, target: torch.Tensor, temperature: float = 0.1,
             groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of ``prediction`` ``(n, D)`` against ``target`` ``(n, D)``: row i's positive is target i,
    its negatives every other target (``groups``: only those of the same group, the spatial-only
    ablation). Returns the loss and top-1 accuracy (how often the true target wins)."""
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"prediction and target must both be (n, D); got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature={temperature!r} is not valid; it must be a finite number > 0")
    logits = prediction @ target.T / temperature
    if groups is not None:
        logits = logits.masked_fill(groups[:, None] != groups[None, :], float("-inf"))
    labels = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, labels), (logits.argmax(dim=1) == labels).float().mean()


def prediction_loss(net: HierarchicalMotionNet, out: dict, level: int, num_anchors: int = 256,
                    temperature: float = 0.1, loss: str = "nce", negatives: str = "dense",
                    stop_gradient: bool = True, generator: torch.Generator | None = None) -> dict:
    """Level ``level``'s self-supervised loss on anchors sampled from steps ≥ ``level - 1`` (before, the
    motion sees zero padding). ``loss="l2"`` regresses the normalised target instead (the ablation)."""
    check_choice("loss", loss, LOSSES)
    check_choice("negatives", negatives, NEGATIVES)
    prediction, target = net.predictions(out, level, stop_gradient)
    b, steps, dim, h, w = prediction.shape
    anchors = sample_anchors(b, steps, h * w, num_anchors, first_step=min(level - 1, steps - 1),
                             generator=generator).to(prediction.device)  # drawn on the CPU: the same anchors on any device
    flat = lambda x: x.permute(0, 1, 3, 4, 2).reshape(b, steps, h * w, dim)  # noqa: E731
    chosen_p = flat(prediction)[anchors[:, 0], anchors[:, 1], anchors[:, 2]]
    chosen_t = flat(target)[anchors[:, 0], anchors[:, 1], anchors[:, 2]]
    if loss == "l2":
        value = (chosen_p - chosen_t).pow(2).sum(dim=1).mean()
        _, top1 = info_nce(chosen_p.detach(), chosen_t.detach(), temperature)
        return {"loss": value, "top1": top1, "anchors": len(anchors)}
    groups = anchors[:, 0] * steps + anchors[:, 1] if negatives == "spatial" else None
    value, top1 = info_nce(chosen_p, chosen_t, temperature, groups)
    return {"loss": value, "top1": top1, "anchors": len(anchors)}

r"""L2-CAF: A Generic Visualization Approach for Convolutional Neural Networks.

Ahmed Taha, Xitong Yang, Abhinav Shrivastava, Larry S. Davis. ECCV 2020, arXiv 2007.09748.
Official code: ``ahmdtaha/constrained_attention_filter`` (TensorFlow) and ``ahmdtaha/l2_caf_pytorch``.

**Idea.** Attention without changing the network: insert a spatial filter $f$ of unit L2 norm after
a conv layer of a frozen network and optimise it, per image, so that the output stays as it was
(class-oblivious) or one class's logit wins (class-specific). The norm constraint makes the filter
spend its limited mass where the output needs it. Only the output is used, so it works for
classifiers and for embedding (retrieval) networks alike.

**Equations.** $A = g(x) \in \mathbb R^{C\times H\times W}$ (the layer's output), $h$ the rest of the
network, $NT(x) = h(A)$ and $FT(x, f) = h(A \odot \hat f)$ with $\hat f = f / \|f\|_2$ (Frobenius
norm over the whole map, broadcast over channels).

- class-oblivious: $\min_f \tfrac1K\|NT(x) - FT(x, f)\|_2^2$ (logits or embeddings, K outputs);
- class-specific (class $c$): $\min_f\ -FT_c(x, f) + \sum_{j\ne c} FT_j(x, f)$;
- optimiser (official): lr 0.5 decayed linearly to 0 over at most ``max_iters`` = 1,000 iterations;
  every 50 iterations the loss is compared with its value 50 iterations earlier, stop when
  $|\Delta| < 10^{-6}$. Heatmap: $|f| / \|f\|$, upsampled bilinearly, min–max normalised.

**Batched (ours).** Both official codes optimise one image at a time. Here every image has its own
filter and its own stopping rule, and all filters are optimised together: the loss is the *sum* of
the per-image losses, so each filter's gradient is its own image's, Adam's per-element statistics
never mix images, and a stopped filter is held fixed. The result equals the one-image loop.

**Alternative constraints** (the paper's ablation): a softmax over the positions; a Gaussian bump
whose 2-D mean is the only parameter (identity covariance in cells, L2-normalised: ours, since the
TF code hard-wires 7×7 maps); none (the raw filter), which shows why the constraint is there.

| symbol | variable |
|---|---|
| $A$ | ``capture(model, layer, x)`` ``(b, C, H, W)`` |
| $f$, $\hat f$ | ``filters`` ``(b, H, W)``, ``constrain(filters, constraint)`` |
| $\mu$ (Gaussian-mean ablation) | ``gaussian_bump(means, H, W)``, ``means`` ``(b, 2)`` |
| $FT(x, f)$ | ``forward(f_hat)``: the head on cached $A$ (fast mode) or a hooked full forward (slow mode) |
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labkit.config import check_choice, check_positive_int, check_range

__all__ = ["CONSTRAINTS", "OBJECTIVES", "OPTIMIZERS", "find_layer", "frozen", "capture", "constrain", "gaussian_bump",
           "filtered_forward",
           "objective", "optimise_filters", "heatmap", "grad_cam", "cam"]

CONSTRAINTS = ("l2", "softmax", "gaussian", "none")
OBJECTIVES = ("oblivious", "specific")
OPTIMIZERS = ("adam", "sgd")


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        names = [n for n, m in modules.items() if n and isinstance(m, (nn.Conv2d, nn.Sequential, nn.ReLU))]
        raise ValueError(f"layer={layer!r} is not a module of the model; conv-like modules: {', '.join(names[:20])}")
    return modules[layer]


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Eval mode and ``requires_grad=False`` on every parameter for the block, restored after: the
    filter's optimisation must not put gradients into the network (nor update BN statistics)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was)


@torch.no_grad()
def capture(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output $A$ ``(b, C, H, W)`` for ``x``, in eval mode, detached."""
    store = {}
    handle = find_layer(model, layer).register_forward_hook(lambda m, i, out: store.__setitem__("A", out.detach()))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was)
    if store["A"].ndim != 4:
        raise ValueError(f"layer={layer!r} outputs shape {tuple(store['A'].shape)}; a spatial map (b, C, H, W) is needed")
    return store["A"]


def constrain(filters: torch.Tensor, constraint: str = "l2") -> torch.Tensor:
    """$\\hat f$ from raw filters ``(b, H, W)``: unit Frobenius norm per image (``"l2"``, the method),
    a softmax over the H·W positions, or unchanged (``"none"``, the unconstrained ablation). The
    ``"gaussian"`` constraint has its own parameters (a mean per image): see ``gaussian_bump``."""
    check_choice("constraint", constraint, CONSTRAINTS)
    if constraint == "gaussian":
        raise ValueError("constraint='gaussian' is parametrised by a 2-D mean per image, not by a filter; "
                         "use gaussian_bump(means, height, width)")
    flat = filters.flatten(1)
    if constraint == "l2":
        flat = F.normalize(flat, dim=1)
    elif constraint == "softmax":
        flat = flat.softmax(dim=1)
    return flat.reshape(filters.shape)


def gaussian_bump(means: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The Gaussian-mean constraint: $f(u) = \\exp(-\\|u - \\mu\\|^2 / 2)$ over the cell grid (identity
    covariance in cells, as the TF code's fixed covariance), L2-normalised like the method's filter.
    ``means`` ``(b, 2)`` (row, column, in cells) → ``(b, height, width)``. The 2-D mean is the only
    parameter, so the map is one bump wherever the optimiser moves it."""
    rows = torch.arange(height, dtype=means.dtype)[None, :, None]
    cols = torch.arange(width, dtype=means.dtype)[None, None, :]
    squared = (rows - means[:, 0, None, None]) ** 2 + (cols - means[:, 1, None, None]) ** 2
    return F.normalize(torch.exp(-squared / 2).flatten(1), dim=1).reshape(len(means), height, width)


def filtered_forward(model: nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Slow mode: ``f_hat (b, H, W)`` → the full network's output on ``x`` with the layer's output
    multiplied by ``f_hat`` (a forward hook; the network is re-run every call)."""
    module = find_layer(model, layer)

    def forward(f_hat: torch.Tensor) -> torch.Tensor:
        handle = module.register_forward_hook(lambda m, i, out: out * f_hat[:, None])
        try:
            return model(x)
        finally:
            handle.remove()

    return forward


def objective(output: torch.Tensor, reference: torch.Tensor | None, kind: str,
              target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image losses ``(b,)``: class-oblivious MSE to ``reference`` (the unfiltered output) or
    class-specific ``−FT_c + Σ_{j≠c} FT_j`` for ``target`` ``(b,)``."""
    check_choice("objective", kind, OBJECTIVES)
    if kind == "oblivious":
        return (output - reference).pow(2).mean(dim=1)
    if target is None or target.shape != output.shape[:1]:
        raise ValueError("the class-specific objective needs target, one class index per image")
    if int(target.min()) < 0 or int(target.max()) >= output.shape[1]:
        raise ValueError(f"target classes must lie in [0, {output.shape[1]}); got {target.tolist()}")
    sign = torch.ones_like(output).scatter_(1, target[:, None], -1.0)
    return (output * sign).sum(dim=1)


def optimise_filters(forward: Callable[[torch.Tensor], torch.Tensor], shape: tuple, kind: str = "oblivious",
                     reference: torch.Tensor | None = None, target: torch.Tensor | None = None, *,
                     constraint: str = "l2", init: str = "normal", optimizer: str = "adam", lr: float = 0.5,
                     max_iters: int = 1000, check_every: int = 50, tolerance: float = 1e-6,
                     generator: torch.Generator | None = None, keep_every: int = 0,
                     initial: torch.Tensor | None = None, device: torch.device | str | None = None) -> dict:
    """Optimise one filter per image, all at once (see the module docstring).

    ``forward(f_hat (b, H, W))`` returns the filtered outputs ``(b, K)``; ``shape`` is ``(b, H, W)``.
    Returns ``filters`` (constrained, ``(b, H, W)``), ``iterations`` ``(b,)`` (when each stopped),
    ``losses`` (per image at every check) and, with ``keep_every``, ``snapshots`` of the filters.
    ``initial`` (raw filters ``shape``; ``(b, 2)`` means for ``"gaussian"``) replaces the ``init``
    draw; ``parameters`` returns the raw parameters at the end. The filters live on ``device``
    (default: that of ``initial``, else ``reference``, else ``target``, else the CPU), next to the
    activations ``forward`` multiplies them with; the ``init`` draw is made on the CPU with
    ``generator`` and moved, so it is the same on every device."""
    check_choice("init", init, ("normal", "ones"))
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_range("lr", lr, 0.0, low_open=True)
    max_iters, check_every = check_positive_int("max_iters", max_iters), check_positive_int("check_every", check_every)
    check_range("tolerance", tolerance, 0.0)
    check_choice("constraint", constraint, CONSTRAINTS)
    b, height, width = shape
    gaussian = constraint == "gaussian"
    param_shape = (b, 2) if gaussian else tuple(shape)  # the Gaussian's only parameter is its mean
    to_filter = (functools.partial(gaussian_bump, height=height, width=width) if gaussian
                 else functools.partial(constrain, constraint=constraint))
    if initial is not None:
        if tuple(initial.shape) != param_shape:
            raise ValueError(f"initial has shape {tuple(initial.shape)}; it must be {param_shape}")
        raw = initial.detach().clone()
    else:
        raw = torch.randn(param_shape, generator=generator) if init == "normal" else torch.ones(param_shape)
        if gaussian:  # "ones" starts the mean at the centre, "normal" one cell (sd) around it
            raw = (raw if init == "normal" else torch.zeros(param_shape)) + torch.tensor([(height - 1) / 2,
                                                                                          (width - 1) / 2])
    raw = raw.to(_filter_device(device, initial, reference, target)).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr) if optimizer == "adam" else torch.optim.SGD([raw], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1 - i / max_iters))
    active = torch.ones(b, dtype=torch.bool, device=raw.device)
    iterations = torch.full((b,), max_iters, device=raw.device)
    last_check: torch.Tensor | None = None
    losses: list[list[float]] = []
    snapshots: list[np.ndarray] = []
    for step in range(max_iters):
        opt.zero_grad(set_to_none=True)
        per_image = objective(forward(to_filter(raw)), reference, kind, target)
        if step % check_every == 0:
            now = per_image.detach()
            losses.append(now.tolist())
            if keep_every and step % keep_every == 0:
                snapshots.append(to_filter(raw.detach()).cpu().numpy().copy())
            if last_check is not None:
                done = active & ((now - last_check).abs() < tolerance)
                iterations[done] = step
                active &= ~done
            last_check = now
            if not active.any():
                break
        kept = raw.detach()[~active].clone()
        per_image[active].sum().backward()  # a sum: each filter sees only its own image's gradient
        opt.step()
        schedule.step()
        with torch.no_grad():
            raw[~active] = kept  # a stopped filter stays where its own rule stopped it
    return {"filters": to_filter(raw.detach()), "parameters": raw.detach(), "iterations": iterations,
            "losses": losses, "snapshots": snapshots}


def _filter_device(device, *tensors) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))


def heatmap(filters: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``|f| / ‖f‖`` upsampled bilinearly to ``size`` and min–max normalised per image: ``(b, *size)``."""
    f = filters.abs()
    f = f / f.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    up = F.interpolate(f[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).amin(1)[:, None, None]
    high = up.flatten(1).amax(1)[:, None, None]
    return (up - low) / (high - low).clamp_min(1e-12)


def grad_cam(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM ``(b, H, W)``: ReLU(Σ_k α_k A_k) with α_k the spatial mean of ∂y/∂A_k. ``y`` is the
    ``target`` logit, or, with ``target=None`` (an embedding network), the self-similarity
    ⟨e(x), sg[e(x)]⟩ (labkit's choice of scalar)."""
    store = {}

    def keep(m, i, out):
        out.retain_grad()
        store["A"] = out

    handle = find_layer(model, layer).register_forward_hook(keep)
    was = model.training
    model.eval()
    try:
        out = model(x)
        y = (out * out.detach()).sum(1) if target is None else out.gather(1, target[:, None])[:, 0]
        y.sum().backward()
    finally:
        handle.remove()
        model.train(was)
        model.zero_grad(set_to_none=True)
    A = store["A"]
    alpha = A.grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * A).sum(1)).detach()


def cam(A: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CAM for a GAP + linear head: Σ_k w_{c,k} A_k ``(b, H, W)`` with ``weight`` ``(classes, C)``."""
    return torch.einsum("bc,bchw->bhw", weight[target], A)

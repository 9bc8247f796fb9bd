r"""Knowledge Evolution in Neural Networks.

Ahmed Taha, Abhinav Shrivastava, Larry S. Davis (University of Maryland). CVPR 2021 (oral);
arXiv 2103.05152.

**Idea.** A network trained from scratch on a small dataset overfits. Knowledge evolution splits
every layer into a *fit* and a *reset* hypothesis, trains the whole network, then re-initialises
only the reset part and trains again, for several generations. With kernel-level splitting (KELS)
the fit part is a self-contained slim network that, after a few generations, matches the dense
network at about $s_r^2$ of its cost.

**Equations.** Conv filters $F_l\in\mathbb R^{C_o\times C_i\times k\times k}$, linear weights
$W\in\mathbb R^{C_o\times C_i}$, binary masks $M_l$ shaped like the weights, split rate
$s_r\in(0,1)$, $N_g$ the network after generation $g$.

- Fit and reset hypotheses: $H^\triangle = M\odot N$, $H^\bigtriangledown = (1-M)\odot N$.
- KELS block rule: $M_l[o,i,:,:]=1 \iff o<\lceil s_rC_o\rceil \wedge i<\lceil s_rC_i\rceil$.
  Exceptions: the first conv keeps every input (image) channel, $i<C_i$; the classifier keeps
  every class output, $o<C_o$, and its full bias. A conv bias is fit where $o<\lceil s_rC_o\rceil$.
- WELS: $M_l[\cdot]\sim\mathrm{Bernoulli}(s_r)$ independently, drawn once.
- Algorithm 1: train $N$ from a random init for $e$ epochs → $N_1$; for $g=2..G$:
  re-initialise $F_l \leftarrow M_l\odot F_l + (1-M_l)\odot F_l^r$ with a fresh random $F_l^r$
  for every conv and linear layer (BatchNorm untouched), then train all weights for $e$ epochs
  with a fresh optimizer and schedule → $N_g$. Output $N_G$, or for KELS the slim $H^\triangle_G$.

There is no extra loss and no mask in the forward pass; the fit block is never frozen. The masks
only decide what is re-initialised.

| symbol | variable |
|---|---|
| $s_r$ | `split_rate` |
| $M_l$ | `masks[name]`, a bool tensor shaped like the parameter `name` |
| $F_l$, $W$, $B$ | conv/linear `weight` and `bias` parameters |
| $F_l^r$ | `fresh`, drawn from `RESET_DISTRIBUTIONS[distribution]` |
| $\lceil s_rC\rceil$ | `slim_width(C, split_rate)` |
| $H^\triangle_G$ (slim net) | `extract_slim(dense, slim, split_rate)`, or `slim_copy(dense, split_rate)` |

**On your own model.** Every function takes any ``nn.Module`` tree of ``groups=1`` ``Conv2d``,
``Linear`` and BatchNorm layers, an unmodified torchvision ResNet (BasicBlock or Bottleneck)
included: ``kels_masks`` → ``reinitialize_reset`` each generation → ``slim_copy`` for the slim
net, which needs no width multiplier in the constructor. The model must register its layers in
forward order (the first conv keeps its input channels, the last Linear its classes), its
classifier must read pooled channels (not a flattened map), and every residual sum must add
tensors of equal width, so that the shared "first channels" rule lines them up.

**Deviations at this scale.** Mini-ResNet and 3-conv plain nets (``labkit.models.small_cnn``)
instead of ResNet18/VGG11; no concatenating architectures, so no per-segment masks. The first
conv is identified by position (the first Conv2d), not by "3 input channels" as in the official
code, so grey-scale inputs work. Masks live in a dict beside the model instead of inside
``SplitConv``; save the dict with the checkpoint to keep a WELS mask fixed.
"""
from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import nn

from labkit.config import as_generator, check_choice, check_range
from labkit.models.small_cnn import scaled_width

__all__ = [
    "check_split_rate", "slim_width", "split_layers", "kels_masks", "wels_masks", "MASK_KINDS",
    "split_masks", "RESET_DISTRIBUTIONS", "reinitialize_reset", "extract_slim", "slim_copy",
    "mean_abs_weight_blocks", "kernel_magnitude",
]

_SPLIT_TYPES = (nn.Conv2d, nn.Linear)


def check_split_rate(split_rate: float) -> float:
    """Return ``split_rate`` if it lies in the open interval (0, 1); otherwise raise ValueError."""
    if isinstance(split_rate, bool) or not isinstance(split_rate, numbers.Real):
        raise ValueError(f"split_rate={split_rate!r} is not valid; it must be a number in (0, 1)")
    # s_r = 1 leaves nothing to reset and s_r = 0 nothing to keep: both are not knowledge evolution
    check_range("split_rate", split_rate, 0, 1, low_open=True, high_open=True)
    return float(split_rate)


def slim_width(width: int, split_rate: float) -> int:
    r"""$\lceil s_r\,C\rceil$: the fit (slim) width; the same function builds the slim model."""
    return scaled_width(width, check_split_rate(split_rate))


def split_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv2d and Linear layers of ``model`` as (name, module), in registration order.

    ``model`` is any module tree (a labkit backbone, torchvision's resnet18/resnet50, ...) whose
    convs have ``groups=1``; its Conv2d weights are ``(C_o, C_i, k, k)``, Linear ``(C_o, C_i)``.

    The first entry is taken as the first conv (it keeps every input channel) and the last Linear
    as the classifier (it keeps every class output), so register modules in forward order.
    """
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, _SPLIT_TYPES)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to split")
    for name, module in layers:
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"layer {name!r} is a grouped conv (groups={module.groups}); "
                             f"the KELS block rule is defined for groups=1 only")
    return layers


def _roles(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], str, str | None]:
    layers = split_layers(model)
    linears = [name for name, module in layers if isinstance(module, nn.Linear)]
    return layers, layers[0][0], (linears[-1] if linears else None)


def _block_sizes(module: nn.Module, split_rate: float, first: bool, classifier: bool) -> tuple[int, int]:
    """(fit outputs, fit inputs) of one layer under the KELS rule and its two exceptions."""
    out_features, in_features = module.weight.shape[:2]
    keep_out = out_features if classifier else slim_width(out_features, split_rate)
    keep_in = in_features if first else slim_width(in_features, split_rate)
    return keep_out, keep_in


def kels_masks(model: nn.Module, split_rate: float) -> dict[str, torch.Tensor]:
    """KELS masks keyed by parameter name ("stem.0.weight", "classifier.bias", ...).

    A conv weight ``(C_o, C_i, k, k)`` gets True exactly on ``[:ceil(s C_o), :ceil(s C_i)]``; the
    first conv on ``[:ceil(s C_o), :]``; the classifier weight ``(classes, C_i)`` on
    ``[:, :ceil(s C_i)]`` and a full bias. Other biases: True on their first ``ceil(s C_o)``.
    """
    check_split_rate(split_rate)
    layers, first, classifier = _roles(model)
    masks = {}
    for name, module in layers:
        keep_out, keep_in = _block_sizes(module, split_rate, name == first, name == classifier)
        weight_mask = torch.zeros(module.weight.shape, dtype=torch.bool, device=module.weight.device)
        weight_mask[:keep_out, :keep_in] = True  # the top-left block: first filters, first kernels
        masks[f"{name}.weight"] = weight_mask
        if module.bias is not None:
            bias_mask = torch.zeros(module.bias.shape, dtype=torch.bool, device=module.bias.device)
            bias_mask[:keep_out] = True  # keep_out is every class for the classifier
            masks[f"{name}.bias"] = bias_mask
    return masks


def wels_masks(model: nn.Module, split_rate: float, generator=None) -> dict[str, torch.Tensor]:
    """WELS masks: every conv/linear weight (and bias) entry is fit with probability ``split_rate``.

    Drawn once from ``generator`` (a Generator, an int seed, or None for the default seed); keep
    the dict for every generation. The result is sparse and gives no slim network.
    """
    check_split_rate(split_rate)
    generator = as_generator(generator)
    masks = {}
    for name, module in split_layers(model):
        for kind in ("weight", "bias"):
            param = getattr(module, kind)
            if param is not None:  # drawn on the CPU so a seed gives the same mask on any device
                draw = torch.rand(param.shape, generator=generator)
                masks[f"{name}.{kind}"] = (draw < split_rate).to(param.device)
    return masks


MASK_KINDS = {"kels": kels_masks, "wels": wels_masks}


def split_masks(model: nn.Module, kind: str, split_rate: float, generator=None) -> dict[str, torch.Tensor]:
    """Masks of ``kind`` (a key of ``MASK_KINDS``); ``generator`` is used by WELS only."""
    check_choice("kind", kind, MASK_KINDS)
    if kind == "kels":
        return kels_masks(model, split_rate)
    return wels_masks(model, split_rate, generator)


def _default_reset(shape, fan_in: int, is_bias: bool, generator) -> torch.Tensor:
    # PyTorch's default layer init, what the official split_reinitialize draws: kaiming_uniform_
    # with a=sqrt(5) has bound sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in), the bias bound too.
    fresh = torch.empty(shape)
    if is_bias:
        return nn.init.uniform_(fresh, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
    return nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)


def _normal_reset(shape, fan_in: int, is_bias: bool, generator) -> torch.Tensor:
    # the generation-1 init of labkit.models.small_cnn.init_weights; biases keep the default init
    if is_bias:
        return _default_reset(shape, fan_in, True, generator)
    return nn.init.kaiming_normal_(torch.empty(shape), mode="fan_in", nonlinearity="relu",
                                   generator=generator)


def _zeros_reset(shape, fan_in: int, is_bias: bool, generator) -> torch.Tensor:
    return torch.zeros(shape)  # the official code warns this is not optimal; an ablation


RESET_DISTRIBUTIONS = {"default": _default_reset, "normal": _normal_reset, "zeros": _zeros_reset}


@torch.no_grad()
def reinitialize_reset(model: nn.Module, masks: dict[str, torch.Tensor], distribution: str = "default",
                       generator=None) -> nn.Module:
    r"""Algorithm 1, step 2, in place: $p \leftarrow M\odot p + (1-M)\odot p^r$ for every masked p.

    ``masks`` maps conv/linear parameter names to bool tensors shaped like them (``split_masks``).
    $p^r$ is drawn fresh from ``RESET_DISTRIBUTIONS[distribution]`` on the CPU with ``generator``
    (a Generator or an int seed for determinism; None uses torch's global RNG, so successive
    generations draw different tensors). BatchNorm parameters and running statistics are never
    touched. Returns ``model``.
    """
    check_choice("distribution", distribution, RESET_DISTRIBUTIONS)
    generator = None if generator is None else as_generator(generator)
    layers = dict(split_layers(model))
    draw = RESET_DISTRIBUTIONS[distribution]
    for key, mask in masks.items():
        layer_name, _, kind = key.rpartition(".")
        if layer_name not in layers or kind not in ("weight", "bias"):
            raise ValueError(f"mask {key!r} does not name a Conv2d/Linear weight or bias of the model; "
                             f"only those are re-initialised (BatchNorm never is)")
        layer = layers[layer_name]
        param = getattr(layer, kind)
        if param is None or mask.shape != param.shape:
            got = None if param is None else tuple(param.shape)
            raise ValueError(f"mask {key!r} has shape {tuple(mask.shape)} but the parameter has {got}")
        fan_in = layer.weight[0].numel()  # C_i/groups * k * k, or in_features
        fresh = draw(param.shape, fan_in, kind == "bias", generator).to(param.device, param.dtype)
        param.copy_(torch.where(mask.to(param.device), param, fresh))  # fit kept, reset redrawn
    return model


def _check_shape(name: str, what: str, got, expected, split_rate: float) -> None:
    if tuple(got) != tuple(expected):
        raise ValueError(f"slim {what} of {name!r} has shape {tuple(got)}, but split_rate={split_rate} "
                         f"implies {tuple(expected)}; build the slim model with width_multiplier=split_rate "
                         f"or use slim_copy(dense, split_rate)")


@torch.no_grad()
def extract_slim(dense: nn.Module, slim: nn.Module, split_rate: float) -> nn.Module:
    """Copy the KELS fit slices of ``dense`` into ``slim`` (same class at width_multiplier=split_rate).

    Conv weights ``[:d_out, :d_in]`` (first conv: all inputs), BatchNorm weight, bias, running mean
    and variance ``[:d_out]``, classifier ``[:, :d_in]`` with its full bias; residual downsample
    convs and BNs the same way. Every layer keeps its *first* channels, so residual sums line up.
    The classifier must read pooled channels (not a flattened map). Returns ``slim``.
    """
    check_split_rate(split_rate)
    if type(dense) is not type(slim):
        raise ValueError(f"slim is a {type(slim).__name__} but dense is a {type(dense).__name__}")
    _, first, classifier = _roles(dense)
    dense_modules, slim_modules = dict(dense.named_modules()), dict(slim.named_modules())
    if dense_modules.keys() != slim_modules.keys():
        differ = sorted(dense_modules.keys() ^ slim_modules.keys())
        raise ValueError(f"dense and slim models have different modules: {differ}")
    for name, source in dense_modules.items():
        target = slim_modules[name]
        if isinstance(source, _SPLIT_TYPES):
            keep_out, keep_in = _block_sizes(source, split_rate, name == first, name == classifier)
            expected = (keep_out, keep_in, *source.weight.shape[2:])
            _check_shape(name, "weight", target.weight.shape, expected, split_rate)
            target.weight.copy_(source.weight[:keep_out, :keep_in])
            if source.bias is not None:
                target.bias.copy_(source.bias[:keep_out])
        elif isinstance(source, nn.modules.batchnorm._BatchNorm):
            # the slim BN normalises with the dense running statistics of its channels (Pitfalls)
            keep = slim_width(source.num_features, split_rate)
            _check_shape(name, "BatchNorm", (target.num_features,), (keep,), split_rate)
            for key in ("weight", "bias", "running_mean", "running_var"):
                if getattr(source, key) is not None:
                    getattr(target, key).copy_(getattr(source, key)[:keep])
            if source.num_batches_tracked is not None:
                target.num_batches_tracked.copy_(source.num_batches_tracked)
        elif any(True for _ in source.parameters(recurse=False)):
            raise ValueError(f"layer {name!r} ({type(source).__name__}) has parameters that "
                             f"extract_slim does not know how to slice")
    return slim


def _resized(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` like ``tensor`` (a Parameter stays a Parameter)."""
    fresh = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(fresh, requires_grad=tensor.requires_grad)
    return fresh


def _narrow(module: nn.Module, shapes: dict[str, tuple[int, ...]], sizes: dict[str, int]) -> None:
    """Give ``module`` empty tensors of the slim ``shapes`` and the matching size attributes."""
    for key, shape in shapes.items():
        if getattr(module, key) is not None:  # bias=False, affine=False, no running statistics
            setattr(module, key, _resized(getattr(module, key), shape))
    for key, size in sizes.items():
        setattr(module, key, size)  # in_channels, out_features, num_features, ...: kept truthful for repr


_SIZE_NAMES = {nn.Conv2d: ("out_channels", "in_channels"), nn.Linear: ("out_features", "in_features")}


def slim_copy(dense: nn.Module, split_rate: float) -> nn.Module:
    r"""The KELS slim network $H^\triangle$ of any ``dense`` model, e.g. a torchvision ResNet.

    A deep copy of ``dense`` in which every Conv2d ``(C_o, C_i, k, k)`` becomes ``(ceil(s C_o),
    ceil(s C_i), k, k)`` (the first conv keeps ``C_i``), the classifier ``(classes, ceil(s C_i))``,
    and every BatchNorm ``ceil(s C)`` wide; ``extract_slim`` then copies the fit slices into it.
    Same class, forward, device, dtype and train/eval mode as ``dense``, which is not changed.
    Inputs and outputs are those of ``dense``: ``(b, C_in, h, w)`` images → ``(b, classes)``.
    """
    check_split_rate(split_rate)
    _, first, classifier = _roles(dense)  # refuses a model without layers or with grouped convs
    slim = copy.deepcopy(dense)
    for name, module in slim.named_modules():
        if isinstance(module, _SPLIT_TYPES):
            keep_out, keep_in = _block_sizes(module, split_rate, name == first, name == classifier)
            size_names = _SIZE_NAMES[nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear]
            _narrow(module, {"weight": (keep_out, keep_in, *module.weight.shape[2:]), "bias": (keep_out,)},
                    dict(zip(size_names, (keep_out, keep_in))))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            keep = slim_width(module.num_features, split_rate)
            _narrow(module, dict.fromkeys(("weight", "bias", "running_mean", "running_var"), (keep,)),
                    {"num_features": keep})
    return extract_slim(dense, slim, split_rate)


def mean_abs_weight_blocks(weight: torch.Tensor, split_rate: float) -> dict[str, float]:
    """Mean |w| over the fit block ``[:ceil(s C_o), :ceil(s C_i)]`` and over the rest of one conv
    (or linear) weight ``(C_o, C_i[, k, k])``, as the official code logs each generation."""
    keep_out, keep_in = slim_width(weight.shape[0], split_rate), slim_width(weight.shape[1], split_rate)
    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    mask[:keep_out, :keep_in] = True
    magnitude = weight.detach().abs()
    reset = magnitude[~mask]
    return {"fit": magnitude[mask].mean().item(),
            "reset": reset.mean().item() if reset.numel() else float("nan")}


def kernel_magnitude(weight: torch.Tensor) -> torch.Tensor:
    r"""$\frac1{k^2}\sum_{u,v}|F[o,i,u,v]|$ of ``(C_o, C_i, k, k)`` → ``(C_o, C_i)``; a linear
    weight ``(C_o, C_i)`` gives its |W|. The weight-magnitude heatmap of one layer."""
    if weight.ndim not in (2, 4):
        raise ValueError(f"weight must be (C_o, C_i, k, k) or (C_o, C_i); got shape {tuple(weight.shape)}")
    magnitude = weight.detach().abs()
    return magnitude.mean(dim=(2, 3)) if weight.ndim == 4 else magnitude

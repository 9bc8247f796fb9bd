r"""The Lottery Ticket Hypothesis for Object Recognition — magnitude pruning with rewinding.

Sharath Girish, Shishira R. Maiya, Kamal Gupta, Hao Chen, Larry S. Davis, Abhinav Shrivastava.
CVPR 2021, arXiv 2012.04643. Official code: ``Sharath-girish/LTH-ObjectRecognition``.

**The idea.** Train a detector densely, remove the smallest-magnitude weights of a chosen set of
layers, rewind the survivors to their values early in training, and retrain with the removed
weights held at zero. If the sparse network (the "ticket") matches the dense one, the dense
network contained it. The paper finds detection tickets up to about 80 % sparsity when they are
found on the detection task itself, while tickets transferred from ImageNet lose AP early.

**Equations** (notation of the spec; weights ``w``, masks ``m`` in {0, 1}, prunable set
:math:`\mathcal P`, keep ratio :math:`\kappa`, rounds :math:`R`):

- (1) round schedule: round ``r = 1..R-1`` keeps :math:`\kappa_r = \kappa^{r/(R-1)}` of
  :math:`\mathcal P`; ``R = 2`` is one-shot pruning (``keep_schedule``).
- (2) global threshold: :math:`\tau_r` is the :math:`\lfloor \kappa_r |\mathcal P| \rfloor`-th
  largest :math:`|w_i|` over all of :math:`\mathcal P`, pruned weights ranking last, and
  :math:`m_i \leftarrow m_i [|w_i| \ge \tau_r]` (``global_magnitude_masks``). Layer-wise pruning
  applies the same :math:`\kappa_r` to each tensor on its own (``layerwise_magnitude_masks``).
- (3) rewind: :math:`w \leftarrow m \odot w_{t_r}` with the optimizer state of iteration
  :math:`t_r`, then retrain re-applying :math:`w \leftarrow m \odot w` after every optimizer step
  (``rewind``, ``enforce_masks``).
- (4) reporting: sparsity over :math:`\mathcal P` and network sparsity = pruned weights / all
  parameters (``sparsity``); the paper's tables use the second.

**Symbols → code:** :math:`\kappa` ``keep``; :math:`R` ``num_rounds``; :math:`\mathcal P` the keys
of ``weights`` (from ``prunable_weights``); :math:`m` ``masks`` (name → bool tensor, True = kept);
:math:`w_{t_r}` ``checkpoint["model"]`` with ``checkpoint["optimizer"]``.

**On a torchvision detector.** Every function takes a plain ``nn.Module`` and name → tensor dicts,
so an unmodified ``torchvision.models.detection`` model works as it is: ``detector_prunable_weights``
gives :math:`\mathcal P` (backbone with FPN, RPN conv, RoI box/mask/keypoint heads; the predictors
stay dense, as in the paper's COCO code), then ``global_magnitude_masks``, ``checkpoint``,
``rewind`` and ``enforce_masks`` as for any model (``tests/methods/test_lottery_torchvision.py``).

**Ties.** The threshold is taken as "the ``k`` largest by a stable sort", so exactly
:math:`\lfloor \kappa |\mathcal P| \rfloor` weights survive even when magnitudes tie at the
threshold (the spec's pitfall); ties are broken by position.
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


def _check_keep(keep: object) -> float:
    if not isinstance(keep, numbers.Real) or isinstance(keep, bool) or not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"keep={keep!r} is not valid; it must be a fraction in (0, 1] "
                         "(the share of prunable weights kept; sparsity = 1 - keep)")
    return float(keep)


def kept_count(keep: float, size: int) -> int:
    r""":math:`\lfloor \kappa n \rfloor`, rounded to 9 decimals first so that float noise
    (``0.29 * 100 = 28.999…``) does not drop a weight."""
    return math.floor(round(_check_keep(keep) * size, 9))


def keep_schedule(keep: float, num_rounds: int) -> list[float]:
    r"""Eq. (1): the keep ratio after each pruning round, :math:`\kappa^{r/(R-1)}` for ``r = 1..R-1``."""
    keep = _check_keep(keep)
    if not isinstance(num_rounds, numbers.Integral) or isinstance(num_rounds, bool) or num_rounds < 2:
        raise ValueError(f"num_rounds={num_rounds!r} is not valid; it must be an int >= 2 "
                         "(2 = one-shot: one dense training, one prune, one retraining)")
    return [keep ** (r / (num_rounds - 1)) for r in range(1, num_rounds)]


def prunable_weights(model: nn.Module, modules: Sequence[str] | None = None, *,
                     exclude: Sequence[str] = ()) -> dict[str, nn.Parameter]:
    """Conv and linear weights (``dim >= 2``) under ``modules`` (name prefixes; all when None),
    minus those under ``exclude``. Biases and normalisation parameters (1-D) always stay dense."""
    named = dict(model.named_parameters())
    prefixes = tuple(modules) if modules is not None else ("",)
    top_level = sorted({name.split(".")[0] for name in named})

    def under(name: str, prefix: str) -> bool:
        return prefix == "" or name == prefix or name.startswith(prefix + ".")

    for label, entries in (("modules", prefixes), ("exclude", tuple(exclude))):
        for prefix in entries:
            if prefix and not any(under(name, prefix) for name in named):
                raise ValueError(f"{label} entry {prefix!r} is not valid; it names no parameter "
                                 f"(the model's modules are {top_level})")

    return {name: p for name, p in named.items()
            if p.dim() >= 2 and any(under(name, q) for q in prefixes) and not any(under(name, q) for q in exclude)}


# The modules of a torchvision two-stage detector (``torchvision.models.detection``: Faster, Mask and
# Keypoint R-CNN) that the paper's COCO code prunes: the backbone (body and FPN), the RPN and the RoI
# heads' box, mask and keypoint heads. The RoI predictors (``roi_heads.*_predictor``) lie outside them.
DETECTOR_MODULES = ("backbone", "rpn", "roi_heads.box_head", "roi_heads.mask_head", "roi_heads.keypoint_head")
# Left dense as in that code: the RPN's 1x1 objectness and box-delta layers (its predictors).
DETECTOR_DENSE = ("rpn.head.cls_logits", "rpn.head.bbox_pred")


def detector_prunable_weights(model: nn.Module, exclude: Sequence[str] = DETECTOR_DENSE) -> dict[str, nn.Parameter]:
    r""":math:`\mathcal P` of an unmodified torchvision two-stage detector: the conv and linear weights
    under those of ``DETECTOR_MODULES`` the model has, minus ``exclude`` (name prefixes; the RPN's
    predictors by default, ``()`` prunes them too). The RoI predictors, biases and normalisation
    parameters always stay dense. E.g. ``fasterrcnn_mobilenet_v3_large_fpn(num_classes=3)``:
    18.9M of its 19.0M parameters are prunable (the box head's fc6 alone holds 12.8M).
    """
    names = [name for name, _ in model.named_parameters()]
    modules = [m for m in DETECTOR_MODULES if any(name.startswith(m + ".") for name in names)]
    if not {"backbone", "rpn"} <= set(modules):
        top_level = sorted({name.split(".")[0] for name in names})
        raise ValueError(f"model is not valid; it must be a torchvision two-stage detector with 'backbone', "
                         f"'rpn' and 'roi_heads' modules (its modules are {top_level})")
    return prunable_weights(model, modules, exclude=exclude)


def full_masks(weights: Mapping[str, torch.Tensor]) -> Masks:
    """All-True masks: nothing pruned yet."""
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


def _check_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None) -> Masks:
    if masks is None:
        return full_masks(weights)
    if set(masks) != set(weights):
        raise ValueError(f"masks cover {sorted(masks)} but the weights are {sorted(weights)}")
    for name, w in weights.items():
        if masks[name].shape != w.shape:
            raise ValueError(f"mask {name!r} has shape {tuple(masks[name].shape)}, its weight {tuple(w.shape)}")
    return {name: m.bool() for name, m in masks.items()}


def _top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest ``scores`` (1-D); ties broken by position.

    The same mask as the first ``k`` of a stable descending sort (ties at the ``k``-th value go to
    the earliest positions), found with one selection, O(n), instead of a sort: a detector's ~19M
    weights take a fraction of a second instead of several.
    """
    n = scores.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, n - k + 1).values  # the k-th largest
    mask = scores > threshold
    ties = torch.nonzero(scores == threshold).flatten()  # in position order
    mask[ties[:k - int(mask.sum())]] = True
    return mask


def _scores(w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # |w| for surviving weights, -1 for pruned ones: they rank last, so masks only shrink.
    magnitude = w.detach().abs().double()  # float64 so that close magnitudes do not tie
    return torch.where(m, magnitude, torch.full_like(magnitude, -1.0)).flatten()


def _check_not_growing(kept: int, k: int, keep: float, where: str) -> None:
    if k > kept:
        raise ValueError(f"keep={keep!r} would keep {k} weights{where} but only {kept} survive; "
                         "masks only shrink, so pass a keep ratio at most the current one")


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], keep: float,
                           masks: Mapping[str, torch.Tensor] | None = None) -> Masks:
    r"""Eq. (2): keep the :math:`\lfloor \kappa |\mathcal P| \rfloor` largest ``|w|`` over all tensors."""
    keep = _check_keep(keep)
    masks = _check_masks(weights, masks)
    names = list(weights)
    scores = torch.cat([_scores(weights[n], masks[n]) for n in names])
    k = kept_count(keep, len(scores))
    _check_not_growing(int(sum(int(m.sum()) for m in masks.values())), k, keep, "")
    flat = _top_k_mask(scores, k)
    out, start = {}, 0
    for name in names:
        size = weights[name].numel()
        out[name] = flat[start:start + size].view(weights[name].shape).to(weights[name].device)
        start += size
    return out


def layerwise_magnitude_masks(weights: Mapping[str, torch.Tensor], keep: float,
                              masks: Mapping[str, torch.Tensor] | None = None) -> Masks:
    r"""Eq. (2), layer-wise: keep the :math:`\lfloor \kappa n_\ell \rfloor` largest ``|w|`` of each tensor."""
    keep = _check_keep(keep)
    masks = _check_masks(weights, masks)
    out = {}
    for name, w in weights.items():
        k = kept_count(keep, w.numel())
        _check_not_growing(int(masks[name].sum()), k, keep, f" of {name!r}")
        out[name] = _top_k_mask(_scores(w, masks[name]), k).view(w.shape).to(w.device)
    return out


def random_masks_like(masks: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> Masks:
    """Masks that keep as many weights per tensor as ``masks`` do, at random positions (a control)."""
    out = {}
    for name, m in masks.items():
        k = int(m.sum())
        order = torch.randperm(m.numel(), generator=generator)
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[order[:k]] = True
        out[name] = flat.view(m.shape).to(m.device)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Eq. (3): ``w ← m ⊙ w`` in place for every masked parameter of ``model``."""
    named = dict(model.named_parameters())
    missing = sorted(set(masks) - set(named))
    if missing:
        raise ValueError(f"masks name parameters the model does not have: {missing}")
    for name, m in masks.items():
        named[name].mul_(m.to(named[name].device, named[name].dtype))


def enforce_masks(model: nn.Module, masks: Mapping[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer | None = None) -> list:
    """Apply ``masks`` now, after every ``optimizer.step()`` and after every ``load_state_dict``.

    Momentum and weight decay would otherwise revive pruned weights, and a checkpoint load would
    restore them (the spec's first pitfall). Returns the hook handles (``.remove()`` to detach).
    """
    masks = dict(masks)
    apply_masks(model, masks)
    handles = [model.register_load_state_dict_post_hook(lambda module, keys: apply_masks(model, masks))]
    if optimizer is not None:
        handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: apply_masks(model, masks)))
    return handles


def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> dict:
    """A rewind point: copies of the model and optimizer state at iteration ``step``."""
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    opt_state = _clone(optimizer.state_dict()) if optimizer is not None else None
    return {"model": state, "optimizer": opt_state, "step": int(step)}


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def rewind(model: nn.Module, optimizer: torch.optim.Optimizer | None, saved: Mapping,
           masks: Mapping[str, torch.Tensor] | None = None) -> int:
    """Eq. (3): load ``saved`` (from ``checkpoint``) into ``model`` and ``optimizer``, then apply
    ``masks``. The optimizer state is restored only when both it and ``saved["optimizer"]`` exist.
    Returns the rewind iteration."""
    for key in ("model", "step"):
        if key not in saved:
            raise ValueError(f"saved checkpoint has no {key!r} entry; make it with lottery.checkpoint")
    model.load_state_dict(saved["model"])
    if optimizer is not None and saved.get("optimizer"):
        optimizer.load_state_dict(_clone(saved["optimizer"]))
    if masks is not None:
        apply_masks(model, masks)
    return int(saved["step"])


def sparsity(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Eq. (4): pruned share of the prunable weights and of all parameters (network sparsity)."""
    num_prunable = sum(m.numel() for m in masks.values())
    num_pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    num_parameters = sum(p.numel() for p in model.parameters())
    return {"prunable": num_pruned / max(num_prunable, 1), "network": num_pruned / num_parameters,
            "num_pruned": num_pruned, "num_prunable": num_prunable, "num_parameters": num_parameters}


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Pruned fraction of each masked tensor."""
    return {name: 1.0 - float(m.float().mean()) for name, m in masks.items()}


def mask_iou(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """IoU of the kept weights of two masks over the same tensors (early-bird similarity)."""
    if set(a) != set(b):
        raise ValueError(f"masks cover different tensors: {sorted(set(a) ^ set(b))}")
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"mask {n!r} has shapes {tuple(a[n].shape)} and {tuple(b[n].shape)}")
    inter = sum(int((a[n].bool() & b[n].bool()).sum()) for n in a)
    union = sum(int((a[n].bool() | b[n].bool()).sum()) for n in a)
    return inter / union if union else 1.0

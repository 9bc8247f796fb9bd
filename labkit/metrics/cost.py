"""Inference cost of a model: parameters and multiply-accumulates (MACs), counted with forward hooks.

A real forward pass of a zero tensor runs through the model, and every Conv2d and Linear records
what it computed, so the count follows the model's actual shapes (strides, pooling, slim widths).

- Conv2d: MACs = output elements per sample × (C_in / groups) × k_h × k_w (a bias adds no MAC).
- Linear: MACs = in_features × out_features per output position (one position for ``(b, d)``).
- ``params`` counts every parameter of the model, BatchNorm included; a layer's own ``params``
  are its weight and bias. BatchNorm, pooling and activations add no MACs here.

Knowledge evolution reports slim against dense GOps this way (conv MACs ≈ $s_r^2$ of dense).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from labkit.config import check_positive_int

__all__ = ["count_cost"]


def count_cost(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """Parameters and per-sample MACs of ``model`` on an input of ``input_shape`` (e.g. (1, 1, 16, 16)).

    Runs ``model`` once on zeros in eval mode under no_grad and restores every module's previous
    train/eval mode. Returns ``dict(params, macs, conv_params, conv_macs, per_layer)`` where
    ``per_layer`` lists ``dict(name, kind, params, macs)`` for each Conv2d/Linear call in forward
    order. MACs are per sample: a batch of b counts once, not b times.
    """
    shape = tuple(check_positive_int("input_shape", size) for size in input_shape)
    if not shape:
        raise ValueError("input_shape must include the batch size, e.g. (1, 1, 16, 16)")
    batch = shape[0]
    per_layer: list[dict] = []

    def record(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            own_params = sum(p.numel() for p in module.parameters(recurse=False))
            if isinstance(module, nn.Conv2d):
                kernel_h, kernel_w = module.kernel_size
                per_output = (module.in_channels // module.groups) * kernel_h * kernel_w
                macs = output.numel() // batch * per_output
                kind = "conv"
            else:  # Linear: one in×out product per output position
                positions = output.numel() // batch // module.out_features
                macs = positions * module.in_features * module.out_features
                kind = "linear"
            per_layer.append(dict(name=name, kind=kind, params=own_params, macs=int(macs)))
        return hook

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training

    convs = [layer for layer in per_layer if layer["kind"] == "conv"]
    return dict(
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(layer["macs"] for layer in per_layer),
        # from the modules, not the calls, so a conv used twice counts its weights once
        conv_params=sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d)
                        for p in m.parameters(recurse=False)),
        conv_macs=sum(layer["macs"] for layer in convs),
        per_layer=per_layer,
    )

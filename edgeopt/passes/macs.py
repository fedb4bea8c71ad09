"""Multiply-accumulates and weight bytes of a layer as it runs: float torch layers and edgeopt modules
(dense, block-sparse, low-rank; float or int8). Counted once here for every pass and report.

MACs are the products the kernel actually performs: a block-sparse layer counts its stored blocks
(zeros inside a stored block included), a low-rank layer rank * (in + out) per row.
"""
from __future__ import annotations

import torch
from torch import nn


def _edgeopt_nn():
    from edgeopt import nn as enn

    return enn


def call_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """MACs of one call module(x) -> y for the layer types edgeopt knows (0 for anything else)."""
    enn = _edgeopt_nn()
    if not isinstance(y, torch.Tensor) or not isinstance(x, torch.Tensor):
        return 0
    if isinstance(module, (nn.Conv2d, enn.QuantConv2d)):
        kh, kw = module.kernel_size
        return y.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.modules.conv._ConvNd):
        return y.numel() * module.weight[0].numel()
    if isinstance(module, enn.SparseConv2d):
        info = module.packed_info()
        per_pixel = info["blocks"] * info["block"][0] * info["block"][1]
        pixels = y.numel() // module.out_channels
        return pixels * per_pixel
    if isinstance(module, enn.SparseLinear):
        info = module.packed_info()
        return (x.numel() // module.in_features) * info["blocks"] * info["block"][0] * info["block"][1]
    if isinstance(module, enn.LowRankLinear):
        return (x.numel() // module.in_features) * module.macs_per_row()
    if isinstance(module, (nn.Linear, enn.QuantLinear, enn.HalfLinear)):
        return (x.numel() // module.in_features) * module.in_features * module.out_features
    return 0


@torch.no_grad()
def count_macs(module: nn.Module, *inputs) -> int:
    """MACs per sample (the input's first dimension) of module(*inputs), summed over its layers."""
    total = 0

    def hook(m, args, out):
        nonlocal total
        if args:
            total += call_macs(m, args[0], out)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        module(*inputs)
    finally:
        for h in handles:
            h.remove()
    x = inputs[0]
    batch = x.shape[0] if x.dim() > 1 else 1
    return total // max(1, batch)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the layer's weights as stored: parameters and buffers (packed weights, scales, bias),
    BatchNorm running statistics excluded."""
    total = 0
    for m in module.modules():
        stats = ("running_mean", "running_var", "num_batches_tracked") if isinstance(
            m, nn.modules.batchnorm._BatchNorm) else ()
        for name, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None and name not in stats:
                total += t.numel() * t.element_size()
    return total

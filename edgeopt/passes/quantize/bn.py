"""BatchNorm folding: a conv or linear layer followed by a BatchNorm becomes one layer."""
from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(layer: nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of `layer` computing bn(layer(x)) with the BatchNorm's running statistics folded in. The fold
    scales whole output channels, so a pruned layer's zero pattern is unchanged."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("edgeopt: cannot fold a BatchNorm without running statistics")
    out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != out:
        raise ValueError(f"edgeopt: BatchNorm has {bn.num_features} features, the layer {out} outputs")
    folded = copy.deepcopy(layer)
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gain = inv_std * (bn.weight.double() if bn.weight is not None else 1.0)
    beta = bn.bias.double() if bn.bias is not None else 0.0
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(out, dtype=torch.float64)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    folded.weight = nn.Parameter((layer.weight.double() * gain.reshape(shape)).float(), requires_grad=False)
    folded.bias = nn.Parameter(((bias - bn.running_mean.double()) * gain + beta).float(), requires_grad=False)
    return folded

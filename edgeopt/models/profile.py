"""Model cost: multiply-accumulates and parameters.

MACs are counted with forward hooks on the layers that do the arithmetic (convolutions, linear layers,
and the two matmuls inside `vit.Attention`), for one sample. Element-wise work (BN, activations,
pooling) is left out, as in the usual published MAC figures (ResNet-18: 1.82 G).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from edgeopt.models.vit import Attention


@dataclass(frozen=True)
class ModelCost:
    macs: int
    params: int

    def __str__(self) -> str:
        return f"{self.macs / 1e6:.2f} M MACs, {self.params / 1e6:.3f} M params"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layer_macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = module.weight[0].numel()  # (in_channels / groups) * prod(kernel_size)
        return output.numel() * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, Attention):
        b, n, c = inputs[0].shape
        return 2 * b * n * n * c  # q @ k^T and attn @ v over all heads
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on a single input of shape `input_shape` (without the batch dimension)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _layer_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        model(torch.zeros(1, *input_shape, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def model_cost(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    return ModelCost(count_macs(model, input_shape), count_params(model))

"""What a layer costs: multiply-accumulates, bytes moved, and which compute ceiling applies.

One counter for every place that needs MACs (model cost figures, the profiler, the benchmarks, the passes):
convolutions and linear layers (torch's and edgeopt's int8 / sparse / low-rank / fp16 modules, counted by
edgeopt.passes.macs, the passes' own counter), matmuls and scaled-dot-product attention. Element-wise work (BatchNorm, activations, pooling, adds) counts no MACs, as in
the usual published figures (ResNet-18: 1.82 G); it counts bytes.

Bytes moved = the layer's tensor inputs + its output + its weights (parameters and buffers, packed weights
as stored), each once: the traffic a layer cannot avoid if nothing stays in cache between layers. An op
that returns a view of its input (flatten, reshape, permute) moves nothing.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Cost:
    macs: int = 0
    weight_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    int8: bool = False          # the arithmetic runs on int8 kernels: the int8 chain is its compute ceiling

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.input_bytes + self.output_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, MACs per byte moved."""
        return self.macs / self.bytes if self.bytes else 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.weight_bytes + other.weight_bytes,
                    self.input_bytes + other.input_bytes, self.output_bytes + other.output_bytes,
                    self.int8 or other.int8)

    def to_dict(self) -> dict:
        return dict(asdict(self), bytes=self.bytes, intensity=self.intensity)


def tensors(value) -> list[torch.Tensor]:
    """The tensors in a (possibly nested) value."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    return []


def nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(value))


def _is_view_of(out: torch.Tensor, inputs: list[torch.Tensor]) -> bool:
    try:
        ptr = out.untyped_storage().data_ptr()
        return any(t.untyped_storage().data_ptr() == ptr for t in inputs)
    except RuntimeError:  # tensors without storage (fake / meta)
        return False


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a layer's weights as stored (the passes' count: BatchNorm running statistics excluded)."""
    from edgeopt.passes.macs import weight_bytes as stored

    return stored(module)


def _is_int8(module: nn.Module) -> bool:
    from edgeopt import nn as eo

    if isinstance(module, (eo.QuantConv2d, eo.QuantLinear)):
        return True
    if isinstance(module, (eo.SparseConv2d, eo.SparseLinear)):
        return module.dtype == "int8"
    if isinstance(module, eo.LowRankLinear):
        return module.weight_dtype == "int8"
    return False


def module_macs(module: nn.Module, inputs, output) -> int:
    """MACs one call of `module` did, from its own arithmetic (0 for element-wise and container modules).
    Layers are counted by the passes' counter (edgeopt.passes.macs: the products each kernel performs, a
    block-sparse layer's stored blocks, a low-rank layer's factors); attention's two matmuls here."""
    from edgeopt.models.vit import Attention  # here: edgeopt.models imports this module
    from edgeopt.passes.macs import call_macs

    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, Attention):
        b, n, c = inputs[0].shape
        return 2 * b * n * n * c  # q @ k^T and attn @ v over all heads
    x = next((t for t in tensors(inputs)), None)
    return call_macs(module, x, output) if x is not None else 0


def _written(out: list[torch.Tensor], ins: list[torch.Tensor], inplace: bool) -> int:
    """Bytes of the outputs an op writes: an in-place op writes its input, a view writes nothing."""
    return sum(t.numel() * t.element_size() for t in out if inplace or not _is_view_of(t, ins))


def module_cost(module: nn.Module, inputs, output) -> Cost:
    ins = tensors(inputs)
    out = tensors(output)
    moved_out = _written(out, ins, bool(getattr(module, "inplace", False)))
    if out and moved_out == 0:  # a view (flatten, identity, dropout in eval): nothing read or written
        return Cost(int8=_is_int8(module))
    return Cost(module_macs(module, inputs, output), weight_bytes(module), nbytes(ins), moved_out, _is_int8(module))


_MATMULS = {torch.matmul, operator.matmul, torch.mm, torch.bmm, F.linear}


def function_macs(target, args, kwargs, output) -> int:
    """MACs of a torch function call between layers (the ones that do arithmetic; 0 otherwise)."""
    out = output if isinstance(output, torch.Tensor) else None
    if out is None:
        return 0
    if target in _MATMULS and args and isinstance(args[0], torch.Tensor):
        return out.numel() * args[0].shape[-1]
    if target in (F.conv1d, F.conv2d, F.conv3d) and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return out.numel() * args[1][0].numel()
    if target is F.scaled_dot_product_attention and len(args) >= 3:
        q, k = args[0], args[1]
        return 2 * q.numel() // q.shape[-1] * k.shape[-2] * q.shape[-1]
    return 0


def function_cost(target, args, kwargs, output, inplace: bool = False) -> Cost:
    ins = tensors(args) + tensors(kwargs)
    out = tensors(output)
    moved_out = _written(out, ins, inplace)
    if out and moved_out == 0:
        return Cost()
    return Cost(function_macs(target, args, kwargs, output), 0, nbytes(ins), moved_out)


# --------------------------------------------------------------------------------------- whole models

@dataclass(frozen=True)
class ModelCost:
    macs: int
    params: int

    def __str__(self) -> str:
        return f"{self.macs / 1e6:.2f} M MACs, {self.params / 1e6:.3f} M params"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on a single input of shape `input_shape` (without the batch dimension)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += module_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        model(torch.zeros(1, *input_shape, dtype=dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def model_cost(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    return ModelCost(count_macs(model, input_shape), count_params(model))

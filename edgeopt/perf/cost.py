"""What a layer costs: multiply-accumulates, bytes moved, and which compute ceiling applies.

One counter for every place that needs MACs (model cost figures, the profiler, the benchmarks, the passes):
convolutions and linear layers (torch's and edgeopt's int8 / sparse / low-rank / fp16 modules: the products
each kernel performs, so a block-sparse layer counts its stored blocks, zeros inside a stored block included,
and a low-rank layer rank * (in + out) per row), matmuls and scaled-dot-product attention. Element-wise work
(BatchNorm, activations, pooling, adds) counts no MACs, as in the usual published figures (ResNet-18: 1.82 G);
it counts bytes.

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
    """Bytes of a layer's (or model's) weights as stored: parameters and buffers (packed weights, scales,
    bias), BatchNorm running statistics excluded."""
    total = 0
    for m in module.modules():
        stats = ("running_mean", "running_var", "num_batches_tracked") if isinstance(
            m, nn.modules.batchnorm._BatchNorm) else ()
        for name, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None and name not in stats:
                total += t.numel() * t.element_size()
    return total


def _is_int8(module: nn.Module) -> bool:
    from edgeopt import nn as eo

    if isinstance(module, (eo.QuantConv2d, eo.QuantLinear)):
        return True
    if isinstance(module, (eo.SparseConv2d, eo.SparseLinear)):
        return module.dtype == "int8"
    if isinstance(module, eo.LowRankLinear):
        return module.weight_dtype == "int8"
    return False


def layer_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """MACs of one call module(x) -> y of a layer type edgeopt knows (0 for anything else)."""
    from edgeopt import nn as eo

    if not isinstance(y, torch.Tensor) or not isinstance(x, torch.Tensor):
        return 0
    if isinstance(module, (nn.Conv2d, eo.QuantConv2d)):
        kh, kw = module.kernel_size
        return y.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.modules.conv._ConvNd):
        return y.numel() * module.weight[0].numel()
    if isinstance(module, eo.SparseConv2d):
        info = module.packed_info()
        pixels = y.numel() // module.out_channels
        return pixels * info["blocks"] * info["block"][0] * info["block"][1]
    if isinstance(module, eo.SparseLinear):
        info = module.packed_info()
        return (x.numel() // module.in_features) * info["blocks"] * info["block"][0] * info["block"][1]
    if isinstance(module, eo.LowRankLinear):
        return (x.numel() // module.in_features) * module.macs_per_row()
    if isinstance(module, (nn.Linear, eo.QuantLinear, eo.HalfLinear)):
        return (x.numel() // module.in_features) * module.in_features * module.out_features
    return 0


def module_macs(module: nn.Module, inputs, output) -> int:
    """MACs one call of `module` did, from its own arithmetic (0 for element-wise and container modules):
    layers by layer_macs, attention's two matmuls here."""
    from edgeopt.models.vit import Attention  # here: edgeopt.models imports this module

    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, Attention):
        b, n, c = inputs[0].shape
        return 2 * b * n * n * c  # q @ k^T and attn @ v over all heads
    x = next((t for t in tensors(inputs)), None)
    return layer_macs(module, x, output) if x is not None else 0


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
def macs_per_sample(module: nn.Module, *inputs) -> int:
    """MACs per sample (the first input's first dimension) of module(*inputs), summed over its layers, in
    the mode the module is in."""
    total = 0

    def hook(m, args, output):
        nonlocal total
        total += module_macs(m, args, output)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        module(*inputs)
    finally:
        for h in handles:
            h.remove()
    x = inputs[0]
    return total // max(1, x.shape[0] if x.dim() > 1 else 1)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass in eval mode on a single input of shape `input_shape` (no batch dimension)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        return macs_per_sample(model, torch.zeros(1, *input_shape, dtype=dtype))
    finally:
        model.train(was_training)


def model_cost(model: nn.Module, input_shape: Sequence[int]) -> ModelCost:
    return ModelCost(count_macs(model, input_shape), count_params(model))

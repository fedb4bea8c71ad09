"""Gradients through the edgeopt modules.

The kernels have no backward. So that a module never cuts the gradient to the layers before it silently,
a call that autograd must see (grad mode on and an input that requires grad) runs the kernel for the value
and takes the gradient of the module's float twin -- `module.float_twin(...)`, the same computation in
float torch ops: the weights as the kernel stores them (int8 values times their scales, fp16 widened,
sparse zeros), the same bias, residual and clamp. For int8 modules that is the straight-through estimator:
the rounding of the input to uint8 counts as identity. The packed weights are buffers and stay frozen.
"""
from __future__ import annotations

import math

import torch


def clamp(y: torch.Tensor, out_min: float, out_max: float) -> torch.Tensor:
    """torch.clamp for the fused activation bounds (infinite bounds are no bound)."""
    if out_min == -math.inf and out_max == math.inf:
        return y
    return torch.clamp(y, None if out_min == -math.inf else out_min, None if out_max == math.inf else out_max)


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _FloatTwinGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, module, *inputs):
        ctx.module = module
        ctx.save_for_backward(*inputs)
        return module.forward(*inputs)  # grad mode is off here: the native path

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        wanted = ctx.needs_input_grad[1:]
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(need) for t, need in zip(inputs, wanted)]
            y = ctx.module.float_twin(*leaves)
            differentiable = [t for t in leaves if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(y, differentiable, grad, allow_unused=True))
        return (None, *(next(grads) if t is not None and t.requires_grad else None for t in leaves))


def float_twin_gradient(module: torch.nn.Module, *inputs: torch.Tensor | None) -> torch.Tensor:
    """module.forward(*inputs) whose backward is float_twin's."""
    label = type(module).__name__
    if torch.compiler.is_compiling():
        raise RuntimeError(f"edgeopt {label}: gradients through edgeopt modules are not traced by torch.compile; "
                           "compile the model for inference (model.eval() under torch.no_grad())")
    if any(t is not None and not t.is_floating_point() for t in inputs):
        raise RuntimeError(f"edgeopt {label}: an integer input carries no gradient")
    if getattr(module, "_output_params", None) is not None:  # U8Output modules after set_output_quant
        raise RuntimeError(f"edgeopt {label}: a uint8 output (set_output_quant) carries no gradient; run the "
                           "quantized chain under torch.no_grad()")
    return _FloatTwinGradient.apply(module, *inputs)

"""HalfLinear: nn.Linear with weights stored as fp16 (or fp32) in edgeopt's packed layout.

Batch-1 Linear layers are memory-bound: every weight is read once per call. Storing the weights as
IEEE half halves the bytes streamed; the kernel widens them with F16C (exactly) and accumulates in fp32,
so the only error is the rounding of the weights to half (relative 2^-11 per weight).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._packed import PackedBuffers
from edgeopt.nn._grad import clamp, float_twin_gradient, needs_grad
from edgeopt.nn._qparams import activation_bounds

WEIGHT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def check_weight_dtype(owner: str, weight_dtype: str) -> None:
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"edgeopt {owner}: weight_dtype must be one of {tuple(WEIGHT_DTYPES)}, got {weight_dtype!r}")


def pack_float(owner: str, weight: torch.Tensor, bias: torch.Tensor | None, weight_dtype: str) -> torch.Tensor:
    """Packs (out, in) float weights as fp16 or fp32; refuses weights that do not fit (NaN, Inf, |w| > 65504 in fp16)."""
    w = weight.detach().to(torch.float32)
    if not torch.isfinite(w).all():
        raise ValueError(f"edgeopt {owner}: the float weight contains NaN or Inf")
    wq = w.to(WEIGHT_DTYPES[weight_dtype]).contiguous()  # round to nearest even
    if not torch.isfinite(wq).all():
        raise ValueError(f"edgeopt {owner}: weights beyond the fp16 range (|w| > 65504); use weight_dtype='fp32'")
    b = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
    return torch.from_numpy(_C.fw_pack(wq.numpy(), b))


def load_packed(owner: str, incoming: torch.Tensor, shape: tuple[int, int], weight_dtype: str, name: str) -> None:
    """Validates a packed buffer from a state_dict: header, contents, dims and weight dtype."""
    info = _C.fw_packed_info(incoming.contiguous().numpy())  # raises on a bad header or contents
    got = (info["out_features"], info["in_features"])
    if got != shape:
        raise ValueError(f"edgeopt {owner}: {name} is {got[0]}x{got[1]}, this module expects {shape[0]}x{shape[1]}")
    if info["weight_dtype"] != weight_dtype:
        raise ValueError(f"edgeopt {owner}: {name} holds {info['weight_dtype']} weights, this module is {weight_dtype}")


class HalfLinear(PackedBuffers, nn.Module):
    """y = act(x @ W^T + bias) with W stored as fp16 (default) or fp32, fp32 accumulation.

    Drop-in for nn.Linear at inference (float32 in, float32 out, any leading dims). Frozen weights; the
    input gets the gradient of `float_twin` (edgeopt.nn._grad).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_dtype: str = "fp16",
                 activation: str | tuple[float, float] | None = None):
        super().__init__()
        check_weight_dtype("HalfLinear", weight_dtype)
        if in_features < 1 or out_features < 1:
            raise ValueError("edgeopt HalfLinear: in_features and out_features must be positive")
        self.in_features = in_features
        self.out_features = out_features
        self.has_bias = bias
        self.weight_dtype = weight_dtype
        self.activation = activation
        self.out_min, self.out_max = activation_bounds(activation)
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.uint8))

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_dtype: str = "fp16",
                   activation: str | tuple[float, float] | None = None) -> "HalfLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"edgeopt HalfLinear.from_float expects nn.Linear, got {type(linear).__name__}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_dtype, activation)
        module.packed_weight = pack_float("HalfLinear", linear.weight, linear.bias, weight_dtype)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_grad(x):
            return float_twin_gradient(self, x)
        run = ops.fw_linear if torch.compiler.is_compiling() else kernels.fw_linear
        return run(x, self.packed_weight, self.in_features, self.out_features, self.out_min, self.out_max)

    def float_twin(self, x: torch.Tensor) -> torch.Tensor:
        """The layer in float torch ops (the stored weight widened, the bias, the clamp): forward's gradient."""
        w, bias = _C.fw_unpack(self.packed_weight.numpy())
        w = torch.from_numpy(w).float()
        return clamp(F.linear(x, w, torch.from_numpy(bias) if self.has_bias else None), self.out_min, self.out_max)

    def weight_float(self) -> torch.Tensor:
        """The weight the kernel uses, widened to float32."""
        w, _ = _C.fw_unpack(self.packed_weight.numpy())
        return torch.from_numpy(w).float()

    def get_extra_state(self) -> dict:
        return {"weight_dtype": self.weight_dtype, "activation": self.activation}

    def set_extra_state(self, state: dict) -> None:
        check_weight_dtype("HalfLinear", state["weight_dtype"])
        self.weight_dtype = state["weight_dtype"]
        self.activation = state["activation"]
        self.out_min, self.out_max = activation_bounds(self.activation)

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        load_packed("HalfLinear", buffer, (self.out_features, self.in_features), state["weight_dtype"], "packed weight")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._load_packed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        act = "" if self.activation in (None, "none") else f", activation={self.activation}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, "
                f"weight_dtype={self.weight_dtype}{act}")

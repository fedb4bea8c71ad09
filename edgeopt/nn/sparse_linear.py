"""SparseLinear: a drop-in nn.Linear on the edgeopt block-sparse kernels, fp32 or int8 weights.

The weight is stored as blocks of `block_cols` output features x 1 (fp32) or x 4 (int8) input features;
only blocks holding a non-zero weight are kept and multiplied, so a layer pruned in such blocks (see
edgeopt.prune, block=(16, 4) or (8, 4)) runs in time proportional to its density. Any weight pattern is
accepted and computed exactly; a pattern that does not zero whole blocks simply saves less.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._packed import PackedBuffers
from edgeopt.nn._grad import clamp, float_twin_gradient, needs_grad
from edgeopt.nn._qparams import (MODES, StaticInputQuant, U8Output, activation_bounds, input_mode, quantize_weight_per_channel,
                                 rows_of)

DTYPES = ("fp32", "int8")
BLOCK_COLS = (8, 16)


class SparseLinear(U8Output, PackedBuffers, StaticInputQuant):
    """y = act(x @ W^T + bias) with W block-sparse. dtype="int8": symmetric per-channel [-63, 63] weights
    and affine uint8 activations (dynamic or static), exactly as edgeopt.nn.QuantLinear; static layers also
    take uint8 input in their input parameters and return uint8 after `set_output_quant`. Frozen weights; the
    input gets the gradient of `float_twin`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "fp32",
                 mode: str = "dynamic", activation: str | tuple[float, float] | None = None, block_cols: int = 16):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"edgeopt SparseLinear: dtype must be one of {DTYPES}, got {dtype!r}")
        if mode not in MODES:
            raise ValueError(f"edgeopt SparseLinear: mode must be one of {MODES}, got {mode!r}")
        if block_cols not in BLOCK_COLS:
            raise ValueError(f"edgeopt SparseLinear: block_cols must be one of {BLOCK_COLS}, got {block_cols!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError("edgeopt SparseLinear: in_features and out_features must be positive")
        self.in_features = in_features
        self.out_features = out_features
        self.has_bias = bias
        self.dtype = dtype
        self.mode = mode
        self.activation = activation
        self.block_cols = block_cols
        self.out_min, self.out_max = activation_bounds(activation)
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.uint8))
        self._register_input_params()

    @classmethod
    def from_float(cls, linear: nn.Linear, mask: torch.Tensor | None = None, dtype: str = "fp32",
                   block_cols: int = 16, mode: str | None = None,
                   calibration_data: Iterable[torch.Tensor] | None = None,
                   input_range: tuple[float, float] | None = None,
                   activation: str | tuple[float, float] | None = None) -> "SparseLinear":
        """Pack a (pruned) nn.Linear. `mask` (bool or 0/1, the weight's shape) zeroes weights first; without it
        the weight's own zeros are the sparsity. int8: static with calibration_data or input_range, dynamic
        without (edgeopt.nn._qparams.input_mode)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"edgeopt SparseLinear.from_float expects nn.Linear, got {type(linear).__name__}")
        if dtype == "int8":
            mode, static_range = input_mode("SparseLinear", mode, calibration_data, input_range,
                                            *rows_of(linear.in_features))
        elif calibration_data is not None or input_range is not None or mode == "static":
            raise ValueError("edgeopt SparseLinear: calibration_data / input_range / mode='static' quantize the input "
                             "of dtype='int8' layers; an fp32 layer takes its float input as it is")
        else:
            mode, static_range = "dynamic", None
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype, mode, activation,
                     block_cols)
        module.pack_weight(linear.weight, linear.bias, mask)
        if static_range is not None:
            module.set_input_range(*static_range)
        return module

    def pack_weight(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None = None) -> None:
        w = weight.detach().to(torch.float32).reshape(self.out_features, self.in_features)
        if mask is not None:
            if tuple(mask.shape) != tuple(w.shape):
                raise ValueError(f"edgeopt SparseLinear: mask shape {tuple(mask.shape)} != weight shape {tuple(w.shape)}")
            w = w * mask.to(torch.bool)
        w = w.contiguous()
        b = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
        if self.dtype == "fp32":
            if not torch.isfinite(w).all():
                raise ValueError("edgeopt SparseLinear: the weight contains NaN or Inf")
            packed = _C.sp_pack(w.numpy(), None, b, self.block_cols)
        else:
            q, scale = quantize_weight_per_channel(w)
            packed = _C.sp_pack(q.numpy(), scale.numpy(), b, self.block_cols)
        self.packed_weight = torch.from_numpy(packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_grad(x):
            return float_twin_gradient(self, x)
        compiling = torch.compiler.is_compiling()
        if self.dtype == "int8":
            run = ops.sparse_quant_linear if compiling else kernels.sparse_quant_linear
            scale, zero_point = self._input_params
            return run(x, self.packed_weight, self.in_features, self.out_features, self.mode == "dynamic", scale,
                       zero_point, self.out_min, self.out_max, *self._output_args())
        run = ops.sparse_linear if compiling else kernels.sparse_linear
        return run(x, self.packed_weight, self.in_features, self.out_features, self.out_min, self.out_max)

    def packed_info(self) -> dict:
        """Format, block shape, stored blocks and density of the packed weight (validates it)."""
        return _C.sp_packed_info(self.packed_weight.numpy())

    @property
    def density(self) -> float:
        return float(self.packed_info()["density"])

    def float_twin(self, x: torch.Tensor) -> torch.Tensor:
        """The layer in float torch ops (the weight as stored, zeros included; the bias; the clamp): forward's
        gradient, and the reference for the int8 input rounding."""
        _, _, bias = _C.sp_unpack(self.packed_weight.numpy())
        return clamp(F.linear(x, self.dense_weight(), torch.from_numpy(bias) if self.has_bias else None),
                     self.out_min, self.out_max)

    def dense_weight(self) -> torch.Tensor:
        """The float weight the kernel effectively uses (int8: values times their scales), zeros included."""
        w, scale, _ = _C.sp_unpack(self.packed_weight.numpy())
        w = torch.from_numpy(w).float()
        return w if scale is None else w * torch.from_numpy(scale)[:, None]

    @property
    def takes_u8_input(self) -> bool:
        return self.dtype == "int8"

    def set_output_quant(self, scale: float | None, zero_point: int = 0) -> None:
        """int8 layers: return uint8 in (scale, zero_point) -- the next int8 layer's input parameters."""
        if scale is not None and self.dtype != "int8":
            raise ValueError("edgeopt SparseLinear: only int8 layers emit uint8 (this one is fp32)")
        super().set_output_quant(scale, zero_point)

    def get_extra_state(self) -> dict:
        return {"dtype": self.dtype, "mode": self.mode, "activation": self.activation, "block_cols": self.block_cols,
                "output_quant": self._output_params}

    def set_extra_state(self, state: dict) -> None:
        self.dtype = state["dtype"]
        self.mode = state["mode"]
        self.activation = state["activation"]
        self.block_cols = state["block_cols"]
        self.out_min, self.out_max = activation_bounds(self.activation)
        self.set_output_quant(*(state.get("output_quant") or (None,)))

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        info = _C.sp_packed_info(buffer.numpy())  # header, every packed value, checksum
        if (info["in_features"], info["out_features"]) != (self.in_features, self.out_features):
            raise ValueError(f"edgeopt SparseLinear: packed weight is {info['out_features']}x{info['in_features']}, "
                             f"this module is {self.out_features}x{self.in_features}")
        if info["weight_dtype"] != state["dtype"]:
            raise ValueError(f"edgeopt SparseLinear: packed weight is {info['weight_dtype']}, the state says "
                             f"{state['dtype']}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._load_packed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._input_params_from_buffers()

    def extra_repr(self) -> str:
        act = "" if self.activation in (None, "none") else f", activation={self.activation}"
        mode = f", mode={self.mode}" if self.dtype == "int8" else ""
        density = f", density={self.density:.3f}" if self.packed_weight.numel() else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, "
                f"dtype={self.dtype}{mode}, block={self.block_cols}x{4 if self.dtype == 'int8' else 1}{density}{act}")

"""SparseConv2d: a drop-in nn.Conv2d (groups=1) on the edgeopt block-sparse kernels, fp32 or int8 weights.

The filter is the (out_channels x kh*kw*in_channels) GEMM matrix in NHWC (ky, kx, c) order -- the order
edgeopt.prune's block masks use for convs -- packed block-sparse. Pixels whose taps are all inside the
input are computed in place (implicit GEMM); only border pixels are gathered. 1x1 convs are the
SparseLinear GEMM over NHWC pixels with no copy at all.
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
                                 images_of)
from edgeopt.nn.quant_conv import QuantConv2d, _pair
from edgeopt.nn.sparse_linear import BLOCK_COLS, DTYPES


class SparseConv2d(U8Output, PackedBuffers, StaticInputQuant):
    """Block-sparse 2-D convolution (groups=1, zero padding). Input float32 NCHW or channels_last; the
    output has the memory format torch's conv would give (or always channels_last with
    `channels_last_output=True`). dtype="int8": per-channel [-63, 63] weights, affine uint8 activations,
    dynamic (per call) or static (calibrated); static layers also take uint8 input in their input parameters,
    return uint8 after `set_output_quant`, and add a residual in the epilogue (16-column blocks) -- the same
    hand-offs as QuantConv2d, so the int8 lowering chains dense and sparse layers alike. Frozen weights; the input gets the
    gradient of `float_twin`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, dtype: str = "fp32", mode: str = "dynamic",
                 activation: str | tuple[float, float] | None = None, block_cols: int = 16,
                 channels_last_output: bool = False):
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"edgeopt SparseConv2d: dtype must be one of {DTYPES}, got {dtype!r}")
        if mode not in MODES:
            raise ValueError(f"edgeopt SparseConv2d: mode must be one of {MODES}, got {mode!r}")
        if block_cols not in BLOCK_COLS:
            raise ValueError(f"edgeopt SparseConv2d: block_cols must be one of {BLOCK_COLS}, got {block_cols!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError("edgeopt SparseConv2d: kernel_size, stride, dilation must be >= 1 and padding >= 0")
        self.has_bias = bias
        self.dtype = dtype
        self.mode = mode
        self.activation = activation
        self.block_cols = block_cols
        self.channels_last_output = channels_last_output
        self.out_min, self.out_max = activation_bounds(activation)
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.uint8))
        self._register_input_params()

    @property
    def takes_u8_input(self) -> bool:
        """uint8 input (quantized with the static input parameters) is taken by int8 layers."""
        return self.dtype == "int8"

    @property
    def adds_residual(self) -> bool:
        """forward(x, residual) works: int8 weights in 16-column blocks (the kernels' epilogue)."""
        return self.dtype == "int8" and self.block_cols == 16

    @classmethod
    def from_float(cls, conv: nn.Conv2d, mask: torch.Tensor | None = None, dtype: str = "fp32",
                   block_cols: int = 16, mode: str | None = None,
                   calibration_data: Iterable[torch.Tensor] | None = None,
                   input_range: tuple[float, float] | None = None,
                   activation: str | tuple[float, float] | None = None) -> "SparseConv2d":
        """Pack a (pruned) nn.Conv2d; `mask` (the weight's shape) zeroes weights first. int8: static with
        calibration_data or input_range, dynamic without (edgeopt.nn._qparams.input_mode)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"edgeopt SparseConv2d.from_float expects nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError("edgeopt SparseConv2d supports groups=1 only (grouped / depthwise convs stay dense)")
        if conv.padding_mode != "zeros":
            raise ValueError(f"edgeopt SparseConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        padding = QuantConv2d._explicit_padding(conv) if isinstance(conv.padding, str) else conv.padding
        if dtype == "int8":
            mode, static_range = input_mode("SparseConv2d", mode, calibration_data, input_range,
                                            *images_of(conv.in_channels))
        elif calibration_data is not None or input_range is not None or mode == "static":
            raise ValueError("edgeopt SparseConv2d: calibration_data / input_range / mode='static' quantize the input "
                             "of dtype='int8' layers; an fp32 layer takes its float input as it is")
        else:
            mode, static_range = "dynamic", None
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                     conv.bias is not None, dtype, mode, activation, block_cols)
        module.pack_weight(conv.weight, conv.bias, mask)
        if static_range is not None:
            module.set_input_range(*static_range)
        return module

    def pack_weight(self, weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None = None) -> None:
        expected = (self.out_channels, self.in_channels, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"edgeopt SparseConv2d: weight has shape {tuple(weight.shape)}, expected {expected}")
        w = weight.detach().to(torch.float32)
        if mask is not None:
            if tuple(mask.shape) != expected:
                raise ValueError(f"edgeopt SparseConv2d: mask shape {tuple(mask.shape)} != weight shape {expected}")
            w = w * mask.to(torch.bool)
        w = w.permute(0, 2, 3, 1).reshape(self.out_channels, -1).contiguous()  # (ky, kx, c): NHWC im2col order
        b = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
        if self.dtype == "fp32":
            if not torch.isfinite(w).all():
                raise ValueError("edgeopt SparseConv2d: the weight contains NaN or Inf")
            packed = _C.sp_pack(w.numpy(), None, b, self.block_cols)
        else:
            q, scale = quantize_weight_per_channel(w)
            packed = _C.sp_pack(q.numpy(), scale.numpy(), b, self.block_cols)
        self.packed_weight = torch.from_numpy(packed)

    def set_output_quant(self, scale: float | None, zero_point: int = 0) -> None:
        """int8 layers: return uint8 in (scale, zero_point) -- the next int8 layer's input parameters."""
        if scale is not None and self.dtype != "int8":
            raise ValueError("edgeopt SparseConv2d: only int8 layers emit uint8 (this one is fp32)")
        super().set_output_quant(scale, zero_point)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) or (C, H, W) float32 (int8 static: or uint8 in the input parameters). `residual`
        (int8, float32 of the output's shape) is added before the fused activation's clamp: relu(conv(x) +
        residual) in one pass, as at the end of a ResNet block."""
        if needs_grad(x, residual):
            return float_twin_gradient(self, x, residual)
        run = ops.sparse_conv2d if torch.compiler.is_compiling() else kernels.sparse_conv2d
        scale, zero_point = self._input_params
        return run(x, self.packed_weight, self.in_channels, self.out_channels, self.kernel_size, self.stride,
                   self.padding, self.dilation, self.mode == "dynamic", scale, zero_point, self.out_min, self.out_max,
                   *self._output_args(), self.channels_last_output, residual)

    def packed_info(self) -> dict:
        return _C.sp_packed_info(self.packed_weight.numpy())

    @property
    def density(self) -> float:
        return float(self.packed_info()["density"])

    def float_twin(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer in float torch ops (the filter as stored, the bias, residual and clamp): forward's gradient."""
        _, _, bias = _C.sp_unpack(self.packed_weight.numpy())
        y = F.conv2d(x, self.dense_weight(), torch.from_numpy(bias) if self.has_bias else None, self.stride,
                     self.padding, self.dilation)
        return clamp(y if residual is None else y + residual, self.out_min, self.out_max)

    def dense_weight(self) -> torch.Tensor:
        """The float filter the kernel effectively uses, torch layout (out, in, kh, kw)."""
        w, scale, _ = _C.sp_unpack(self.packed_weight.numpy())
        w = torch.from_numpy(w).float()
        if scale is not None:
            w = w * torch.from_numpy(scale)[:, None]
        kh, kw = self.kernel_size
        return w.reshape(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2).contiguous()

    def get_extra_state(self) -> dict:
        return {"dtype": self.dtype, "mode": self.mode, "activation": self.activation, "block_cols": self.block_cols,
                "output_quant": self._output_params, "channels_last_output": self.channels_last_output}

    def set_extra_state(self, state: dict) -> None:
        self.dtype = state["dtype"]
        self.mode = state["mode"]
        self.activation = state["activation"]
        self.block_cols = state["block_cols"]
        self.out_min, self.out_max = activation_bounds(self.activation)
        self.channels_last_output = state.get("channels_last_output", False)
        self.set_output_quant(*(state.get("output_quant") or (None,)))

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        info = _C.sp_packed_info(buffer.numpy())  # header, every packed value, checksum
        kh, kw = self.kernel_size
        expected = (self.out_channels, kh * kw * self.in_channels)
        if (info["out_features"], info["in_features"]) != expected:
            raise ValueError(f"edgeopt SparseConv2d: packed filter is {info['out_features']}x{info['in_features']}, "
                             f"this module needs {expected[0]}x{expected[1]}")
        if info["weight_dtype"] != state["dtype"]:
            raise ValueError(f"edgeopt SparseConv2d: packed weight is {info['weight_dtype']}, the state says "
                             f"{state['dtype']}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._load_packed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._input_params_from_buffers()

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}, dilation={self.dilation}, bias={self.has_bias}, dtype={self.dtype}")
        if self.dtype == "int8":
            s += f", mode={self.mode}"
        if self.packed_weight.numel():
            s += f", density={self.density:.3f}"
        if self.activation not in (None, "none"):
            s += f", activation={self.activation}"
        if self._output_params is not None:
            s += f", output=uint8{self._output_params}"
        return s

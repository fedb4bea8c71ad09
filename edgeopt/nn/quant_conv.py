"""QuantConv2d: a drop-in int8 replacement for nn.Conv2d (u8 activations x s8 per-channel weights)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._packed import PackedBuffers
from edgeopt.nn._grad import clamp, float_twin_gradient, needs_grad
from edgeopt.nn._qparams import (MODES, WEIGHT_MAX, StaticInputQuant, U8Output, activation_bounds, images_of,
                                 input_mode, quantize_weight_per_channel)

# Depthwise filters run on their own kernel, which widens to int16 and is exact for full int8 weights.
DEPTHWISE_WEIGHT_MAX = int(_C.QDW_WEIGHT_MAX)


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"edgeopt QuantConv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


class QuantConv2d(U8Output, PackedBuffers, StaticInputQuant):
    """Int8 2-D convolution on the edgeopt kernels.

    Input: float32 (NCHW or channels_last), or uint8 already quantized with this layer's input parameters
    (static mode). The output has the memory format torch's own conv would give the input (or always
    channels_last with `channels_last_output=True`), float32 unless `set_output_quant` asked for uint8.
    Build it with `from_float`; "static" mode uses a calibrated input range, "dynamic" measures each input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, mode: str = "dynamic",
                 activation: str | tuple[float, float] | None = None, channels_last_output: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"edgeopt QuantConv2d: mode must be one of {MODES}, got {mode!r}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"edgeopt QuantConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be multiples of groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError("edgeopt QuantConv2d: kernel_size, stride, dilation must be >= 1 and padding >= 0")
        self.has_bias = bias
        self.mode = mode
        self.activation = activation
        self.out_min, self.out_max = activation_bounds(activation)
        self.channels_last_output = channels_last_output
        # One filter per channel: the dedicated depthwise kernel (full int8 weights).
        self.depthwise = groups > 1 and groups == in_channels == out_channels
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.uint8))
        self._register_input_params()
        self._output_params: tuple[float, int] | None = None

    @classmethod
    def from_float(cls, conv: nn.Conv2d, mode: str | None = None,
                   calibration_data: Iterable[torch.Tensor] | None = None,
                   input_range: tuple[float, float] | None = None,
                   activation: str | tuple[float, float] | None = None,
                   channels_last_output: bool = False) -> "QuantConv2d":
        """Quantize a float nn.Conv2d (weights per output channel). `calibration_data` (inputs of this conv or
        (input, label) pairs, min/max observed) or an explicit `input_range` make it static, neither dynamic
        (the rule of every int8 module: edgeopt.nn._qparams.input_mode)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"edgeopt QuantConv2d.from_float expects nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"edgeopt QuantConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        padding = conv.padding
        if isinstance(padding, str):
            padding = cls._explicit_padding(conv)
        mode, static_range = input_mode("QuantConv2d", mode, calibration_data, input_range,
                                        *images_of(conv.in_channels))
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                     conv.groups, conv.bias is not None, mode, activation, channels_last_output)
        module.set_float_weight(conv.weight, conv.bias)
        if static_range is not None:
            module.set_input_range(*static_range)
        return module

    @staticmethod
    def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int]:
        if conv.padding == "valid":
            return (0, 0)
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            if total % 2:
                raise ValueError("edgeopt QuantConv2d: padding='same' with an even kernel span pads asymmetrically; "
                                 "not supported")
            pads.append(total // 2)
        return tuple(pads)

    def set_float_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Quantizes and packs a float filter bank (out_channels, in_channels/groups, kh, kw)."""
        expected = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"edgeopt QuantConv2d: weight has shape {tuple(weight.shape)}, expected {expected}")
        bias_np = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
        if self.depthwise:
            q, scale = quantize_weight_per_channel(weight, DEPTHWISE_WEIGHT_MAX)
            packed = _C.qdw_pack(q.numpy(), scale.numpy(), bias_np)
        else:
            # (O, Cg, kh, kw) -> (O, kh, kw, Cg): the reduction order of NHWC tiles.
            q, scale = quantize_weight_per_channel(weight.detach().permute(0, 2, 3, 1), WEIGHT_MAX)
            packed = _C.qconv_pack(q.numpy(), scale.numpy(), bias_np, self.groups)
        self.packed_weight = torch.from_numpy(packed)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) or (C, H, W). `residual` (float32, the output's shape) is added before the fused
        activation's clamp: relu(conv(x) + residual) in one pass, as at the end of a ResNet block."""
        if needs_grad(x, residual):
            return float_twin_gradient(self, x, residual)
        run = ops.quant_conv2d if torch.compiler.is_compiling() else kernels.quant_conv2d
        scale, zero_point = self._input_params
        return run(x, self.packed_weight, self.in_channels, self.out_channels, self.kernel_size, self.stride,
                   self.padding, self.dilation, self.groups, self.mode == "dynamic", scale, zero_point, self.out_min,
                   self.out_max, *self._output_args(), self.channels_last_output, residual)

    def plan_node(self):
        """This layer as a node of a native execution plan (edgeopt.runtime): the op its forward calls and
        the same arguments. Inputs: x (NHWC, float32 or uint8 in this layer's input parameters) and an
        optional float32 residual of the output's shape."""
        from edgeopt.runtime import PlanNode

        if self.packed_weight.numel() == 0:
            return None
        scale, zero_point = self._input_params
        out_scale, out_zero_point = self._output_params or (1.0, 0)
        return PlanNode("qconv2d", self.packed_weight, dict(
            kernel=self.kernel_size, stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups, dynamic=self.mode == "dynamic", x_scale=scale, x_zero_point=zero_point,
            out_min=self.out_min, out_max=self.out_max, out_uint8=self._output_params is not None,
            out_scale=out_scale, out_zero_point=out_zero_point), inputs=("x", "residual"))

    def float_twin(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer in float torch ops (the dequantized filter, the bias, residual and clamp): forward's
        gradient, and the reference for the input's rounding to uint8."""
        _, _, bias = _C.qconv_unpack(self.packed_weight.numpy(), self.groups, validate=False)
        y = F.conv2d(x, self.dequantized_weight(), torch.from_numpy(bias) if self.has_bias else None, self.stride,
                     self.padding, self.dilation, self.groups)
        return clamp(y if residual is None else y + residual, self.out_min, self.out_max)

    def dequantized_weight(self) -> torch.Tensor:
        """The float filter the kernel effectively uses (int8 values times their scales), torch layout."""
        q, scale, _ = _C.qconv_unpack(self.packed_weight.numpy(), self.groups, validate=False)
        w = torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None]
        kh, kw = self.kernel_size
        if self.depthwise:
            return w.reshape(self.out_channels, 1, kh, kw)
        return w.reshape(self.out_channels, kh, kw, -1).permute(0, 3, 1, 2).contiguous()

    def get_extra_state(self) -> dict:
        return {"mode": self.mode, "activation": self.activation, "output_quant": self._output_params,
                "channels_last_output": self.channels_last_output}

    def set_extra_state(self, state: dict) -> None:
        self.mode = state["mode"]
        self.activation = state["activation"]
        self.out_min, self.out_max = activation_bounds(self.activation)
        self.channels_last_output = state.get("channels_last_output", False)
        output_quant = state.get("output_quant")
        self.set_output_quant(*(output_quant or (None,)))

    def _check_packed(self, name: str, buffer: torch.Tensor, state: dict) -> None:
        q, _, _ = _C.qconv_unpack(buffer.numpy(), self.groups)  # header, every packed value, checksum
        kh, kw = self.kernel_size
        expected = (self.out_channels, kh * kw * (1 if self.depthwise else self.in_channels // self.groups))
        if q.shape != expected:
            raise ValueError(f"edgeopt QuantConv2d: packed filter is {q.shape}, this module needs {expected}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._load_packed(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._input_params_from_buffers()

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.has_bias}, "
             f"mode={self.mode}")
        if self.activation not in (None, "none"):
            s += f", activation={self.activation}"
        if self._output_params is not None:
            s += f", output=uint8{self._output_params}"
        return s

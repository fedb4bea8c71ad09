"""QuantConv2d: a drop-in int8 replacement for nn.Conv2d (u8 activations x s8 per-channel weights)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._qparams import WEIGHT_MAX, StaticInputQuant, activation_bounds, quantize_weight_per_channel
from edgeopt.nn.quant_linear import observe_min_max

# Depthwise filters run on their own kernel, which widens to int16 and is exact for full int8 weights.
DEPTHWISE_WEIGHT_MAX = int(_C.QDW_WEIGHT_MAX)


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"edgeopt QuantConv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


class QuantConv2d(StaticInputQuant):
    """Int8 2-D convolution on the edgeopt kernels.

    Input: float32 (NCHW or channels_last), or uint8 already quantized with this layer's input parameters
    (static mode). The output has the memory format torch's own conv would give the input (or always
    channels_last with `channels_last_output=True`), float32 unless `set_output_quant` asked for uint8.
    Build it with `from_float`; "static" mode uses a calibrated input range, "dynamic" measures each input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, mode: str = "static",
                 activation: str | tuple[float, float] | None = None, channels_last_output: bool = False):
        super().__init__()
        if mode not in ("static", "dynamic"):
            raise ValueError(f"edgeopt QuantConv2d: mode must be 'static' or 'dynamic', got {mode!r}")
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
    def from_float(cls, conv: nn.Conv2d, mode: str = "static", calibration_data: Iterable[torch.Tensor] | None = None,
                   input_range: tuple[float, float] | None = None,
                   activation: str | tuple[float, float] | None = None,
                   channels_last_output: bool = False) -> "QuantConv2d":
        """Quantize a float nn.Conv2d (weights per output channel). Static mode needs `calibration_data`
        (inputs of this conv, min/max observed) or an explicit `input_range`."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"edgeopt QuantConv2d.from_float expects nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"edgeopt QuantConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        padding = conv.padding
        if isinstance(padding, str):
            padding = cls._explicit_padding(conv)
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                     conv.groups, conv.bias is not None, mode, activation, channels_last_output)
        module.set_float_weight(conv.weight, conv.bias)
        if mode == "static":
            if input_range is None:
                if calibration_data is None:
                    raise ValueError("edgeopt QuantConv2d: static mode needs calibration_data or input_range")
                input_range = observe_min_max(calibration_data)
            module.set_input_range(*input_range)
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

    def set_output_quant(self, scale: float | None, zero_point: int = 0) -> None:
        """Make forward return uint8 quantized with (scale, zero_point) -- for a following quantized layer
        whose input parameters these are -- or float32 again with scale=None."""
        if scale is None:
            self._output_params = None
            return
        if not (math.isfinite(scale) and scale > 0) or not 0 <= int(zero_point) <= 255:
            raise ValueError(f"edgeopt QuantConv2d: output scale must be positive and finite and the zero point "
                             f"in [0, 255], got ({scale}, {zero_point})")
        self._output_params = (float(scale), int(zero_point))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) or (C, H, W). `residual` (float32, the output's shape) is added before the fused
        activation's clamp: relu(conv(x) + residual) in one pass, as at the end of a ResNet block."""
        run = ops.quant_conv2d if torch.compiler.is_compiling() else kernels.quant_conv2d
        scale, zero_point = self._input_params
        out_scale, out_zero_point = self._output_params or (1.0, 0)
        return run(x, self.packed_weight, self.in_channels, self.out_channels, self.kernel_size, self.stride,
                   self.padding, self.dilation, self.groups, self.mode == "dynamic", scale, zero_point, self.out_min,
                   self.out_max, out_scale, out_zero_point, self._output_params is not None,
                   self.channels_last_output, residual)

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "packed_weight")
        if incoming is not None:
            # Validates the header and every packed value, and that the filter fits this module, before the
            # generic copy (which would otherwise only report a size mismatch).
            q, _, _ = _C.qconv_unpack(incoming.contiguous().numpy(), self.groups)
            kh, kw = self.kernel_size
            expected = (self.out_channels, kh * kw * (1 if self.depthwise else self.in_channels // self.groups))
            if q.shape != expected:
                raise ValueError(f"edgeopt QuantConv2d: packed filter is {q.shape}, this module needs {expected}")
            self.packed_weight = torch.empty_like(incoming)
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

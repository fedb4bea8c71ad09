"""Pooling on edgeopt's NHWC kernels: MaxPool2d for channels-last activations (float32 or uint8), and
GlobalAvgPool2d, which averages a quantized CNN's last uint8 activation without a trip to float.

torch pools NCHW tensors, and its channels-last and uint8 paths are slow or missing (measured: 6.1 ms for
a 64x112x112 NCHW float pool on one thread, 0.34 ms channels-last, and an error for uint8 channels-last).
A quantized CNN keeps its activations channels-last, and can keep them uint8 across a pool because max
commutes with u8 quantization: pool(quant(x)) == quant(pool(x)).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from edgeopt import kernels, ops


class MaxPool2d(nn.MaxPool2d):
    """Drop-in nn.MaxPool2d: channels-last float32 / uint8 CPU inputs pool on edgeopt's kernel, anything
    else (NCHW, other dtypes, return_indices) on torch's. The output keeps the input's memory format."""

    @classmethod
    def from_float(cls, pool: nn.MaxPool2d) -> "MaxPool2d":
        if not isinstance(pool, nn.MaxPool2d):
            raise TypeError(f"edgeopt MaxPool2d.from_float expects nn.MaxPool2d, got {type(pool).__name__}")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode)

    def forward(self, x: torch.Tensor):
        if (self.return_indices or not x.is_cpu or x.dim() != 4
                or x.dtype not in (torch.float32, torch.uint8)
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        window = (self.kernel_size, self.stride or self.kernel_size, self.padding, self.dilation)
        if torch.compiler.is_compiling():
            return ops.max_pool2d(x, *(list(_pair(v)) for v in window), self.ceil_mode)
        return kernels.max_pool2d(x, *window, self.ceil_mode)  # takes ints or pairs

    def plan_node(self):
        """This pool as a node of a native execution plan (edgeopt.runtime): NHWC float32 or uint8."""
        from edgeopt.runtime import PlanNode

        if self.return_indices:
            return None
        k, s, p, d = (_pair(v) for v in (self.kernel_size, self.stride or self.kernel_size, self.padding,
                                          self.dilation))
        return PlanNode("max_pool2d", None, dict(kernel=k, stride=s, padding=p, dilation=d, ceil_mode=self.ceil_mode),
                        inputs=("x",))


def _check_quant(owner: str, scale: float, zero_point: int) -> tuple[float, int]:
    if not (math.isfinite(scale) and scale > 0) or not 0 <= int(zero_point) <= 255:
        raise ValueError(f"edgeopt {owner}: scale must be positive and finite and the zero point in [0, 255], "
                         f"got ({scale}, {zero_point})")
    return float(scale), int(zero_point)


class GlobalAvgPool2d(nn.Module):
    """Drop-in nn.AdaptiveAvgPool2d(1): each channel's mean over the image, shape (N, C, 1, 1).

    float input: torch's own adaptive_avg_pool2d. uint8 input (a quantized conv's output, quantized with the
    parameters given to `set_input_quant`): edgeopt's native pool reads the bytes in NHWC as they are
    (channels_last input is a view; any other layout is copied once) and returns float32 -- the mean
    dequantized -- or uint8 quantized with the `set_output_quant` parameters, for a quantized head.
    The uint8 result is defined exactly (ukernels/gavgpool.h): the channel sum is exact, the mean one float
    product of it, rounded half to even.
    """

    def __init__(self):
        super().__init__()
        self._input_quant: tuple[float, int] | None = None
        self._output_quant: tuple[float, int] | None = None

    @classmethod
    def from_float(cls, pool: nn.Module) -> "GlobalAvgPool2d":
        if not isinstance(pool, nn.AdaptiveAvgPool2d):
            raise TypeError(f"edgeopt GlobalAvgPool2d.from_float expects nn.AdaptiveAvgPool2d, got {type(pool).__name__}")
        if _pair(pool.output_size) != (1, 1):
            raise ValueError(f"edgeopt GlobalAvgPool2d pools to 1x1; nn.AdaptiveAvgPool2d has output_size "
                             f"{pool.output_size}")
        return cls()

    def set_input_quant(self, scale: float | None, zero_point: int = 0) -> None:
        """The parameters uint8 inputs are quantized with (None: uint8 input is refused again)."""
        self._input_quant = None if scale is None else _check_quant("GlobalAvgPool2d", scale, zero_point)

    def set_output_quant(self, scale: float | None, zero_point: int = 0) -> None:
        """Make uint8 input pool to uint8 quantized with (scale, zero_point), or to float32 with None."""
        self._output_quant = None if scale is None else _check_quant("GlobalAvgPool2d", scale, zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return nn.functional.adaptive_avg_pool2d(x, 1)
        if self._input_quant is None:
            raise TypeError("edgeopt GlobalAvgPool2d: uint8 input needs its quantization parameters; call "
                            "set_input_quant(scale, zero_point) first")
        (scale, zero_point), out_quant = self._input_quant, self._output_quant
        out_scale, out_zero_point = out_quant or (1.0, 0)
        run = ops.global_avgpool_u8 if torch.compiler.is_compiling() else kernels.global_avgpool_u8
        return run(x, scale, zero_point, out_scale, out_zero_point, out_quant is not None)

    def plan_node(self):
        """This pool as a node of a native execution plan (edgeopt.runtime), for uint8 input only (float input
        runs torch's pool): (N, H, W, C) uint8 -> (N, 1, 1, C) float32 or uint8."""
        from edgeopt.runtime import PlanNode

        if self._input_quant is None:
            return None
        (scale, zero_point), out_quant = self._input_quant, self._output_quant
        out_scale, out_zero_point = out_quant or (1.0, 0)
        return PlanNode("global_avg_pool2d", None, dict(x_scale=scale, x_zero_point=zero_point,
                                                        out_uint8=out_quant is not None, out_scale=out_scale,
                                                        out_zero_point=out_zero_point), accepts=(torch.uint8,))

    def get_extra_state(self) -> dict:
        return {"input_quant": self._input_quant, "output_quant": self._output_quant}

    def set_extra_state(self, state: dict) -> None:
        self.set_input_quant(*(state.get("input_quant") or (None,)))
        self.set_output_quant(*(state.get("output_quant") or (None,)))

    def extra_repr(self) -> str:
        parts = []
        if self._input_quant is not None:
            parts.append(f"input=uint8{self._input_quant}")
        if self._output_quant is not None:
            parts.append(f"output=uint8{self._output_quant}")
        return ", ".join(parts)

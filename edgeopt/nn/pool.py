"""MaxPool2d for channels-last activations (float32 or uint8) on edgeopt's NHWC kernel.

torch pools NCHW tensors, and its channels-last and uint8 paths are slow or missing (measured: 6.1 ms for
a 64x112x112 NCHW float pool on one thread, 0.34 ms channels-last, and an error for uint8 channels-last).
A quantized CNN keeps its activations channels-last, and can keep them uint8 across a pool because max
commutes with u8 quantization: pool(quant(x)) == quant(pool(x)).
"""
from __future__ import annotations

import torch
from torch import nn

from edgeopt import ops
from edgeopt._native import _C
from edgeopt.threads import get_num_threads


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's max_pool2d output size along one axis."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start in the padding
    return out


class MaxPool2d(nn.MaxPool2d):
    """Drop-in nn.MaxPool2d: channels-last float32 / uint8 CPU inputs pool on edgeopt's kernel, anything
    else (NCHW, other dtypes, return_indices) on torch's. The output keeps the input's memory format."""

    @classmethod
    def from_float(cls, pool: nn.MaxPool2d) -> "MaxPool2d":
        if not isinstance(pool, nn.MaxPool2d):
            raise TypeError(f"edgeopt MaxPool2d.from_float expects nn.MaxPool2d, got {type(pool).__name__}")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode)

    def forward(self, x: torch.Tensor):
        if (self.return_indices or x.device.type != "cpu" or x.dim() != 4
                or x.dtype not in (torch.float32, torch.uint8)
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        k, s, p, d = (_pair(v) for v in (self.kernel_size, self.stride or self.kernel_size, self.padding,
                                          self.dilation))
        if torch.compiler.is_compiling():
            return ops.maxpool2d_nhwc(x.permute(0, 2, 3, 1), list(k), list(s), list(p), list(d),
                                      self.ceil_mode).permute(0, 3, 1, 2)
        return _maxpool_nhwc(x.permute(0, 2, 3, 1), k, s, p, d, self.ceil_mode).permute(0, 3, 1, 2)


    def plan_node(self):
        """This pool as a node of a native execution plan (edgeopt.runtime): NHWC float32 or uint8."""
        from edgeopt.runtime import PlanNode

        if self.return_indices:
            return None
        k, s, p, d = (_pair(v) for v in (self.kernel_size, self.stride or self.kernel_size, self.padding,
                                          self.dilation))
        return PlanNode("max_pool2d", None, dict(kernel=k, stride=s, padding=p, dilation=d, ceil_mode=self.ceil_mode),
                        inputs=("x",))


def _maxpool_nhwc(x_nhwc: torch.Tensor, k, s, p, d, ceil_mode: bool) -> torch.Tensor:
    n, h, w, c = x_nhwc.shape
    oh = pool_output_size(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow = pool_output_size(w, k[1], s[1], p[1], d[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"edgeopt MaxPool2d: input {h}x{w} is smaller than the pooling window")
    out = torch.empty((n, oh, ow, c), dtype=x_nhwc.dtype)
    _C.maxpool2d(x_nhwc.detach().numpy(), out.numpy(), k, s, p, d, get_num_threads())
    return out

"""MaxPool2d for channels-last activations (float32 or uint8) on edgeopt's NHWC kernel.

torch pools NCHW tensors, and its channels-last and uint8 paths are slow or missing (measured: 6.1 ms for
a 64x112x112 NCHW float pool on one thread, 0.34 ms channels-last, and an error for uint8 channels-last).
A quantized CNN keeps its activations channels-last, and can keep them uint8 across a pool because max
commutes with u8 quantization: pool(quant(x)) == quant(pool(x)).
"""
from __future__ import annotations

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

"""Input checks shared by the edgeopt modules."""
from __future__ import annotations

import torch


def check_input(owner: str, x: torch.Tensor, in_features: int) -> torch.Tensor:
    """Validates x (..., in_features) float32 on the CPU and returns it as 2-D rows the kernel can read."""
    if x.device.type != "cpu":
        raise ValueError(f"edgeopt {owner} runs on the CPU; got a tensor on {x.device}")
    if x.dtype != torch.float32:
        raise TypeError(f"edgeopt {owner} expects float32 input, got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"edgeopt {owner} expects input (..., {in_features}), got {tuple(x.shape)}")
    x2 = x.reshape(-1, in_features)
    if x2.stride(-1) != 1 or (x2.shape[0] > 1 and x2.stride(0) < in_features):
        x2 = x2.contiguous()  # transposed or broadcast views are copied once, here
    return x2


def nhwc_input(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A 4-D (N, C, H, W) input as a contiguous NHWC tensor -- a view when x is channels_last (or has one
    channel), one copy otherwise -- and whether the conv's output should be channels_last too.

    torch's own rule (suggest_memory_format) in two cheap checks -- that function costs ~25 us a call:
    channels_last only when x is not also NCHW-contiguous (one channel or one pixel counts as NCHW)."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return x.permute(0, 2, 3, 1).contiguous(), channels_last

"""torch.library ops over the native kernels, with fake implementations for torch.compile.

This layer only adapts tensors to the framework-free core (zero-copy numpy views) and describes output
shapes; numerics live in C++. Inputs reach the ops already validated by the modules, and the core checks
again, so a direct caller still gets a clear error rather than a crash.
"""
from __future__ import annotations

import torch

from edgeopt._native import _C
from edgeopt.threads import get_num_threads


@torch.library.custom_op("edgeopt::quant_linear", mutates_args=())
def quant_linear(
    x: torch.Tensor,
    packed_weight: torch.Tensor,
    out_features: int,
    dynamic: bool,
    x_scale: float,
    x_zero_point: int,
    out_min: float,
    out_max: float,
    out_scale: float,
    out_zero_point: int,
    out_uint8: bool,
) -> torch.Tensor:
    """(M, K) float32 (or uint8 with x_scale/x_zero_point) -> (M, N) float32, or uint8 if out_uint8."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.uint8 if out_uint8 else torch.float32)
    _C.qlinear(
        x.detach().numpy(),
        packed_weight.numpy(),
        out.numpy(),
        dynamic,
        x_scale,
        x_zero_point,
        out_min,
        out_max,
        out_scale,
        out_zero_point,
        get_num_threads(),
    )
    return out


@quant_linear.register_fake
def _(x, packed_weight, out_features, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale,
      out_zero_point, out_uint8):
    torch._check(x.dim() == 2, lambda: "edgeopt::quant_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.uint8 if out_uint8 else torch.float32)


# --- float-weight linear layers (fp32 / fp16 packed weights) and the fused low-rank layer ---

@torch.library.custom_op("edgeopt::fw_linear", mutates_args=())
def fw_linear(x: torch.Tensor, packed_weight: torch.Tensor, out_features: int, out_min: float,
              out_max: float) -> torch.Tensor:
    """(M, K) float32 -> (M, N) float32: clamp(x @ W^T + bias) with W packed as fp32 or fp16."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
    _C.fw_linear(x.detach().numpy(), packed_weight.numpy(), out.numpy(), out_min, out_max, get_num_threads())
    return out


@fw_linear.register_fake
def _(x, packed_weight, out_features, out_min, out_max):
    torch._check(x.dim() == 2, lambda: "edgeopt::fw_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("edgeopt::low_rank_linear", mutates_args=())
def low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, out_features: int,
                    out_min: float, out_max: float) -> torch.Tensor:
    """(M, K) float32 -> (M, N) float32: clamp((x @ V) @ U^T + bias), fused (intermediate stays in cache)."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
    _C.low_rank_linear(x.detach().numpy(), packed_v.numpy(), packed_u.numpy(), out.numpy(), out_min, out_max,
                       get_num_threads())
    return out


@low_rank_linear.register_fake
def _(x, packed_v, packed_u, out_features, out_min, out_max):
    torch._check(x.dim() == 2, lambda: "edgeopt::low_rank_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("edgeopt::qs8_low_rank_linear", mutates_args=())
def qs8_low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, out_features: int,
                        out_min: float, out_max: float) -> torch.Tensor:
    """(M, K) float32 -> (M, N) float32: low rank with int8 factors, dynamic u8 activations at both stages."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
    _C.qs8_low_rank_linear(x.detach().numpy(), packed_v.numpy(), packed_u.numpy(), out.numpy(), out_min, out_max,
                           get_num_threads())
    return out


@qs8_low_rank_linear.register_fake
def _(x, packed_v, packed_u, out_features, out_min, out_max):
    torch._check(x.dim() == 2, lambda: "edgeopt::qs8_low_rank_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


# --- int8 convolution ---

@torch.library.custom_op("edgeopt::quant_conv2d", mutates_args=())
def quant_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, out_channels: int, kernel: list[int],
                 stride: list[int], padding: list[int], dilation: list[int], groups: int, dynamic: bool,
                 x_scale: float, x_zero_point: int, out_min: float, out_max: float, out_scale: float,
                 out_zero_point: int, out_uint8: bool, residual: torch.Tensor | None = None) -> torch.Tensor:
    """NHWC (N, H, W, C) float32 (or uint8 with x_scale/x_zero_point) -> NHWC (N, OH, OW, out_channels);
    residual: optional float32 NHWC tensor of the output's shape added before the clamp."""
    out = torch.empty(conv_output_shape(x.shape, out_channels, kernel, stride, padding, dilation),
                      dtype=torch.uint8 if out_uint8 else torch.float32)
    _C.qconv2d(x.detach().numpy(), packed_weight.numpy(), out.numpy(), kernel, stride, padding, dilation, groups,
               dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point, get_num_threads(),
               None if residual is None else residual.detach().numpy())
    return out


@quant_conv2d.register_fake
def _(x, packed_weight, out_channels, kernel, stride, padding, dilation, groups, dynamic, x_scale, x_zero_point,
      out_min, out_max, out_scale, out_zero_point, out_uint8, residual=None):
    torch._check(x.dim() == 4, lambda: "edgeopt::quant_conv2d expects an NHWC 4-D input")
    return x.new_empty(conv_output_shape(x.shape, out_channels, kernel, stride, padding, dilation),
                       dtype=torch.uint8 if out_uint8 else torch.float32)


def conv_output_shape(nhwc_shape, out_channels, kernel, stride, padding, dilation) -> tuple:
    n, h, w = nhwc_shape[0], nhwc_shape[1], nhwc_shape[2]
    oh = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return (n, oh, ow, out_channels)


@torch.library.custom_op("edgeopt::maxpool2d_nhwc", mutates_args=())
def maxpool2d_nhwc(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
                   ceil_mode: bool) -> torch.Tensor:
    """NHWC max pooling of a float32 or uint8 tensor (torch's max_pool2d semantics)."""
    from edgeopt.nn.pool import _maxpool_nhwc

    return _maxpool_nhwc(x.contiguous(), kernel, stride, padding, dilation, ceil_mode)


@maxpool2d_nhwc.register_fake
def _(x, kernel, stride, padding, dilation, ceil_mode):
    from edgeopt.nn.pool import pool_output_size

    n, h, w, c = x.shape
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    return x.new_empty((n, oh, ow, c))


@torch.library.custom_op("edgeopt::global_avgpool_u8", mutates_args=())
def global_avgpool_u8(x: torch.Tensor, x_scale: float, x_zero_point: int, out_scale: float, out_zero_point: int,
                      out_uint8: bool) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C) float32 or uint8: each channel's mean (edgeopt.nn.GlobalAvgPool2d)."""
    from edgeopt.nn.pool import _global_avgpool_nhwc

    return _global_avgpool_nhwc(x.contiguous(), x_scale, x_zero_point, out_scale, out_zero_point, out_uint8)


@global_avgpool_u8.register_fake
def _(x, x_scale, x_zero_point, out_scale, out_zero_point, out_uint8):
    return x.new_empty((x.shape[0], x.shape[3]), dtype=torch.uint8 if out_uint8 else torch.float32)


# --- block-sparse layers: fp32 and int8 weights in the packed block-sparse layouts ---

@torch.library.custom_op("edgeopt::sparse_linear", mutates_args=())
def sparse_linear(x: torch.Tensor, packed_weight: torch.Tensor, out_features: int, out_min: float,
                  out_max: float) -> torch.Tensor:
    """(M, K) float32 -> (M, N) float32: clamp(x @ W^T + bias) with W fp32 block-sparse (sp_pack)."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
    _C.sp_linear(x.detach().numpy(), packed_weight.numpy(), out.numpy(), out_min, out_max, get_num_threads())
    return out


@sparse_linear.register_fake
def _(x, packed_weight, out_features, out_min, out_max):
    torch._check(x.dim() == 2, lambda: "edgeopt::sparse_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("edgeopt::sparse_quant_linear", mutates_args=())
def sparse_quant_linear(x: torch.Tensor, packed_weight: torch.Tensor, out_features: int, dynamic: bool,
                        x_scale: float, x_zero_point: int, out_min: float, out_max: float) -> torch.Tensor:
    """(M, K) float32 -> (M, N) float32: the int8 layer (quant_linear) with W int8 block-sparse."""
    out = torch.empty((x.shape[0], out_features), dtype=torch.float32)
    _C.sp_qlinear(x.detach().numpy(), packed_weight.numpy(), out.numpy(), dynamic, x_scale, x_zero_point, out_min,
                  out_max, 1.0, 0, get_num_threads())
    return out


@sparse_quant_linear.register_fake
def _(x, packed_weight, out_features, dynamic, x_scale, x_zero_point, out_min, out_max):
    torch._check(x.dim() == 2, lambda: "edgeopt::sparse_quant_linear expects a 2-D input")
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)


@torch.library.custom_op("edgeopt::sparse_conv2d", mutates_args=())
def sparse_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, out_channels: int, kernel: list[int],
                  stride: list[int], padding: list[int], dilation: list[int], dynamic: bool, x_scale: float,
                  x_zero_point: int, out_min: float, out_max: float) -> torch.Tensor:
    """NHWC (N, H, W, C) float32 -> NHWC float32: block-sparse conv (groups 1), fp32 or int8 packed weights."""
    out = torch.empty(conv_output_shape(x.shape, out_channels, kernel, stride, padding, dilation), dtype=torch.float32)
    _C.sp_conv2d(x.detach().numpy(), packed_weight.numpy(), out.numpy(), kernel, stride, padding, dilation, dynamic,
                 x_scale, x_zero_point, out_min, out_max, 1.0, 0, get_num_threads())
    return out


@sparse_conv2d.register_fake
def _(x, packed_weight, out_channels, kernel, stride, padding, dilation, dynamic, x_scale, x_zero_point, out_min,
      out_max):
    torch._check(x.dim() == 4, lambda: "edgeopt::sparse_conv2d expects an NHWC 4-D input")
    return x.new_empty(conv_output_shape(x.shape, out_channels, kernel, stride, padding, dilation), dtype=torch.float32)

"""torch.library ops over the native kernels, for torch.compile / export.

Each op wraps the function of the same name in `edgeopt.kernels` (the one the modules call directly in
eager mode), and its fake implementation is that function's `*_output` twin: the same argument checks and
messages, the output allocated but not computed. Nothing else lives here: numerics are in C++, checks and
allocation in edgeopt.kernels.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from edgeopt import kernels


def build_fingerprint() -> str:
    """Short hash of what defines the ops' behaviour: this file, edgeopt.kernels (checks and fakes) and the
    built extension (size and modification time)."""
    from edgeopt._native import _C

    h = hashlib.sha1()
    for path in (Path(__file__), Path(kernels.__file__)):
        h.update(path.read_bytes())
    so = Path(_C.__file__).stat()
    h.update(f"{so.st_size}:{so.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _tag_compile_caches() -> None:
    """torch.compile's caches key a graph by its ops' names and schemas, not by what edgeopt's ops and fakes
    do: code compiled against another edgeopt build (other output strides) would be reused after an upgrade
    and read its outputs wrongly. Nor does the key tell the CPU capability ATen sees: a graph compiled where the
    CPU reports AVX-512 and reused where it reports AVX2 only (the avx2only shim, a wheel's cache copied between
    machines) gives wrong results, then heap corruption. Tag every cache key with this build and that
    capability; a tag the user set is kept."""
    from torch.compiler import config

    tag = f"edgeopt-{build_fingerprint()}-{torch.backends.cpu.get_cpu_capability().lower()}"
    if tag not in config.cache_key_tag.split("|"):
        config.cache_key_tag = f"{config.cache_key_tag}|{tag}" if config.cache_key_tag else tag


_tag_compile_caches()


@torch.library.custom_op("edgeopt::quant_linear", mutates_args=())
def quant_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int, dynamic: bool,
                 x_scale: float, x_zero_point: int, out_min: float, out_max: float, out_scale: float,
                 out_zero_point: int, out_uint8: bool) -> torch.Tensor:
    """(..., K) float32 (or uint8 with x_scale/x_zero_point) -> (..., N) float32, or uint8 if out_uint8."""
    return kernels.quant_linear(x, packed_weight, in_features, out_features, dynamic, x_scale, x_zero_point, out_min,
                                out_max, out_scale, out_zero_point, out_uint8)


quant_linear.register_fake(kernels.quant_linear_output)


@torch.library.custom_op("edgeopt::fw_linear", mutates_args=())
def fw_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int, out_min: float,
              out_max: float) -> torch.Tensor:
    """(..., K) float32 -> (..., N) float32: clamp(x @ W^T + bias) with W packed as fp32 or fp16."""
    return kernels.fw_linear(x, packed_weight, in_features, out_features, out_min, out_max)


fw_linear.register_fake(kernels.fw_linear_output)


@torch.library.custom_op("edgeopt::low_rank_linear", mutates_args=())
def low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, in_features: int,
                    out_features: int, out_min: float, out_max: float) -> torch.Tensor:
    """(..., K) float32 -> (..., N) float32: clamp((x @ V) @ U^T + bias), fused (intermediate stays in cache)."""
    return kernels.low_rank_linear(x, packed_v, packed_u, in_features, out_features, out_min, out_max)


low_rank_linear.register_fake(kernels.low_rank_linear_output)


@torch.library.custom_op("edgeopt::qs8_low_rank_linear", mutates_args=())
def qs8_low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, in_features: int,
                        out_features: int, out_min: float, out_max: float) -> torch.Tensor:
    """(..., K) float32 -> (..., N) float32: low rank with int8 factors, dynamic u8 activations at both stages."""
    return kernels.qs8_low_rank_linear(x, packed_v, packed_u, in_features, out_features, out_min, out_max)


qs8_low_rank_linear.register_fake(kernels.low_rank_linear_output)


@torch.library.custom_op("edgeopt::sparse_linear", mutates_args=())
def sparse_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int, out_min: float,
                  out_max: float) -> torch.Tensor:
    """(..., K) float32 -> (..., N) float32: clamp(x @ W^T + bias) with W fp32 block-sparse (sp_pack)."""
    return kernels.sparse_linear(x, packed_weight, in_features, out_features, out_min, out_max)


sparse_linear.register_fake(kernels.sparse_linear_output)


@torch.library.custom_op("edgeopt::sparse_quant_linear", mutates_args=())
def sparse_quant_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int,
                        dynamic: bool, x_scale: float, x_zero_point: int, out_min: float, out_max: float,
                        out_scale: float = 1.0, out_zero_point: int = 0, out_uint8: bool = False) -> torch.Tensor:
    """(..., K) float32 (or uint8) -> (..., N) float32 (or uint8): the int8 layer (quant_linear) with W int8
    block-sparse."""
    return kernels.sparse_quant_linear(x, packed_weight, in_features, out_features, dynamic, x_scale, x_zero_point,
                                       out_min, out_max, out_scale, out_zero_point, out_uint8)


sparse_quant_linear.register_fake(kernels.sparse_quant_linear_output)


@torch.library.custom_op("edgeopt::quant_conv2d", mutates_args=())
def quant_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int,
                 kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int,
                 dynamic: bool, x_scale: float, x_zero_point: int, out_min: float, out_max: float, out_scale: float,
                 out_zero_point: int, out_uint8: bool, channels_last_output: bool = False,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) or (C, H, W) float32 (or uint8 with x_scale/x_zero_point), either memory format -> int8 conv
    output, float32 or uint8; residual: optional float32 of the output's shape added before the clamp."""
    return kernels.quant_conv2d(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation, groups,
                                dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point, out_uint8,
                                channels_last_output, residual)


quant_conv2d.register_fake(kernels.quant_conv2d_output)


@torch.library.custom_op("edgeopt::sparse_conv2d", mutates_args=())
def sparse_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int,
                  kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], dynamic: bool,
                  x_scale: float, x_zero_point: int, out_min: float, out_max: float, out_scale: float = 1.0,
                  out_zero_point: int = 0, out_uint8: bool = False, channels_last_output: bool = False,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) or (C, H, W) float32 (int8 weights: or uint8) -> block-sparse conv (groups 1) output, float32
    (int8 weights: or uint8); residual: optional float32 of the output's shape added before the clamp."""
    return kernels.sparse_conv2d(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation,
                                 dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                                 out_uint8, channels_last_output, residual)


sparse_conv2d.register_fake(kernels.sparse_conv2d_output)


@torch.library.custom_op("edgeopt::max_pool2d", mutates_args=())
def max_pool2d(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
               ceil_mode: bool) -> torch.Tensor:
    """Max pooling of a channels_last (N, C, H, W) float32 or uint8 tensor (torch's max_pool2d semantics)."""
    return kernels.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)


max_pool2d.register_fake(kernels.max_pool2d_output)


@torch.library.custom_op("edgeopt::global_avgpool_u8", mutates_args=())
def global_avgpool_u8(x: torch.Tensor, x_scale: float, x_zero_point: int, out_scale: float, out_zero_point: int,
                      out_uint8: bool) -> torch.Tensor:
    """(N, C, H, W) uint8, either memory format -> (N, C, 1, 1) float32 or uint8: each channel's mean."""
    return kernels.global_avgpool_u8(x, x_scale, x_zero_point, out_scale, out_zero_point, out_uint8)


global_avgpool_u8.register_fake(kernels.global_avgpool_u8_output)

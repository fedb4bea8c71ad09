"""One function per native op: check the arguments, allocate the output, call the core.

The edgeopt modules call these directly in eager mode (a call through the torch.library dispatcher costs
~15 us, as much as a whole small layer at batch 1). The torch.library ops in `edgeopt.ops` wrap the same
functions for torch.compile / export, and their fake implementations are the `*_output` functions here:
the same checks, the same messages, the output allocated but not computed. So a wrong shape, dtype or
argument gives the same error eagerly, under torch.compile and on the meta device, and a meta-device input
gives a meta output of the right shape.

Inputs are taken as torch indexes them: linear layers (..., in_features), convolutions (N, C, H, W) or
unbatched (C, H, W) in either memory format. The output of a convolution has the memory format torch's
own conv would give (channels_last when the input is channels_last and not also NCHW-contiguous), or
channels_last always with `channels_last_output`. Numerics live in C++; the core checks every array
again, so nothing reaches a kernel unchecked.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from edgeopt._native import _C
from edgeopt.threads import get_num_threads

# The module each op serves, as named in its error messages.
QUANT_LINEAR = "QuantLinear"
FLOAT_LINEAR = "HalfLinear"
LOW_RANK = "LowRankLinear"
SPARSE_LINEAR = "SparseLinear"
QUANT_CONV = "QuantConv2d"
SPARSE_CONV = "SparseConv2d"
MAX_POOL = "MaxPool2d"
GLOBAL_AVG_POOL = "GlobalAvgPool2d"


# --- checks shared by the ops ---

def _check_device(label: str, x: torch.Tensor) -> None:
    if not (x.is_cpu or x.is_meta):
        raise ValueError(f"edgeopt {label} runs on the CPU; got a tensor on {x.device}")


def _check_packed(label: str, packed: torch.Tensor, what: str = "weights") -> None:
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError(f"edgeopt {label}: packed {what} must be a 1-D uint8 buffer, got {packed.dtype} "
                        f"{tuple(packed.shape)}")
    if packed.numel() == 0:
        raise RuntimeError(f"edgeopt {label} has no weights yet: build it with {label}.from_float(...) "
                           "or load a state_dict")
    if not (packed.is_cpu or packed.is_meta):
        raise ValueError(f"edgeopt {label} runs on the CPU; its packed {what} are on {packed.device}")


def _check_input_dtype(label: str, x: torch.Tensor, uint8_ok: bool, dynamic: bool) -> None:
    if x.dtype == torch.float32:
        return
    if x.dtype == torch.uint8 and uint8_ok:
        if dynamic:
            raise TypeError(f"edgeopt {label}: a dynamic layer cannot take uint8 input (its parameters are "
                            "measured from float input)")
        return
    raise TypeError(f"edgeopt {label} expects {'float32 or uint8' if uint8_ok else 'float32'} input, got {x.dtype}")


def _check_features(label: str, x: torch.Tensor, in_features: int) -> None:
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"edgeopt {label} expects input (..., {in_features}), got {tuple(x.shape)}")


def _check_clamp(label: str, out_min: float, out_max: float) -> None:
    if not out_min <= out_max:  # also False for NaN
        raise ValueError(f"edgeopt {label}: clamp bounds must satisfy min <= max (and not be NaN), got "
                         f"({out_min}, {out_max})")


def _check_u8_params(label: str, what: str, scale: float, zero_point: int) -> None:
    if not (scale > 0 and math.isfinite(scale)) or not 0 <= zero_point <= 255:
        raise ValueError(f"edgeopt {label}: {what} scale must be positive and finite and the zero point in "
                         f"[0, 255], got ({scale}, {zero_point})")


def _check_quant_args(label: str, dynamic: bool, x_scale: float, x_zero_point: int, out_min: float, out_max: float,
                      out_scale: float, out_zero_point: int, out_uint8: bool) -> None:
    if not dynamic:
        _check_u8_params(label, "input", x_scale, x_zero_point)
    if out_uint8:
        _check_u8_params(label, "output", out_scale, out_zero_point)
    _check_clamp(label, out_min, out_max)


def check_float_rows(label: str, x: torch.Tensor, in_features: int) -> None:
    """The input rules of the float linear ops, for a module's own torch path (a trainable layer in training)."""
    _check_device(label, x)
    _check_input_dtype(label, x, False, True)
    _check_features(label, x, in_features)


def _computes(label: str, x: torch.Tensor, out: torch.Tensor, *packed: torch.Tensor) -> bool:
    """Whether the core has work: not for a meta-device input (shapes only) or an empty output."""
    if x.is_meta:
        return False
    for p in packed:
        if p.is_meta:
            raise ValueError(f"edgeopt {label}: the layer's weights are on the meta device (never loaded); load a "
                             "state_dict or build it with from_float before running it on real data")
    return out.numel() > 0


def _array(t: torch.Tensor):
    """A zero-copy numpy view (detached first only when it must be: detach costs ~1 us)."""
    return (t.detach() if t.requires_grad else t).numpy()


def _rows(x: torch.Tensor, in_features: int) -> torch.Tensor:
    """x (..., K) as 2-D rows the core reads: a view where the layout allows, one copy otherwise."""
    x2 = x if x.dim() == 2 else x.reshape(-1, in_features)
    if (in_features > 1 and x2.stride(1) != 1) or (x2.shape[0] > 1 and x2.stride(0) < in_features):
        x2 = x2.contiguous()  # transposed or broadcast views
    return x2


def _out_rows(out: torch.Tensor, out_features: int) -> torch.Tensor:
    return out if out.dim() == 2 else out.view(-1, out_features)


# --- linear layers: x (..., K) -> (..., N) ---

def quant_linear_output(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int,
                        dynamic: bool, x_scale: float, x_zero_point: int, out_min: float, out_max: float,
                        out_scale: float, out_zero_point: int, out_uint8: bool) -> torch.Tensor:
    _check_device(QUANT_LINEAR, x)
    _check_input_dtype(QUANT_LINEAR, x, True, dynamic)
    _check_features(QUANT_LINEAR, x, in_features)
    _check_packed(QUANT_LINEAR, packed_weight)
    _check_quant_args(QUANT_LINEAR, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                      out_uint8)
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.uint8 if out_uint8 else torch.float32)


def quant_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int, dynamic: bool,
                 x_scale: float, x_zero_point: int, out_min: float, out_max: float, out_scale: float = 1.0,
                 out_zero_point: int = 0, out_uint8: bool = False) -> torch.Tensor:
    """int8 linear: x (..., K) float32 (or uint8 quantized with x_scale / x_zero_point) -> (..., N) float32,
    or uint8 with out_uint8 (quantized with out_scale / out_zero_point)."""
    out = quant_linear_output(x, packed_weight, in_features, out_features, dynamic, x_scale, x_zero_point, out_min,
                              out_max, out_scale, out_zero_point, out_uint8)
    if _computes(QUANT_LINEAR, x, out, packed_weight):
        _C.qlinear(_array(_rows(x, in_features)), packed_weight.numpy(), _out_rows(out, out_features).numpy(),
                   dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point, get_num_threads())
    return out


def _float_linear_output(label: str, x: torch.Tensor, packed: tuple[torch.Tensor, ...], in_features: int,
                         out_features: int, out_min: float, out_max: float) -> torch.Tensor:
    check_float_rows(label, x, in_features)
    for p in packed:
        _check_packed(label, p)
    _check_clamp(label, out_min, out_max)
    return x.new_empty((*x.shape[:-1], out_features))


def _float_linear(label: str, core, x: torch.Tensor, packed: tuple[torch.Tensor, ...], in_features: int,
                  out_features: int, out_min: float, out_max: float) -> torch.Tensor:
    out = _float_linear_output(label, x, packed, in_features, out_features, out_min, out_max)
    if _computes(label, x, out, *packed):
        core(_array(_rows(x, in_features)), *(p.numpy() for p in packed), _out_rows(out, out_features).numpy(),
             out_min, out_max, get_num_threads())
    return out


def fw_linear_output(x, packed_weight, in_features: int, out_features: int, out_min: float,
                     out_max: float) -> torch.Tensor:
    return _float_linear_output(FLOAT_LINEAR, x, (packed_weight,), in_features, out_features, out_min, out_max)


def fw_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int,
              out_min: float = -math.inf, out_max: float = math.inf) -> torch.Tensor:
    """Float-weight linear: x (..., K) float32 -> (..., N) float32, W packed as fp32 or fp16."""
    return _float_linear(FLOAT_LINEAR, _C.fw_linear, x, (packed_weight,), in_features, out_features, out_min, out_max)


def low_rank_linear_output(x, packed_v, packed_u, in_features: int, out_features: int, out_min: float,
                           out_max: float) -> torch.Tensor:
    return _float_linear_output(LOW_RANK, x, (packed_v, packed_u), in_features, out_features, out_min, out_max)


def low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, in_features: int,
                    out_features: int, out_min: float = -math.inf, out_max: float = math.inf) -> torch.Tensor:
    """Fused low rank: clamp((x @ V) @ U^T + bias), factors fp32 / fp16 (fw_pack buffers)."""
    return _float_linear(LOW_RANK, _C.low_rank_linear, x, (packed_v, packed_u), in_features, out_features, out_min,
                         out_max)


def qs8_low_rank_linear(x: torch.Tensor, packed_v: torch.Tensor, packed_u: torch.Tensor, in_features: int,
                        out_features: int, out_min: float = -math.inf, out_max: float = math.inf) -> torch.Tensor:
    """Fused low rank with int8 factors (qs8_pack buffers), dynamic u8 activations at both stages."""
    return _float_linear(LOW_RANK, _C.qs8_low_rank_linear, x, (packed_v, packed_u), in_features, out_features,
                         out_min, out_max)


def sparse_linear_output(x, packed_weight, in_features: int, out_features: int, out_min: float,
                         out_max: float) -> torch.Tensor:
    return _float_linear_output(SPARSE_LINEAR, x, (packed_weight,), in_features, out_features, out_min, out_max)


def sparse_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int,
                  out_min: float = -math.inf, out_max: float = math.inf) -> torch.Tensor:
    """Block-sparse fp32 linear: x (..., K) float32 -> (..., N) float32 (sp_pack buffer)."""
    return _float_linear(SPARSE_LINEAR, _C.sp_linear, x, (packed_weight,), in_features, out_features, out_min,
                         out_max)


def sparse_quant_linear_output(x, packed_weight, in_features: int, out_features: int, dynamic: bool,
                               x_scale: float, x_zero_point: int, out_min: float, out_max: float) -> torch.Tensor:
    _check_device(SPARSE_LINEAR, x)
    _check_input_dtype(SPARSE_LINEAR, x, False, dynamic)
    _check_features(SPARSE_LINEAR, x, in_features)
    _check_packed(SPARSE_LINEAR, packed_weight)
    _check_quant_args(SPARSE_LINEAR, dynamic, x_scale, x_zero_point, out_min, out_max, 1.0, 0, False)
    return x.new_empty((*x.shape[:-1], out_features))


def sparse_quant_linear(x: torch.Tensor, packed_weight: torch.Tensor, in_features: int, out_features: int,
                        dynamic: bool, x_scale: float, x_zero_point: int, out_min: float = -math.inf,
                        out_max: float = math.inf) -> torch.Tensor:
    """Block-sparse int8 linear (the QuantLinear scheme with an int8 sp_pack buffer): (..., K) -> (..., N) float32."""
    out = sparse_quant_linear_output(x, packed_weight, in_features, out_features, dynamic, x_scale, x_zero_point,
                                     out_min, out_max)
    if _computes(SPARSE_LINEAR, x, out, packed_weight):
        _C.sp_qlinear(_array(_rows(x, in_features)), packed_weight.numpy(), _out_rows(out, out_features).numpy(),
                      dynamic, x_scale, x_zero_point, out_min, out_max, 1.0, 0, get_num_threads())
    return out


# --- convolution and pooling: (N, C, H, W) or (C, H, W), either memory format ---

def _pair(label: str, name: str, value, minimum: int) -> tuple[int, int]:
    # exact type checks: a bool is an int, and they are cheaper than isinstance on the per-call path
    if type(value) is int:
        first = second = value
    else:
        try:
            first, second = value
        except (TypeError, ValueError):
            first = second = None
    if type(first) is not int or type(second) is not int or first < minimum or second < minimum:
        raise ValueError(f"edgeopt {label}: {name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return first, second


def window_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                       ceil_mode: bool = False) -> int:
    """torch's conv / max_pool2d output size along one axis (< 1: the window does not fit)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the padding
    return out


def _channels_last(x: torch.Tensor) -> bool:
    """torch's rule (suggest_memory_format) in two cheap checks -- that function costs ~25 us a call: channels_last
    only when x is not also NCHW-contiguous (one channel or one pixel counts as NCHW)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _Window:
    """The geometry of a conv or pool call, checked: input (N, C, H, W) or (C, H, W) -> output (N, OC, OH, OW).

    The core reads and writes NHWC arrays; they are numpy views (transposes there cost a fifth of a torch
    permute), copied only where the tensor's memory format is not NHWC."""

    __slots__ = ("batched", "n", "oh", "ow", "kernel", "stride", "padding", "dilation")

    def __init__(self, label: str, x: torch.Tensor, channels: int, kernel, stride, padding, dilation,
                 ceil_mode: bool = False, what: str = "kernel"):
        shape = x.shape
        if len(shape) not in (3, 4) or shape[-3] != channels:
            raise ValueError(f"edgeopt {label} expects input (N, {channels}, H, W) or ({channels}, H, W), got "
                             f"{tuple(shape)}")
        self.batched = len(shape) == 4
        self.n = shape[0] if self.batched else 1
        h, w = shape[-2], shape[-1]
        self.kernel = k = _pair(label, "kernel_size", kernel, 1)
        self.stride = s = _pair(label, "stride", stride, 1)
        self.padding = p = _pair(label, "padding", padding, 0)
        self.dilation = d = _pair(label, "dilation", dilation, 1)
        self.oh = window_output_size(h, k[0], s[0], p[0], d[0], ceil_mode)
        self.ow = window_output_size(w, k[1], s[1], p[1], d[1], ceil_mode)
        if self.oh < 1 or self.ow < 1:
            raise ValueError(f"edgeopt {label}: input {h}x{w} is smaller than the {what} {k} (dilation {d}, "
                             f"padding {p})")

    def output_shape(self, channels: int) -> tuple:
        return (self.n, channels, self.oh, self.ow) if self.batched else (channels, self.oh, self.ow)

    def output(self, x: torch.Tensor, channels: int, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
        """The op's output, not yet written, on x's device (meta stays meta): channels_last or NCHW-contiguous."""
        h, w = self.oh, self.ow
        if not self.batched:
            return x.new_empty((channels, h, w), dtype=dtype)
        # explicit strides: new_empty_strided keeps x's device (meta, fake) and costs less than a memory_format
        strides = (h * w * channels, 1, w * channels, channels) if channels_last else (channels * h * w, h * w, w, 1)
        return x.new_empty_strided((self.n, channels, h, w), strides, dtype=dtype)

    @staticmethod
    def nhwc_view(t: torch.Tensor):
        """t (N, C, H, W) or (C, H, W) as an NHWC numpy array: a view, C-contiguous when t is channels_last."""
        a = _array(t)
        return (a if a.ndim == 4 else a[None]).transpose(0, 2, 3, 1)

    @classmethod
    def nhwc_input(cls, t: torch.Tensor):
        a = cls.nhwc_view(t)
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)  # NCHW input: one copy

    @classmethod
    def run(cls, out: torch.Tensor, core) -> torch.Tensor:
        """Calls core(nhwc_out) on out's NHWC view, or on a scratch array copied into out when out is NCHW."""
        target = cls.nhwc_view(out)
        if target.flags.c_contiguous:
            core(target)
        else:
            scratch = np.empty(target.shape, target.dtype)
            core(scratch)
            target[...] = scratch
        return out


def _conv_checks(label: str, x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int,
                 kernel, stride, padding, dilation, groups: int) -> _Window:
    _check_device(label, x)
    window = _Window(label, x, in_channels, kernel, stride, padding, dilation)
    if type(groups) is not int or groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"edgeopt {label}: groups ({groups!r}) must be a positive int dividing in_channels "
                         f"({in_channels}) and out_channels ({out_channels})")
    _check_packed(label, packed_weight)
    return window


def _quant_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation, groups,
                          dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point, out_uint8,
                          channels_last_output, residual) -> tuple[_Window, torch.Tensor]:
    g = _conv_checks(QUANT_CONV, x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation, groups)
    _check_input_dtype(QUANT_CONV, x, True, dynamic)
    _check_quant_args(QUANT_CONV, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                      out_uint8)
    if residual is not None:
        _check_device(QUANT_CONV, residual)
        shape = g.output_shape(out_channels)
        if residual.dtype != torch.float32 or tuple(residual.shape) != shape:
            raise ValueError(f"edgeopt {QUANT_CONV}: residual must be float32 of the output's shape {shape}, got "
                             f"{residual.dtype} {tuple(residual.shape)}")
    out = g.output(x, out_channels, torch.uint8 if out_uint8 else torch.float32,
                   channels_last_output or _channels_last(x))
    return g, out


def quant_conv2d_output(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int,
                        kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int,
                        dynamic: bool, x_scale: float, x_zero_point: int, out_min: float, out_max: float,
                        out_scale: float, out_zero_point: int, out_uint8: bool, channels_last_output: bool = False,
                        residual: torch.Tensor | None = None) -> torch.Tensor:
    return _quant_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation,
                                 groups, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                                 out_uint8, channels_last_output, residual)[1]


def quant_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int, kernel, stride,
                 padding, dilation, groups: int, dynamic: bool, x_scale: float, x_zero_point: int, out_min: float,
                 out_max: float, out_scale: float = 1.0, out_zero_point: int = 0, out_uint8: bool = False,
                 channels_last_output: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """int8 convolution (dense, grouped or depthwise, by the packed layout): x float32 (or uint8 with the static
    input parameters) -> float32 (or uint8 with out_uint8); residual (float32, the output's shape) is added
    before the clamp."""
    g, out = _quant_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation,
                                   groups, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale,
                                   out_zero_point, out_uint8, channels_last_output, residual)
    if not _computes(QUANT_CONV, x, out, packed_weight):
        return out
    x_nhwc, packed = g.nhwc_input(x), packed_weight.numpy()
    residual_nhwc = None if residual is None else g.nhwc_input(residual)
    return g.run(out, lambda out_nhwc: _C.qconv2d(
        x_nhwc, packed, out_nhwc, g.kernel, g.stride, g.padding, g.dilation, groups, dynamic, x_scale, x_zero_point,
        out_min, out_max, out_scale, out_zero_point, get_num_threads(), residual_nhwc))


def _sparse_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation, dynamic,
                           x_scale, x_zero_point, out_min, out_max) -> tuple[_Window, torch.Tensor]:
    g = _conv_checks(SPARSE_CONV, x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation, 1)
    _check_input_dtype(SPARSE_CONV, x, False, dynamic)
    _check_quant_args(SPARSE_CONV, dynamic, x_scale, x_zero_point, out_min, out_max, 1.0, 0, False)
    return g, g.output(x, out_channels, torch.float32, _channels_last(x))


def sparse_conv2d_output(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int,
                         kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], dynamic: bool,
                         x_scale: float, x_zero_point: int, out_min: float, out_max: float) -> torch.Tensor:
    return _sparse_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation,
                                  dynamic, x_scale, x_zero_point, out_min, out_max)[1]


def sparse_conv2d(x: torch.Tensor, packed_weight: torch.Tensor, in_channels: int, out_channels: int, kernel, stride,
                  padding, dilation, dynamic: bool, x_scale: float, x_zero_point: int, out_min: float = -math.inf,
                  out_max: float = math.inf) -> torch.Tensor:
    """Block-sparse convolution (groups 1), fp32 or int8 packed weights: x float32 -> float32."""
    g, out = _sparse_conv2d_checked(x, packed_weight, in_channels, out_channels, kernel, stride, padding, dilation,
                                    dynamic, x_scale, x_zero_point, out_min, out_max)
    if not _computes(SPARSE_CONV, x, out, packed_weight):
        return out
    x_nhwc, packed = g.nhwc_input(x), packed_weight.numpy()
    return g.run(out, lambda out_nhwc: _C.sp_conv2d(
        x_nhwc, packed, out_nhwc, g.kernel, g.stride, g.padding, g.dilation, dynamic, x_scale, x_zero_point, out_min,
        out_max, 1.0, 0, get_num_threads()))


def _max_pool2d_checked(x, kernel, stride, padding, dilation, ceil_mode) -> tuple[_Window, torch.Tensor]:
    _check_device(MAX_POOL, x)
    if x.dtype not in (torch.float32, torch.uint8):
        raise TypeError(f"edgeopt {MAX_POOL} expects float32 or uint8 input, got {x.dtype}")
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"edgeopt {MAX_POOL}: the native pool takes a channels_last (N, C, H, W) tensor, got "
                         f"{tuple(x.shape)} with strides {x.stride()}")
    g = _Window(MAX_POOL, x, x.shape[1], kernel, stride, padding, dilation, ceil_mode, "pooling window")
    if g.padding[0] > g.kernel[0] // 2 or g.padding[1] > g.kernel[1] // 2:
        raise ValueError(f"edgeopt {MAX_POOL}: padding {g.padding} must be at most half the kernel size {g.kernel}")
    return g, g.output(x, x.shape[1], x.dtype, True)


def max_pool2d_output(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                      dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    return _max_pool2d_checked(x, kernel, stride, padding, dilation, ceil_mode)[1]


def max_pool2d(x: torch.Tensor, kernel, stride, padding, dilation, ceil_mode: bool = False) -> torch.Tensor:
    """Max pooling of a channels_last float32 or uint8 tensor (torch's max_pool2d semantics, NaN included)."""
    g, out = _max_pool2d_checked(x, kernel, stride, padding, dilation, ceil_mode)
    if not x.is_meta and out.numel():
        _C.maxpool2d(g.nhwc_view(x), g.nhwc_view(out), g.kernel, g.stride, g.padding, g.dilation, get_num_threads())
    return out


def global_avgpool_u8_output(x: torch.Tensor, x_scale: float, x_zero_point: int, out_scale: float,
                             out_zero_point: int, out_uint8: bool) -> torch.Tensor:
    _check_device(GLOBAL_AVG_POOL, x)
    if x.dtype != torch.uint8:
        raise TypeError(f"edgeopt {GLOBAL_AVG_POOL}: the native pool takes uint8 input, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"edgeopt {GLOBAL_AVG_POOL} expects a 4-D (N, C, H, W) tensor, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if h * w == 0:
        raise ValueError(f"edgeopt {GLOBAL_AVG_POOL}: cannot average an empty image ({h}x{w})")
    _check_u8_params(GLOBAL_AVG_POOL, "input", x_scale, x_zero_point)
    if out_uint8:
        _check_u8_params(GLOBAL_AVG_POOL, "output", out_scale, out_zero_point)
    return x.new_empty((n, c, 1, 1), dtype=torch.uint8 if out_uint8 else torch.float32)


def global_avgpool_u8(x: torch.Tensor, x_scale: float, x_zero_point: int, out_scale: float = 1.0,
                      out_zero_point: int = 0, out_uint8: bool = False) -> torch.Tensor:
    """Each channel's mean of a uint8 (N, C, H, W) tensor quantized with (x_scale, x_zero_point), either memory
    format: (N, C, 1, 1) float32, or uint8 quantized with (out_scale, out_zero_point)."""
    out = global_avgpool_u8_output(x, x_scale, x_zero_point, out_scale, out_zero_point, out_uint8)
    if not x.is_meta and out.numel():
        _C.global_avgpool(_Window.nhwc_input(x), out.view(out.shape[0], out.shape[1]).numpy(), x_scale, x_zero_point,
                          out_scale, out_zero_point, get_num_threads())
    return out


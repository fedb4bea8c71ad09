"""Quantization parameters shared by the quantized modules."""
from __future__ import annotations

import math

import torch
from torch import nn

from edgeopt._native import _C

# The packed kernels are exact for |w| <= 63 (the vpmaddubsw pair sum 2*255*63 fits int16).
WEIGHT_MAX = int(_C.QS8_WEIGHT_MAX)

ACTIVATIONS = ("none", "relu", "relu6")


def quantize_weight_per_channel(weight: torch.Tensor, weight_max: int = WEIGHT_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights in [-weight_max, weight_max] and their float scales.
    Dimensions after the first are flattened (conv filters become rows)."""
    w = weight.detach().to(torch.float32).reshape(weight.shape[0], -1)
    if not torch.isfinite(w).all():
        raise ValueError("edgeopt: the float weight contains NaN or Inf; cannot quantize it")
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / weight_max, torch.ones_like(absmax))
    q = torch.round(w / scale[:, None]).clamp_(-weight_max, weight_max).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def u8_params(lo: float, hi: float) -> tuple[float, int]:
    """Affine uint8 (scale, zero_point) covering [min(lo, 0), max(hi, 0)]; the same rule the kernels use."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"edgeopt: activation range ({lo}, {hi}) is not finite")
    scale, zero_point = _C.choose_u8_params(float(lo), float(hi))
    return float(scale), int(zero_point)


def activation_bounds(activation: str | tuple[float, float] | None) -> tuple[float, float]:
    """The clamp that realises a fused activation: 'none', 'relu', 'relu6' or an explicit (min, max)."""
    if activation is None or activation == "none":
        return -math.inf, math.inf
    if activation == "relu":
        return 0.0, math.inf
    if activation == "relu6":
        return 0.0, 6.0
    if isinstance(activation, tuple) and len(activation) == 2 and activation[0] <= activation[1]:
        return float(activation[0]), float(activation[1])
    raise ValueError(f"edgeopt: activation must be one of {ACTIVATIONS} or a (min, max) clamp, got {activation!r}")


class StaticInputQuant(nn.Module):
    """Base of the int8 modules: the static input (scale, zero point). They live in buffers (saved with the
    model) and are mirrored as Python numbers, so forward passes them to the op without a tensor read
    (which keeps torch.compile graphs whole)."""

    def _register_input_params(self) -> None:
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("input_zero_point", torch.tensor(0, dtype=torch.int32))
        self._input_params = (1.0, 0)

    def set_input_range(self, lo: float, hi: float) -> None:
        scale, zero_point = u8_params(lo, hi)
        self.input_scale.fill_(scale)
        self.input_zero_point.fill_(zero_point)
        self._input_params = (scale, zero_point)

    def _input_params_from_buffers(self) -> None:
        """After the buffers were loaded (state_dict), mirror them again."""
        self._input_params = (float(self.input_scale), int(self.input_zero_point))


class U8Output:
    """Mixin of the int8 modules that can hand uint8 to the next int8 layer: `set_output_quant(scale,
    zero_point)` makes forward return uint8 in those parameters (the next layer's input parameters), None
    float32 again. The parameters travel in the module's extra state."""

    _output_params: tuple[float, int] | None = None

    def set_output_quant(self, scale: float | None, zero_point: int = 0) -> None:
        if scale is None:
            self._output_params = None
            return
        if not (math.isfinite(scale) and scale > 0) or not 0 <= int(zero_point) <= 255:
            raise ValueError(f"edgeopt {type(self).__name__}: output scale must be positive and finite and the zero "
                             f"point in [0, 255], got ({scale}, {zero_point})")
        self._output_params = (float(scale), int(zero_point))

    def _output_args(self) -> tuple[float, int, bool]:
        """(out_scale, out_zero_point, out_uint8) as the int8 kernels take them."""
        scale, zero_point = self._output_params or (1.0, 0)
        return scale, zero_point, self._output_params is not None

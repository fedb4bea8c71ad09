"""Quantization parameters shared by the quantized modules."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from edgeopt._native import _C

# The packed kernels are exact for |w| <= 63 (the vpmaddubsw pair sum 2*255*63 fits int16).
WEIGHT_MAX = int(_C.QS8_WEIGHT_MAX)

ACTIVATIONS = ("none", "relu", "relu6")
MODES = ("dynamic", "static")


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
        """Static input quantization covering [min(lo, 0), max(hi, 0)]; a reversed or empty range is refused."""
        check_input_range(type(self).__name__, (lo, hi))
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


def check_input_range(owner: str, input_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise TypeError(f"edgeopt {owner}: input_range must be a (min, max) pair of numbers, got {input_range!r}") \
            from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"edgeopt {owner}: input range ({lo}, {hi}) is not finite")
    if lo > hi:
        raise ValueError(f"edgeopt {owner}: input range ({lo}, {hi}) is reversed; give (min, max)")
    if min(lo, 0.0) == max(hi, 0.0):
        raise ValueError(f"edgeopt {owner}: input range ({lo}, {hi}) is empty: the uint8 grid covers "
                         "[min(lo, 0), max(hi, 0)], which must have a width")
    return lo, hi


def calibration_range(owner: str, data, fits: Callable[[torch.Tensor], bool], expected: str) -> tuple[float, float]:
    """(min, max) over calibration inputs: `data` is one tensor or an iterable of tensors or (input, label) pairs
    (what edgeopt.quantize takes). Every batch must be a float tensor of the layer's input shape (`fits`,
    described by `expected`) holding finite values; empty batches add nothing, but some values must be seen."""
    if isinstance(data, torch.Tensor):
        data = [data]
    try:
        batches = iter(data)
    except TypeError:
        raise TypeError(f"edgeopt {owner}: calibration_data must be a tensor or an iterable of tensors or (input, "
                        f"label) pairs, got {type(data).__name__}") from None
    lo, hi, seen = math.inf, -math.inf, 0
    for i, batch in enumerate(batches):
        if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            batch = batch[0]  # an (input, label) pair
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
            what = batch.dtype if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise TypeError(f"edgeopt {owner}: calibration batch {i} is {what}; expected a float tensor or an (input, "
                            "label) pair")
        if not fits(batch):
            raise ValueError(f"edgeopt {owner}: calibration batch {i} has shape {tuple(batch.shape)}; the layer takes "
                             f"{expected}")
        if batch.numel() == 0:
            continue
        bad = int((~torch.isfinite(batch)).sum())
        if bad:
            raise ValueError(f"edgeopt {owner}: calibration batch {i} holds {bad} NaN or Inf value(s); calibration "
                             "inputs must be finite")
        lo, hi = min(lo, float(batch.min())), max(hi, float(batch.max()))
        seen += 1
    if not seen:
        raise ValueError(f"edgeopt {owner}: calibration_data holds no values (no batches, or only empty ones)")
    if min(lo, 0.0) == max(hi, 0.0):
        raise ValueError(f"edgeopt {owner}: every calibration input is 0, which gives no range; pass input_range= "
                         "or data the layer will see")
    return lo, hi


def rows_of(in_features: int) -> tuple[Callable[[torch.Tensor], bool], str]:
    """A linear layer's calibration input rule: (fits, description)."""
    return (lambda x: x.dim() >= 1 and x.shape[-1] == in_features), f"(..., {in_features})"


def images_of(in_channels: int) -> tuple[Callable[[torch.Tensor], bool], str]:
    """A conv layer's calibration input rule: (fits, description)."""
    return ((lambda x: x.dim() in (3, 4) and x.shape[-3] == in_channels),
            f"(N, {in_channels}, H, W) or ({in_channels}, H, W)")


def input_mode(owner: str, mode: str | None, calibration_data: Iterable | None, input_range,
               fits: Callable[[torch.Tensor], bool], expected: str) -> tuple[str, tuple[float, float] | None]:
    """The rule every int8 module's from_float follows: calibration_data or input_range makes the layer static
    (its input range fixed, values outside saturate), neither makes it dynamic (each call measures its input).
    An explicit mode must agree. Returns (mode, the static range or None)."""
    given = calibration_data is not None or input_range is not None
    if mode is None:
        mode = "static" if given else "dynamic"
    if mode not in MODES:
        raise ValueError(f"edgeopt {owner}: mode must be one of {MODES} (or None: static when calibration_data or "
                         f"input_range is given), got {mode!r}")
    if mode == "dynamic":
        if given:
            raise ValueError(f"edgeopt {owner}: a dynamic layer measures each input; calibration_data / input_range "
                             "make it static (drop mode='dynamic', or drop the range)")
        return mode, None
    if input_range is not None:
        if calibration_data is not None:
            raise ValueError(f"edgeopt {owner}: give calibration_data or input_range, not both")
        return mode, check_input_range(owner, input_range)
    if calibration_data is None:
        raise ValueError(f"edgeopt {owner}: static mode needs calibration_data or input_range")
    return mode, calibration_range(owner, calibration_data, fits, expected)

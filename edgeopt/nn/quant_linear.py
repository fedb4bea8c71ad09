"""QuantLinear: a drop-in int8 replacement for nn.Linear (float32 in, float32 out)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from edgeopt import kernels, ops
from edgeopt._native import _C
from edgeopt.nn._qparams import StaticInputQuant, activation_bounds, quantize_weight_per_channel

MODES = ("dynamic", "static")


class QuantLinear(StaticInputQuant):
    """y = act(dequant(quant_u8(x) @ W_s8^T) + bias) on the edgeopt int8 kernels.

    Weights: symmetric per output channel in [-63, 63] (7 bits; exact on AVX2 without VNNI, see
    csrc/ukernels/qgemm.h), packed once. Activations: affine uint8 per tensor, from each call's
    min/max (mode="dynamic") or from a calibrated range (mode="static"; values outside saturate).
    Inputs must be finite: NaN or Inf raise ValueError. Inference only (no autograd).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "dynamic",
                 activation: str | tuple[float, float] | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"edgeopt QuantLinear: mode must be one of {MODES}, got {mode!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError("edgeopt QuantLinear: in_features and out_features must be positive")
        self.in_features = in_features
        self.out_features = out_features
        self.has_bias = bias
        self.mode = mode
        self.activation = activation
        self.out_min, self.out_max = activation_bounds(activation)
        self.register_buffer("packed_weight", torch.empty(0, dtype=torch.uint8))
        self._register_input_params()

    @classmethod
    def from_float(cls, linear: nn.Linear, mode: str = "dynamic",
                   calibration_data: Iterable[torch.Tensor] | None = None,
                   input_range: tuple[float, float] | None = None,
                   activation: str | tuple[float, float] | None = None) -> "QuantLinear":
        """Quantize a float nn.Linear. Static mode needs `calibration_data` (inputs to observe, min/max)
        or an explicit `input_range`."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"edgeopt QuantLinear.from_float expects nn.Linear, got {type(linear).__name__}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, mode, activation)
        q, scale = quantize_weight_per_channel(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float32).contiguous()
        module.packed_weight = torch.from_numpy(
            _C.qs8_pack(q.numpy(), scale.numpy(), None if bias is None else bias.numpy()))
        if mode == "static":
            if input_range is None:
                if calibration_data is None:
                    raise ValueError("edgeopt QuantLinear: static mode needs calibration_data or input_range")
                input_range = observe_min_max(calibration_data)
            module.set_input_range(*input_range)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) float32, or uint8 already quantized with this layer's input parameters (static)."""
        run = ops.quant_linear if torch.compiler.is_compiling() else kernels.quant_linear
        scale, zero_point = self._input_params
        return run(x, self.packed_weight, self.in_features, self.out_features, self.mode == "dynamic", scale,
                   zero_point, self.out_min, self.out_max, 1.0, 0, False)

    def plan_node(self):
        """This layer as a node of a native execution plan (edgeopt.runtime): rows (N, in_features) of
        float32 in, float32 out, the op and arguments its forward uses."""
        from edgeopt.runtime import PlanNode

        if self.packed_weight.numel() == 0:
            return None
        scale, zero_point = self._input_params
        return PlanNode("qlinear", self.packed_weight, dict(
            dynamic=self.mode == "dynamic", x_scale=scale, x_zero_point=zero_point, out_min=self.out_min,
            out_max=self.out_max), inputs=("x",), layout="rows")

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the kernel effectively uses (int8 values times their scales)."""
        q, scale, _ = _C.qs8_unpack(self.packed_weight.numpy())
        return torch.from_numpy(q).float() * torch.from_numpy(scale)[:, None]

    def get_extra_state(self) -> dict:
        # Saved with the state_dict so a static checkpoint cannot be loaded into a dynamic module unnoticed.
        return {"mode": self.mode, "activation": self.activation}

    def set_extra_state(self, state: dict) -> None:
        self.mode = state["mode"]
        self.activation = state["activation"]
        self.out_min, self.out_max = activation_bounds(self.activation)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "packed_weight")
        if incoming is not None:
            # The buffer's length depends on the layer's dims, so validate the incoming header and size
            # our buffer to it before the generic copy (which would otherwise report a size mismatch).
            info = _C.qs8_packed_info(incoming.contiguous().numpy())  # raises on a bad header or contents
            if (info["in_features"], info["out_features"]) != (self.in_features, self.out_features):
                raise ValueError(
                    f"edgeopt QuantLinear: packed weight is {info['out_features']}x{info['in_features']}, "
                    f"this module is {self.out_features}x{self.in_features}")
            self.packed_weight = torch.empty_like(incoming)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._input_params_from_buffers()

    def extra_repr(self) -> str:
        act = "" if self.activation in (None, "none") else f", activation={self.activation}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, "
                f"mode={self.mode}{act}")


def observe_min_max(batches: Iterable[torch.Tensor]) -> tuple[float, float]:
    """Running min/max over calibration inputs."""
    lo, hi = math.inf, -math.inf
    for batch in batches:
        lo = min(lo, float(batch.min()))
        hi = max(hi, float(batch.max()))
    if lo > hi:
        raise ValueError("edgeopt: calibration_data was empty")
    return lo, hi

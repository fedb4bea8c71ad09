"""quantize_linear_layers: every nn.Linear -> QuantLinear (see edgeopt.passes.quantize_linear)."""
from edgeopt.passes.quantize_linear import quantize_linear_layers

__all__ = ["quantize_linear_layers"]

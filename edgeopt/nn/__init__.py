"""Drop-in nn.Module replacements backed by edgeopt kernels."""
from edgeopt.nn.quant_linear import QuantLinear

__all__ = ["QuantLinear"]

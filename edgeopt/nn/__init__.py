"""Drop-in nn.Module replacements backed by edgeopt kernels."""
from edgeopt.nn.half_linear import HalfLinear
from edgeopt.nn.low_rank_linear import LowRankLinear
from edgeopt.nn.pool import GlobalAvgPool2d, MaxPool2d
from edgeopt.nn.quant_conv import QuantConv2d
from edgeopt.nn.quant_linear import QuantLinear
from edgeopt.nn.sparse_conv import SparseConv2d
from edgeopt.nn.sparse_linear import SparseLinear

__all__ = ["GlobalAvgPool2d", "HalfLinear", "LowRankLinear", "MaxPool2d", "QuantConv2d", "QuantLinear", "SparseConv2d",
           "SparseLinear"]

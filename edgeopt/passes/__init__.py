"""Model passes: the int8 lowering (quantize), pruning, low rank, sparsify; the pieces they share (the
report type, input observers, submodule replacement, timing, MAC counting) are written once here."""
from edgeopt.passes.report import BackOff, LayerReport, Report

__all__ = ["BackOff", "LayerReport", "Report"]

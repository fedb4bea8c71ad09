"""edgeopt.sparsify(model, data, dtype=...): the lowering of a pruned model (see edgeopt.passes.sparsify)."""
from edgeopt.passes.common import callable_module
from edgeopt.passes.sparsify import pruned_layers, sparsify

__all__ = ["format_report", "pruned_layers", "sparsify"]


def format_report(report) -> str:
    """The report as text (every pass returns the same Report type; str(report) says the same)."""
    return str(report)


callable_module(__name__, sparsify)

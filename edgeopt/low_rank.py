"""edgeopt.low_rank(model, rank=... | energy=... | speedup=...): SVD factorization where measured faster
(see edgeopt.passes.low_rank)."""
from edgeopt.passes.common import callable_module
from edgeopt.passes.low_rank import freeze, low_rank, rank_for_speedup, separable, tucker2

__all__ = ["format_report", "freeze", "low_rank", "rank_for_speedup", "separable", "tucker2"]


def format_report(report) -> str:
    """The report as text (every pass returns the same Report type; str(report) says the same)."""
    return str(report)


callable_module(__name__, low_rank)

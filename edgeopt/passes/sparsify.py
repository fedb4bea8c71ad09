"""edgeopt.sparsify(model, data, dtype=...): lower the pruned layers of a model -- the int8 lowering
(edgeopt.quantize) restricted to the layers whose weights hold zeros, each on the block-sparse kernel
where that is measured faster than the dense one.

There is one lowering: sparse layers get the same calibration, observers, GPTQ rounding (zeros kept),
BatchNorm folding, activation fusion and hand-offs as dense ones. dtype="fp32" chooses between the
float kernels (torch's dense conv / linear and edgeopt's fp32 block-sparse ones) instead.
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from edgeopt.passes.common import renamed_keyword
from edgeopt.passes.quantize import quantize
from edgeopt.passes.report import Report

OWNER = "edgeopt.sparsify"


def pruned_layers(model: nn.Module) -> list[str]:
    """Linear / Conv2d (groups 1) layers with at least one zero weight."""
    return [name for name, m in model.named_modules()
            if (type(m) is nn.Linear or (type(m) is nn.Conv2d and m.groups == 1)) and bool((m.weight == 0).any())]


def sparsify(model: nn.Module, data=None, dtype: str = "int8", *, layers: Iterable[str] | None = None,
             measure: bool = True, **lowering) -> tuple[nn.Module, Report]:
    """Lower `layers` (default: every pruned layer) of `model` with `dtype` kernels, sparse where faster;
    returns (lowered model, Report). data: calibration inputs, as for edgeopt.quantize (`example_input=`
    is its former name). Other keywords go to edgeopt.quantize (observer, skip, inplace, progress, ...)."""
    data = renamed_keyword(lowering, "example_input", "data", data, OWNER)
    for gone in ("fold_bn", "mode", "block_cols", "min_speedup", "max_density"):
        if gone in lowering:
            raise TypeError(f"{OWNER}: {gone}= is gone: sparse layers go through the one int8 lowering now (BatchNorm "
                            "folded in the traced graph, static calibrated ranges, kernels chosen by measured time)")
    if data is None:
        raise ValueError(f"{OWNER}: data is required (calibration inputs: an iterable of model inputs)")
    names = list(layers) if layers is not None else pruned_layers(model)
    if not names:
        raise ValueError(f"{OWNER}: the model has no pruned layer (no Linear / Conv2d weight holds a zero); prune "
                         "it first (edgeopt.prune), or lower it with edgeopt.quantize")
    lowering.setdefault("progress", False)
    return quantize(model, data, dtype=dtype, layers=names, measure=measure, kernels=("dense", "sparse"), **lowering)

"""Swap every nn.Linear of a model for QuantLinear, in place, and say what changed.

The Linear-only predecessor of the int8 lowering (`edgeopt.quantize`, which also handles convs, sparse
and low-rank layers, BatchNorm folding and fusion); kept for dynamic mode and for its callers.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from edgeopt.nn.quant_linear import QuantLinear
from edgeopt.passes.common import model_inputs, renamed_keyword, set_submodule
from edgeopt.passes.macs import weight_bytes
from edgeopt.passes.quantize.observers import calibrate
from edgeopt.passes.quantize.plan import kind
from edgeopt.passes.report import LayerReport, Report

OWNER = "edgeopt.quantize_linear_layers"


def quantize_linear_layers(model: nn.Module, mode: str = "dynamic", data: Iterable[torch.Tensor] | None = None,
                           skip: Iterable[str] = (), **renamed) -> tuple[nn.Module, Report]:
    """Replace the nn.Linear layers of `model` (in place) with QuantLinear.

    mode="static" runs `data` (model inputs; `calibration_data=` is its former name) through the float
    model once and uses each layer's observed input min/max. Layers named in `skip` stay float. Returns
    (model, Report).
    """
    data = renamed_keyword(renamed, "calibration_data", "data", data, OWNER)
    if renamed:
        raise TypeError(f"{OWNER}() got unexpected keyword arguments {sorted(renamed)}")
    skip = set(skip)
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    ranges: dict[str, tuple[float, float]] = {}
    if mode == "static":
        if data is None:
            raise ValueError("edgeopt: static quantization needs data (calibration_data: a few model inputs)")
        stats = calibrate(model, model_inputs(data, OWNER, "calibration data"), list(linears), "minmax", 100.0,
                          progress=False, owner=OWNER)
        unused = [name for name, s in stats.items() if s.count == 0]
        if unused:
            raise ValueError(f"edgeopt: calibration never reached these layers: {', '.join(unused)}")
        ranges = {name: (s.lo, s.hi) for name, s in stats.items()}
    report = Report(passes=[f"quantize_linear_layers ({mode})"])
    for name, linear in linears.items():
        row = LayerReport(name, kind(linear), weight_bytes_before=weight_bytes(linear))
        report.layers.append(row)
        if name in skip:
            row.reason, row.kernel = "skipped by request", "torch fp32"
            continue
        kwargs = {"input_range": ranges[name]} if mode == "static" else {}
        quant = QuantLinear.from_float(linear, mode=mode, **kwargs)
        set_submodule(model, name, quant)
        row.converted, row.kernel, row.applied = True, "dense int8", [f"int8 {mode}"]
        row.input_range = ranges.get(name)
        row.weight_bytes = weight_bytes(quant)
    return model, report

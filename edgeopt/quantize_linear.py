"""Swap every nn.Linear of a model for QuantLinear and say what changed.

The Linear-only predecessor of `edgeopt.quantize` (which also handles convs, BatchNorm folding and
activation fusion, and offers robust observers); kept for dynamic mode and for its callers.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.nn.quant_linear import QuantLinear
from edgeopt.quantize import _calibrate, _inputs, _set_submodule


@dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    converted: bool
    reason: str = ""


def quantize_linear_layers(model: nn.Module, mode: str = "dynamic",
                           calibration_data: Iterable[torch.Tensor] | None = None,
                           skip: Iterable[str] = ()) -> tuple[nn.Module, list[LayerReport]]:
    """Replace the nn.Linear layers of `model` (in place) with QuantLinear.

    mode="static" runs `calibration_data` (model inputs) through the float model once and uses each
    layer's observed input min/max. Layers named in `skip` stay float. Returns (model, per-layer report).
    """
    skip = set(skip)
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    ranges: dict[str, list[float]] = {}
    if mode == "static":
        if calibration_data is None:
            raise ValueError("edgeopt: static quantization needs calibration_data (a few model inputs)")
        ranges = _observe_input_ranges(model, linears, calibration_data)
    report = []
    for name, linear in linears.items():
        if name in skip:
            report.append(LayerReport(name, linear.in_features, linear.out_features, False, "skipped by request"))
            continue
        kwargs = {"input_range": tuple(ranges[name])} if mode == "static" else {}
        _set_submodule(model, name, QuantLinear.from_float(linear, mode=mode, **kwargs))
        report.append(LayerReport(name, linear.in_features, linear.out_features, True))
    return model, report


def _observe_input_ranges(model, linears, calibration_data):
    """Each layer's input min/max over the calibration data (edgeopt.quantize's calibration, min/max)."""
    batches = _inputs(calibration_data)
    was_training = model.training
    model.eval()
    try:
        stats = _calibrate(model, batches, list(linears), dict(model.named_modules()), "minmax", 100.0,
                           progress=False)
    finally:
        model.train(was_training)
    unused = [name for name, s in stats.items() if s.count == 0]
    if unused:
        raise ValueError(f"edgeopt: calibration never reached these layers: {', '.join(unused)}")
    return {name: [s.lo, s.hi] for name, s in stats.items()}

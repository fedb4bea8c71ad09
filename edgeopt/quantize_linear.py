"""Swap every nn.Linear of a model for QuantLinear and say what changed."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.nn.quant_linear import QuantLinear


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


@torch.no_grad()
def _observe_input_ranges(model, linears, calibration_data):
    ranges = {name: [float("inf"), float("-inf")] for name in linears}

    def hook_for(name):
        def hook(_module, inputs):
            r = ranges[name]
            r[0] = min(r[0], float(inputs[0].min()))
            r[1] = max(r[1], float(inputs[0].max()))
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in linears.items()]
    try:
        was_training = model.training
        model.eval()
        seen = 0
        for batch in calibration_data:
            model(batch)
            seen += 1
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("edgeopt: calibration_data was empty")
    unused = [name for name, r in ranges.items() if r[0] > r[1]]
    if unused:
        raise ValueError(f"edgeopt: calibration never reached these layers: {', '.join(unused)}")
    return ranges


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)

"""Recipes: how each configuration of the study is made from the fp32 model.

A recipe has a cheap *build* (quantize, swap layers, compile) and, for the rows that change weights, a
*training* part (prune + fine-tune, low rank + fine-tune, distillation) whose result is cached: the heavy
work runs once, under /work/tools/heavy if you like, and every timing run afterwards only loads it.
`edgeopt profile --optimized NAME` and `edgeopt study` share this registry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class Context:
    """What a recipe may use: the subject, calibration batches, the example input, the thread count,
    and `quick` (short fine-tunes)."""

    subject: object
    calibration: list[torch.Tensor]
    example: torch.Tensor
    threads: int = 2
    quick: bool = False
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    name: str
    label: str
    build: Callable[[nn.Module, Context], object]   # the fp32 model (a copy) -> the runnable twin
    kind: str = "edgeopt"                            # "base", "torch", "edgeopt", "peer"
    traceable: bool = True                           # the profiler can time it layer by layer
    trains: bool = False                             # has a cached training part


def _quantize(model: nn.Module, ctx: Context) -> nn.Module:
    import edgeopt

    qmodel, report = edgeopt.quantize(model, ctx.calibration, progress=False)
    kept = [layer for layer in report.layers if not layer.converted]
    if kept:
        ctx.notes.append("int8: kept float: " + ", ".join(f"{layer.name} ({layer.reason})" for layer in kept))
    return qmodel


def _fp16_weights(model: nn.Module, ctx: Context) -> nn.Module:
    """Every nn.Linear as an edgeopt HalfLinear (fp16 weights, F16C, fp32 accumulation). Convolutions have no
    fp16 kernel and stay fp32: on a CNN this row changes only the classifier head."""
    from edgeopt.nn import HalfLinear

    model = copy.deepcopy(model)
    swapped = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, HalfLinear.from_float(module))
            swapped += 1
    ctx.notes.append(f"fp16 weights: {swapped} Linear layer(s) as HalfLinear; convolutions stay fp32 (no fp16 conv)")
    return model.eval()


def _eager(model: nn.Module, ctx: Context) -> nn.Module:
    return model.eval()


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("fp32", "fp32 eager", _eager, kind="base"),
    Recipe("int8", "int8 PTQ (edgeopt.quantize)", _quantize),
    Recipe("fp16", "fp16 weights (HalfLinear)", _fp16_weights),
]}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]

"""Telling a float model from one the int8 lowering already ran on: structure passes (prune, low rank)
must come before the lowering, and say so instead of finding nothing to do."""
from __future__ import annotations

from torch import nn

# edgeopt modules the lowering produces; a structure pass cannot see float weights inside them
_LOWERED = ("QuantConv2d", "QuantLinear", "SparseConv2d", "SparseLinear")


def lowered_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m).__name__ in _LOWERED
            and type(m).__module__.startswith("edgeopt.nn.")]


def refuse_lowered(model: nn.Module, owner: str, verb: str) -> None:
    """Raise if every weight layer of `model` is already lowered (nothing left to `verb`)."""
    lowered = lowered_layers(model)
    float_layers = [n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    if lowered and not float_layers:
        raise ValueError(f"{owner}: the model's layers are already lowered by edgeopt.quantize ({lowered[0]}: "
                         f"{type(model.get_submodule(lowered[0])).__name__}, and {len(lowered) - 1} more); {verb} "
                         "the float model first, then lower it (edgeopt.optimize applies the steps in that order)")

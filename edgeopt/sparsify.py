"""edgeopt.sparsify(model, dtype=..., example_input=...): swap pruned layers for the block-sparse modules
where that is measured to be faster, and report every choice.

Candidates are nn.Linear and nn.Conv2d (groups=1) layers whose weights contain zeros (after
edgeopt.prune, or any other pruning). Each candidate is timed on this machine, now, on the input shape it
sees for `example_input`: the sparse module (SparseLinear / SparseConv2d, packed from the weight's own
zeros) against the dense layer it would replace -- the float layer for dtype="fp32", edgeopt's dense int8
layer (QuantLinear / QuantConv2d, same quantization) for dtype="int8" -- and replaced only when it is at
least `min_speedup` times faster. A sparse layer that would be slower stays dense. With fold_bn=True a
Conv2d directly followed by a BatchNorm2d in an nn.Sequential gets the BatchNorm folded in first (the
zero pattern is unchanged: the fold scales whole output channels).
Convs are timed on channels_last inputs: run the converted model on channels_last inputs (torch's
ReLU / pooling keep the format), or each sparse conv pays an NCHW <-> NHWC copy.
Without example_input nothing can be timed: layers are converted when their stored-block density is at
most `max_density` (default 0.5, the break-even measured in bench/NOTES.md), and the report says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.nn.sparse_conv import SparseConv2d
from edgeopt.nn.sparse_linear import SparseLinear


@dataclass
class SparsifyReport:
    name: str
    kind: str              # "linear" or "conv"
    shape: tuple           # GEMM view (out, in)
    zero_fraction: float   # zero weights / weights
    block_density: float   # stored blocks / blocks of the packed sparse layout
    dense_us: float        # measured time of the dense layer (nan: not measured)
    sparse_us: float       # measured time of the sparse module (nan: not measured)
    converted: bool
    reason: str = ""

    @property
    def speedup(self) -> float:
        return self.dense_us / self.sparse_us if self.sparse_us > 0 else float("nan")


def format_report(rows: list[SparsifyReport]) -> str:
    lines = [f"{'layer':28s} {'kind':6s} {'out x in':>12s} {'zeros':>6s} {'blocks':>6s} {'dense us':>9s} "
             f"{'sparse us':>9s} {'speedup':>7s}  choice"]
    for r in rows:
        lines.append(f"{r.name:28s} {r.kind:6s} {r.shape[0]:5d}x{r.shape[1]:<6d} {100 * r.zero_fraction:5.1f}% "
                     f"{100 * r.block_density:5.1f}% {r.dense_us:9.1f} {r.sparse_us:9.1f} {r.speedup:6.2f}x  "
                     f"{'sparse' if r.converted else 'dense'}{' (' + r.reason + ')' if r.reason else ''}")
    return "\n".join(lines)


def _time_us(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    from edgeopt.low_rank import _time_us as time_us

    return time_us(module, x, repeats)


@torch.no_grad()
def _observe_inputs(model: nn.Module, layers: dict[str, nn.Module], example_input) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_module, inputs):
            seen.setdefault(name, inputs[0].detach().clone())
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers.items()]
    was_training = model.training
    try:
        model.eval()
        model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


def _fold_batchnorms(model: nn.Module, names: set[str]) -> None:
    from edgeopt.quantize import fold_batchnorm

    for parent_name, parent in list(model.named_modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (cname, child), (bname, nxt) in zip(children, children[1:]):
            full = f"{parent_name}.{cname}" if parent_name else cname
            if full in names and isinstance(child, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
                setattr(parent, cname, fold_batchnorm(child, nxt))
                setattr(parent, bname, nn.Identity())


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _dense_counterpart(layer: nn.Module, dtype: str, mode: str, input_range):
    if dtype == "fp32":
        return layer
    from edgeopt.nn import QuantConv2d, QuantLinear

    kw = {"input_range": input_range} if mode == "static" else {}
    if isinstance(layer, nn.Linear):
        return QuantLinear.from_float(layer, mode=mode, **kw)
    return QuantConv2d.from_float(layer, mode=mode, **kw)


@torch.no_grad()
def sparsify(model: nn.Module, dtype: str = "fp32", example_input=None, *, layers=None, mode: str = "dynamic",
             block_cols: int = 16, min_speedup: float = 1.0, max_density: float = 0.5, fold_bn: bool = False,
             repeats: int = 7, progress: bool = False) -> tuple[nn.Module, list[SparsifyReport]]:
    """Replace pruned Linear / Conv2d layers of `model` (in place) by SparseLinear / SparseConv2d where
    measured faster; returns (model, report). `layers`: names to consider (default: every layer with a
    zero weight). int8 mode="static" takes each layer's input range from example_input (min/max)."""
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"edgeopt.sparsify: dtype must be 'fp32' or 'int8', got {dtype!r}")
    if mode == "static" and example_input is None:
        raise ValueError("edgeopt.sparsify: static int8 needs example_input to observe each layer's input range")
    wanted = None if layers is None else set(layers)

    def candidates():
        out = {}
        for name, m in model.named_modules():
            if wanted is not None and name not in wanted:
                continue
            if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1
                                             and m.padding_mode == "zeros")) and (m.weight == 0).any():
                out[name] = m
        return out

    if fold_bn:
        _fold_batchnorms(model, set(candidates()))
    cands = candidates()
    inputs = _observe_inputs(model, cands, example_input) if example_input is not None else {}
    report = []
    for name, layer in cands.items():
        kind = "linear" if isinstance(layer, nn.Linear) else "conv"
        w = layer.weight
        shape = (w.shape[0], w[0].numel())
        zero_fraction = float((w == 0).float().mean())
        x = inputs.get(name)
        if x is not None and x.dim() == 4:
            # NHWC is the sparse conv's layout and a layout torch's conv takes as fast: timed in channels_last,
            # as a converted model should be run (a channels_last input keeps every layer NHWC).
            x = x.contiguous(memory_format=torch.channels_last)
        input_range = (float(x.min()), float(x.max())) if x is not None else None
        cls = SparseLinear if kind == "linear" else SparseConv2d
        kw = {"input_range": input_range} if (dtype == "int8" and mode == "static") else {}
        sparse = cls.from_float(layer, dtype=dtype, block_cols=block_cols, mode=mode, **kw).eval()
        density = sparse.density
        if example_input is not None and x is None:
            report.append(SparsifyReport(name, kind, shape, zero_fraction, density, math.nan, math.nan, False,
                                         "not reached by example_input"))
            continue
        if x is None:
            ok = density <= max_density
            reason = f"not measured: block density {'<=' if ok else '>'} {max_density:g}"
            dense_us = sparse_us = math.nan
        else:
            dense = _dense_counterpart(layer, dtype, mode, input_range).eval()
            dense_us = _time_us(dense, x, repeats)
            sparse_us = _time_us(sparse, x, repeats)
            ok = dense_us / sparse_us >= min_speedup
            reason = "" if ok else f"sparse not faster (needs {min_speedup:g}x)"
        if ok:
            _set_submodule(model, name, sparse)
        report.append(SparsifyReport(name, kind, shape, zero_fraction, density, dense_us, sparse_us, ok, reason))
        if progress:
            print(format_report([report[-1]]).splitlines()[-1], flush=True)
    return model, report


class _CallableModule(__import__("types").ModuleType):
    """`edgeopt.sparsify(model, ...)` works whether or not the submodule was imported first."""

    def __call__(self, *args, **kwargs):
        return sparsify(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule

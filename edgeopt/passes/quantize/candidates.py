"""The kernels a layer can run on, and the choice between them by time measured on this machine.

Every candidate computes the same layer -- the float layer with its BatchNorm folded, its activation (and
residual add, where the module takes one) fused -- from the same calibrated input range and the same
rounded weights, so dense and block-sparse int8 give identical outputs and the choice is about speed:

| candidate | for | module |
| --- | --- | --- |
| dense int8 | Conv2d, Linear, LowRankLinear (its product U V^T) | QuantConv2d / QuantLinear |
| sparse int8 | Conv2d (groups 1) and Linear whose weights hold zeros | SparseConv2d / SparseLinear (int8) |
| low-rank int8 | LowRankLinear | its factors as two int8 stages, static ranges |
| torch fp32 | every layer | the float layer (BatchNorm folded) |
| sparse fp32 | as sparse int8 | SparseConv2d / SparseLinear (fp32) |
| low-rank fp32/fp16 | LowRankLinear | the layer as it is |
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from edgeopt.nn._qparams import WEIGHT_MAX, activation_bounds
from edgeopt.nn.low_rank_linear import LowRankLinear
from edgeopt.passes.common import sqnr_db
from edgeopt.perf.cost import macs_per_sample, weight_bytes
from edgeopt.passes.quantize.gptq import gptq_round
from edgeopt.passes.quantize.layout import takes_activation, takes_residual
from edgeopt.passes.quantize.observers import Stats
from edgeopt.passes.quantize.plan import Layer, apply_activation
from edgeopt.passes.timing import time_candidates

FAMILIES = ("dense", "sparse", "low-rank")
DTYPES = ("int8", "fp32")
# Without timing (measure=False), a sparse kernel is chosen at or below this stored-block density: the
# break-even measured for the block-sparse kernels (bench/NOTES.md, block-sparse sections).
MAX_SPARSE_DENSITY = 0.5
# A float kernel replaces the int8 ones only when measured this much faster: the timing runs each layer
# alone on float input, so int8 layers pay an input quantization that the uint8 chain between them
# saves, and a float layer in the chain breaks the chain for its neighbours.
FLOAT_MARGIN = 1.25


ORIGINAL = " (original)"   # suffix of the candidates built from a layer's weights before pruning / low rank


def is_int8(kernel: str) -> bool:
    return kernel.removesuffix(ORIGINAL).endswith("int8")


def family(kernel: str) -> str:
    return kernel.split(" ")[0]


def is_original(kernel: str) -> bool:
    return kernel.endswith(ORIGINAL)


def _float_weights(layer: Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
    m = layer.folded
    if isinstance(m, LowRankLinear):
        u, vt, bias = m.factors()
        return (u.double() @ vt.double()).float(), bias if m.has_bias else None
    return m.weight.detach(), None if m.bias is None else m.bias.detach()


def _as_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear.eval()


def _with_weight(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    out = copy.deepcopy(module)
    out.weight = nn.Parameter(weight, requires_grad=False)
    return out


def _rounded(layer: Layer, s: Stats, dense: nn.Module) -> nn.Module:
    """`dense` with GPTQ-rounded weights when calibration gathered a Hessian for it (zeros kept zero)."""
    if s.hessian is None:
        return dense
    layer.report.weight_rounding = "gptq"
    return _with_weight(dense, gptq_round(dense.weight, s.hessian, WEIGHT_MAX, keep_zeros=True))


def build(layer: Layer, s: Stats, inner: Stats | None, input_range: tuple[float, float],
          inner_range: tuple[float, float] | None, dtype: str, families) -> dict[str, nn.Module]:
    """The candidate modules for one layer (see the module docstring). `inner`: a low-rank layer's
    intermediate (x V) statistics."""
    from edgeopt.nn import QuantConv2d, QuantLinear, SparseConv2d, SparseLinear

    folded = layer.folded
    conv = isinstance(folded, nn.Conv2d)
    low_rank = isinstance(folded, LowRankLinear)

    def act_for(adds_residual: bool) -> str | tuple | None:
        # an activation after a residual add belongs to a module that takes the add too
        if layer.add_node is not None and not adds_residual:
            return None
        return layer.act

    out: dict[str, nn.Module] = {}
    weight, bias = _float_weights(layer)
    zeros = bool((weight == 0).any())
    sparse_ok = "sparse" in families and zeros and (not conv or folded.groups == 1) and not low_rank
    lo, hi = input_range
    if dtype == "int8" and not layer.keep_float:
        dense = folded if not low_rank else _as_linear(weight, bias)
        want_dense = "dense" in families or (not low_rank and not sparse_ok)
        rounded = _rounded(layer, s, dense) if want_dense or sparse_ok else None
        if want_dense:
            cls = QuantConv2d if conv else QuantLinear
            out["dense int8"] = cls.from_float(rounded, mode="static", input_range=(lo, hi),
                                               activation=act_for(conv)).eval()
        if sparse_ok:
            cls = SparseConv2d if conv else SparseLinear
            out["sparse int8"] = cls.from_float(rounded, dtype="int8", mode="static", input_range=(lo, hi),
                                                activation=act_for(conv)).eval()  # 16-column blocks: adds it
        if low_rank and "low-rank" in families:
            out["low-rank int8"] = _low_rank_int8(folded, s, inner, (lo, hi), inner_range, act_for(False))
    if low_rank:
        if "low-rank" in families or not out:
            frozen = copy.deepcopy(folded).freeze().eval()
            frozen.activation = act_for(False)
            frozen.out_min, frozen.out_max = activation_bounds(frozen.activation)
            out[f"low-rank {folded.weight_dtype}"] = frozen
        if "dense" in families:
            out["torch fp32"] = _as_linear(weight, bias)
    else:
        out["torch fp32"] = folded.eval()
        if sparse_ok:
            cls = SparseConv2d if conv else SparseLinear
            out["sparse fp32"] = cls.from_float(folded, dtype="fp32", activation=act_for(False)).eval()
    return out


def _low_rank_int8(m: LowRankLinear, s: Stats, inner: Stats | None, input_range, inner_range, activation):
    """A low-rank layer with int8 factors and static ranges: x -> u8 (calibrated range) -> x V -> u8
    (the intermediate's calibrated range) -> act(. U^T + bias). GPTQ rounds each factor on its own input."""
    from edgeopt.nn import QuantLinear

    u, vt, bias = m.factors()
    first = _as_linear(vt, None)
    second = _as_linear(u, bias if m.has_bias else None)
    if s.hessian is not None:
        first = _with_weight(first, gptq_round(first.weight, s.hessian, WEIGHT_MAX))
    if inner is not None and inner.hessian is not None:
        second = _with_weight(second, gptq_round(second.weight, inner.hessian, WEIGHT_MAX))
    if inner_range is None:
        raise ValueError("edgeopt.quantize: a low-rank layer needs its intermediate range from calibration")
    return nn.Sequential(QuantLinear.from_float(first, mode="static", input_range=input_range),
                         QuantLinear.from_float(second, mode="static", input_range=inner_range,
                                                activation=activation)).eval()


def includes_activation(layer: Layer, module: nn.Module) -> bool:
    """The module applies the layer's fused activation itself (else the graph keeps the activation node)."""
    if layer.act is None:
        return False
    if layer.add_node is not None and not takes_residual(module):
        return False
    if isinstance(module, nn.Sequential):
        return takes_activation(module[-1])
    return takes_activation(module)


def _sample_for(x: torch.Tensor, rows: int) -> torch.Tensor:
    x = x[:rows] if x.dim() > 1 else x
    if x.dim() == 4:
        # NHWC is the edgeopt convs' layout and one torch's conv takes as fast: timed channels-last, as the
        # lowered model runs (quantized convs hand each other channels-last activations).
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def measure_candidates(layer: Layer, s: Stats, timing_rows: int, repeats: int) -> None:
    """Time every candidate on the layer's calibration input (its first `timing_rows` samples), in turn."""
    if s.sample is None:
        return
    x = _sample_for(s.sample, timing_rows)
    layer.report.kernel_us.update(time_candidates(layer.candidates, x, rounds=repeats))


def choose(layer: Layer, measure: bool, prefer_float_margin: float = FLOAT_MARGIN,
           keep_int8_under_us: float = 0.0) -> str:
    """The candidate to run: the fastest measured int8 kernel unless a float one is FLOAT_MARGIN faster
    and the int8 one takes at least `keep_int8_under_us` (measure=True); else sparse at or below
    MAX_SPARSE_DENSITY, then low-rank, then dense, int8 first."""
    cands = {k: m for k, m in layer.candidates.items() if not is_original(k)}
    if measure and layer.report.kernel_us:
        times = layer.report.kernel_us
        int8 = [k for k in cands if is_int8(k)]
        floats = [k for k in cands if not is_int8(k)]
        best_int8 = min(int8, key=times.__getitem__) if int8 else None
        best_float = min(floats, key=times.__getitem__) if floats else None
        if best_int8 is None:
            return best_float
        if (best_float is not None and times[best_float] * prefer_float_margin < times[best_int8]
                and times[best_int8] >= keep_int8_under_us):
            return best_float
        return best_int8
    order = []
    for dtype in ("int8", "fp32", "fp16"):
        for fam in ("sparse", "low-rank", "dense", "torch"):
            order += [k for k in cands if family(k) == fam and k.endswith(dtype)]
    order += [k for k in cands if k not in order]
    for kernel in order:
        if family(kernel) == "sparse" and cands[kernel].density > MAX_SPARSE_DENSITY:
            continue
        return kernel
    return next(iter(cands))


def finish_report(layer: Layer, s: Stats) -> None:
    """The chosen kernel's figures in the layer's report: time, MACs, bytes, SQNR vs the float layer."""
    rep = layer.report
    rep.weight_bytes_before = weight_bytes(layer.module)
    weight, _ = _float_weights(layer)
    rep.sparsity = float((weight == 0).float().mean())
    module = layer.candidates[layer.kernel]
    rep.kernel = layer.kernel
    rep.time_us = rep.kernel_us.get(layer.kernel)
    x = s.sample
    if x is not None:
        one = x[:1] if x.dim() > 1 else x
        rep.macs_before = macs_per_sample(layer.module, one)
        rep.macs = macs_per_sample(module, one)
        with torch.no_grad():
            ref = apply_activation(layer.folded(x), layer.act)
            y = module(x)
            if not includes_activation(layer, module):
                y = apply_activation(y, layer.act)
        rep.sqnr_db = sqnr_db(ref, y)
    rep.weight_bytes = weight_bytes(module)
    if family(layer.kernel) == "sparse":
        rep.block_density = float(module.density)
    if isinstance(layer.folded, LowRankLinear):
        rep.rank = layer.folded.rank

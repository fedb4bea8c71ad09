"""edgeopt.quantize: whole-model static int8 quantization (Conv2d and Linear) with a report.

    qmodel, report = edgeopt.quantize(model, calibration_data)
    print(report)

The pass, in order:
1. traces the model with torch.fx (falls back to swapping leaf modules, without folding or fusion, when
   the model is not traceable; the report says why);
2. runs the calibration data through the float model once (min/max, element counts, one batch of each
   layer's input for the SQNR column, E[x x^T] of each layer's input for the weight rounding), and once
   more for the outlier-robust observers;
3. folds BatchNorm2d into the Conv2d it directly follows (BatchNorm1d into a 2-D Linear), and fuses a
   ReLU / ReLU6 / hardtanh / clamp into the layer when the graph shows it consumes that layer's output
   alone; a ReLU after a residual add (ResNet's shared `relu` module applied to `out + identity`) consumes
   the sum, so it is fused only together with the add: `act(conv(x) + r)` becomes one QuantConv2d call
   with the add in its epilogue (FUSE_RESIDUAL_ADD);
4. rounds each layer's 7-bit weights to minimise its output error on the calibration inputs (GPTQ) and
   swaps nn.Conv2d -> edgeopt.nn.QuantConv2d, nn.Linear -> edgeopt.nn.QuantLinear (static mode, the
   observed input range), nn.MaxPool2d -> edgeopt.nn.MaxPool2d, leaving in float what it cannot or should
   not convert, with the reason in the report;
5. hands activations from one quantized conv to the next channels-last, and (`u8_between_layers`) as
   uint8 in the consumer's input parameters where a conv feeds only quantized convs (through max-pools).

With tracing, the result is a torch.fx.GraphModule (an nn.Module: submodule names, state_dict keys,
torch.save/torch.load all work as for the original). To rebuild a saved state_dict, quantize a freshly
built float model with any calibration batch of the right shape and `load_state_dict` into it.
"""
from __future__ import annotations

import copy
import math
import operator
import sys
import types
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeopt.nn._qparams import WEIGHT_MAX
from edgeopt.nn.pool import MaxPool2d as EdgeoptMaxPool2d
from edgeopt.progress import Progress

OBSERVERS = ("minmax", "percentile", "mse")
# Measured on resnet18 and vgg_audio at batch 1 (bench/NOTES.md, "Issue 4 - quantize pass").
U8_BETWEEN_LAYERS_DEFAULT = True
# Quantized convs hand channels_last (NHWC) output to consumers that cannot tell the difference (other
# quantized convs, elementwise ops, pooling, flatten): the kernels work in NHWC, and an NCHW hand-off
# costs a transpose out of one layer and another into the next.
CHANNELS_LAST_BETWEEN_LAYERS = True
# `act(conv(x) + r)` (a ResNet block's end) becomes one QuantConv2d call with `residual=r`: the add and the
# activation run in the conv's epilogue instead of two more passes over the activation in torch.
FUSE_RESIDUAL_ADD = True
# Inputs kept per layer for the SQNR column (first calibration batch, first samples only: memory).
SQNR_SAMPLES = 4
MSE_BINS = 2048
WEIGHT_ROUNDINGS = ("gptq", "nearest")
# GPTQ-style rounding: input rows (im2col patches) per layer for its Hessian, and the largest reduction
# size it is used for (cost grows as rows * K^2 + K^3; wide layers average their rounding errors anyway).
GPTQ_ROWS = 16384
GPTQ_MAX_K = 2304
GPTQ_BLOCK = 128
GPTQ_DAMP = 0.01
# A conv whose output sums fewer products than this (in_channels/groups * kh * kw, e.g. a 3x3 filter on a
# one-channel spectrogram) stays float, with its BatchNorm folded: its 7-bit weights have too few terms to
# average their rounding error (the RAVDESS stem: 33 dB alone, the largest loss in the model) and the
# float layer is faster there (1->32 3x3 on 64x128: 150 us fp32 vs 500 us int8, batch 1, 1 thread).
# Depthwise convs run on a kernel with full 8-bit weights and are converted.
MIN_INT8_REDUCTION = 16


# ----------------------------------------------------------------------------------------- the report

@dataclass
class LayerReport:
    name: str
    kind: str                                  # e.g. "Conv2d 64->128 3x3 s2" or "Linear 512->10"
    converted: bool
    reason: str = ""                           # why it stayed float (empty when converted)
    activation: str | tuple[float, float] | None = None   # fused activation
    folded_bn: str | None = None               # name of the BatchNorm folded into it
    input_range: tuple[float, float] | None = None          # the observed (clipped) input range
    observed_min_max: tuple[float, float] | None = None     # raw min/max of the input
    sqnr_db: float | None = None               # output vs the folded float layer, one calibration batch
    u8_output: bool = False                    # emits uint8 straight into the next quantized layer(s)
    u8_output_to: tuple[str, ...] = ()
    weight_rounding: str = "nearest"
    channels_last_output: bool = False         # hands NHWC output to consumers that do not care
    residual_add: bool = False                 # `act(out + residual)` computed in the layer's epilogue

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["activation"] = list(self.activation) if isinstance(self.activation, tuple) else self.activation
        return d


@dataclass
class QuantizeReport:
    layers: list[LayerReport]
    observer: str
    percentile: float | None
    calibration_batches: int
    calibration_samples: int
    traced: bool
    trace_error: str | None = None
    u8_between_layers: bool = False
    model_sqnr_db: float | None = None         # model output vs the float model, first calibration batch
    notes: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in the report")

    @property
    def converted(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.converted]

    @property
    def not_converted(self) -> list[LayerReport]:
        return [layer for layer in self.layers if not layer.converted]

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "layers"}
        d["layers"] = [layer.to_dict() for layer in self.layers]
        return d

    def __str__(self) -> str:
        obs = f"percentile {self.percentile}" if self.observer == "percentile" else self.observer
        mode = "torch.fx graph" if self.traced else "leaf modules only (not traceable: no BN folding or fusion)"
        gptq = sum(r.weight_rounding == "gptq" for r in self.layers)
        lines = [f"edgeopt.quantize: {len(self.converted)}/{len(self.layers)} layers int8 ({gptq} with GPTQ "
                 f"weight rounding), observer {obs}, "
                 f"{self.calibration_samples} calibration samples in {self.calibration_batches} batches, {mode}"]
        if self.trace_error:
            lines.append(f"  trace error: {self.trace_error}")
        if self.model_sqnr_db is not None:
            lines.append(f"  model output SQNR vs float: {self.model_sqnr_db:.1f} dB")
        rows = [("layer", "kind", "int8", "activation", "input range", "SQNR dB", "notes")]
        for r in self.layers:
            act = "-" if r.activation in (None, "none") else (
                r.activation if isinstance(r.activation, str) else f"clamp{_fmt_range(r.activation)}")
            notes = []
            if r.folded_bn:
                notes.append(f"+{r.folded_bn}")
            if r.residual_add:
                notes.append("+residual add")
            if r.u8_output:
                notes.append("u8 out")
            elif r.channels_last_output:
                notes.append("NHWC out")
            if r.reason:
                notes.append(r.reason)
            rows.append((r.name, r.kind, "yes" if r.converted else "no", act,
                         _fmt_range(r.input_range) if r.input_range else "-",
                         f"{r.sqnr_db:.1f}" if r.sqnr_db is not None else "-", "; ".join(notes)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for i, row in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths) + "  -----")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt_range(r) -> str:
    return f"[{r[0]:.4g}, {r[1]:.4g}]"


# ----------------------------------------------------------------------------------------- observers

class _Stats:
    """What calibration learns about one layer's input."""

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf
        self.count = 0
        self.calls_per_batch = 0
        self.dtype: torch.dtype | None = None
        self.out_ndim: int | None = None
        self.sample: torch.Tensor | None = None   # first batch input, for the SQNR column
        self.top: torch.Tensor | None = None      # largest values (descending), percentile observer
        self.bottom: torch.Tensor | None = None   # smallest values, negated (descending)
        self.k = 0
        self.hist: torch.Tensor | None = None
        self.hessian: torch.Tensor | None = None  # sum of x x^T over sampled input rows (GPTQ)
        self.hessian_rows = 0


def _merge_top(kept: torch.Tensor | None, values: torch.Tensor, k: int) -> torch.Tensor:
    new = values.topk(min(k, values.numel())).values
    if kept is not None:
        new = torch.cat([kept, new])
        new = new.topk(min(k, new.numel())).values
    return new


def _percentile_from_tail(tail: torch.Tensor, n: int, percentile: float) -> float:
    """The `percentile` of n values (numpy's linear interpolation) from their largest values, descending."""
    j = (1.0 - percentile / 100.0) * (n - 1)  # position counted from the top
    j0 = int(math.floor(j))
    j1 = min(j0 + 1, tail.numel() - 1)
    frac = j - j0
    return float(tail[j0]) * (1 - frac) + float(tail[j1]) * frac


def _tail_size(n: int, percentile: float) -> int:
    return int(math.ceil((1.0 - percentile / 100.0) * (n - 1))) + 2


def _mse_range(hist: torch.Tensor, lo: float, hi: float, steps: int = 200) -> tuple[float, float]:
    """The clipping range (a <= 0 <= b) minimising the expected uint8 quantization error of a histogram
    over [lo, hi]: clipped values cost their squared distance to the clip, the rest scale^2 / 12. Grid
    search over `steps` fractions of each end, with prefix sums so every candidate costs O(log bins)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return lo, hi
    bins = hist.numel()
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    x = (edges[:-1] + edges[1:]) / 2
    c = hist.to(torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    c0, c1, c2 = (torch.cat([zero, torch.cumsum(v, 0)]) for v in (c, c * x, c * x * x))
    fractions = torch.linspace(1.0 / steps, 1.0, steps, dtype=torch.float64)
    a = lo * fractions if lo < 0 else zero
    b = hi * fractions if hi > 0 else zero
    a, b = (t.reshape(-1) for t in torch.meshgrid(a, b, indexing="ij"))
    scale = ((b - a) / 255).clamp_min(1e-12)
    zp = torch.round(-a / scale).clamp(0, 255)
    qmin, qmax = -zp * scale, (255 - zp) * scale
    i = torch.searchsorted(x, qmin)               # bins below the range
    j = torch.searchsorted(x, qmax, right=True)   # bins up to the top of the range
    below = c2[i] - 2 * qmin * c1[i] + qmin ** 2 * c0[i]
    above = (c2[-1] - c2[j]) - 2 * qmax * (c1[-1] - c1[j]) + qmax ** 2 * (c0[-1] - c0[j])
    total = below + above + (c0[j] - c0[i]) * scale ** 2 / 12
    best = int(torch.argmin(total))
    return float(a[best]), float(b[best])


# ----------------------------------------------------------------------------------------- the plan

@dataclass
class _Layer:
    name: str
    module: nn.Module
    node: fx.Node | None = None
    convertible: bool = True
    reason: str = ""
    bn_name: str | None = None
    bn_node: fx.Node | None = None
    act: str | tuple[float, float] | None = None
    act_node: fx.Node | None = None
    folded: nn.Module | None = None            # float layer with BN folded in (the SQNR reference)
    quant: nn.Module | None = None
    report: LayerReport | None = None
    keep_float: str = ""                       # why it stays float (BN still folded) although it could convert
    add_node: fx.Node | None = None            # `out + residual` fused into the conv (FUSE_RESIDUAL_ADD)


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"{type(m).__name__} {m.in_features}->{m.out_features}"
    if isinstance(m, nn.modules.conv._ConvNd):
        ks = "x".join(str(k) for k in m.kernel_size)
        extra = ""
        if any(s != 1 for s in m.stride):
            extra += f" s{m.stride[0]}" if len(set(m.stride)) == 1 else f" s{m.stride}"
        if m.groups != 1:
            extra += " dw" if m.groups == m.in_channels == m.out_channels else f" g{m.groups}"
        return f"{type(m).__name__} {m.in_channels}->{m.out_channels} {ks}{extra}"
    return type(m).__name__


def _is_target(m: nn.Module) -> bool:
    return type(m) in (nn.Conv2d, nn.Linear)


def _looks_like_layer(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))


def _quant_conv_class():
    try:
        from edgeopt.nn import QuantConv2d
    except ImportError:
        return None
    return QuantConv2d


def _activation_of(node: fx.Node, modules: dict[str, nn.Module]):
    """The activation `node` applies to its first argument, as QuantConv2d/QuantLinear take it, or None."""
    def const(v):
        return v is None or isinstance(v, (int, float))

    def clamp_spec(lo, hi):
        if not (const(lo) and const(hi)) or (lo is None and hi is None):
            return None
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        if lo > hi:
            return None
        if lo == 0.0 and hi == math.inf:
            return "relu"
        if lo == 0.0 and hi == 6.0:
            return "relu6"
        return (lo, hi)

    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.ReLU6:
            return "relu6"
        if type(m) is nn.Hardtanh:
            return clamp_spec(m.min_val, m.max_val)
        return None
    args, kwargs = node.args[1:], node.kwargs
    if node.op == "call_function":
        if node.target in (torch.relu, torch.relu_, F.relu, F.relu_):
            return "relu"
        if node.target is F.relu6:
            return "relu6"
        if node.target in (F.hardtanh, F.hardtanh_):
            lo = args[0] if len(args) > 0 else kwargs.get("min_val", -1.0)
            hi = args[1] if len(args) > 1 else kwargs.get("max_val", 1.0)
            return clamp_spec(lo, hi)
        if node.target in (torch.clamp, torch.clip, torch.clamp_):
            lo = args[0] if len(args) > 0 else kwargs.get("min")
            hi = args[1] if len(args) > 1 else kwargs.get("max")
            return clamp_spec(lo, hi)
        return None
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu"
        if node.target in ("clamp", "clamp_", "clip", "clip_"):
            lo = args[0] if len(args) > 0 else kwargs.get("min")
            hi = args[1] if len(args) > 1 else kwargs.get("max")
            return clamp_spec(lo, hi)
    return None


@torch.no_grad()
def fold_batchnorm(layer: nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of `layer` computing bn(layer(x)) with the BatchNorm's running statistics folded in."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("edgeopt: cannot fold a BatchNorm without running statistics")
    out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != out:
        raise ValueError(f"edgeopt: BatchNorm has {bn.num_features} features, the layer {out} outputs")
    folded = copy.deepcopy(layer)
    inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
    gain = inv_std * (bn.weight.double() if bn.weight is not None else 1.0)
    beta = bn.bias.double() if bn.bias is not None else 0.0
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(out, dtype=torch.float64)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    folded.weight = nn.Parameter((layer.weight.double() * gain.reshape(shape)).float(), requires_grad=False)
    folded.bias = nn.Parameter(((bias - bn.running_mean.double()) * gain + beta).float(), requires_grad=False)
    return folded


def _apply_activation(y: torch.Tensor, act) -> torch.Tensor:
    if act in (None, "none"):
        return y
    if act == "relu":
        return y.clamp_min(0)
    if act == "relu6":
        return y.clamp(0, 6)
    return y.clamp(act[0], act[1])


# ----------------------------------------------------------------------------------------- calibration

def _inputs(calibration_data) -> list[torch.Tensor]:
    """Model inputs from an iterable of tensors or (input, label) pairs; a single tensor is one batch."""
    if isinstance(calibration_data, torch.Tensor):
        calibration_data = [calibration_data]
    if calibration_data is None:
        raise ValueError("edgeopt.quantize: calibration_data is required (an iterable of model inputs)")
    try:
        iterator = iter(calibration_data)
    except TypeError:
        raise TypeError("edgeopt.quantize: calibration_data must be an iterable of input tensors or "
                        f"(input, label) pairs, got {type(calibration_data).__name__}") from None
    batches = []
    for i, item in enumerate(iterator):
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
            item = item[0]
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"edgeopt.quantize: calibration item {i} is a {type(item).__name__}; expected a "
                            "tensor or an (input, label) pair")
        if not item.is_floating_point():
            raise TypeError(f"edgeopt.quantize: calibration item {i} has dtype {item.dtype}; expected float "
                            "inputs")
        if item.dim() == 0:
            raise ValueError(f"edgeopt.quantize: calibration item {i} is a scalar; expected a batch of inputs")
        batches.append(item.detach())
    if not batches:
        raise ValueError("edgeopt.quantize: calibration_data is empty; pass a few batches of model inputs")
    return batches


@torch.no_grad()
def _run(model: nn.Module, batches, hooks: dict[str, Any], modules: dict[str, nn.Module], bar,
         forward_hooks: dict[str, Any] | None = None):
    handles = [modules[name].register_forward_pre_hook(h) for name, h in hooks.items()]
    handles += [modules[name].register_forward_hook(h) for name, h in (forward_hooks or {}).items()]
    try:
        for i, x in enumerate(batches):
            try:
                model(x)
            except Exception as exc:
                raise ValueError(f"edgeopt.quantize: the model failed on calibration batch {i} (input "
                                 f"{tuple(x.shape)} {x.dtype}): {type(exc).__name__}: {exc}") from exc
            if bar is not None:
                bar.advance()
    finally:
        for h in handles:
            h.remove()


def _calibrate(model, batches, names, modules, observer, percentile, progress,
               hessian_for: Iterable[str] = ()) -> dict[str, _Stats]:
    stats = {name: _Stats() for name in names}
    state = {"batch": 0}
    hessian_for = set(hessian_for)
    samples = sum(int(x.shape[0]) if x.dim() > 1 else 1 for x in batches)
    rows_per_sample = max(1, math.ceil(GPTQ_ROWS / samples))
    generator = torch.Generator().manual_seed(0)

    def first_input(inputs):
        x = inputs[0] if inputs else None
        return x if isinstance(x, torch.Tensor) else None

    def pass1(name):
        s = stats[name]

        def hook(_m, inputs):
            x = first_input(inputs)
            if x is None:
                return
            s.dtype = x.dtype
            if not x.is_floating_point() or x.numel() == 0:
                return
            s.lo = min(s.lo, float(x.min()))
            s.hi = max(s.hi, float(x.max()))
            s.count += x.numel()
            if state["batch"] == 0 and s.sample is None:
                s.sample = x[:SQNR_SAMPLES].clone() if x.dim() > 1 else x.clone()
            if name in hessian_for and x.dtype == torch.float32:
                rows = _input_rows(modules[name], x.detach(), rows_per_sample, generator)
                s.hessian = rows.T @ rows if s.hessian is None else s.hessian.addmm_(rows.T, rows)
                s.hessian_rows += rows.shape[0]
        return hook

    def out_ndim(name):
        def hook(_m, _inputs, output):
            if isinstance(output, torch.Tensor):
                stats[name].out_ndim = output.dim()
        return hook

    passes = 1 if observer == "minmax" else 2
    bar = Progress(passes * len(batches), "edgeopt.quantize: calibrating") if progress else None
    try:
        counted = _CountingBatches(batches, state)
        _run(model, counted, {n: pass1(n) for n in names}, modules, bar, {n: out_ndim(n) for n in names})
        if observer == "minmax":
            return stats
        for s in stats.values():
            if s.count:
                s.k = _tail_size(s.count, percentile) if observer == "percentile" else 0
                s.hist = torch.zeros(MSE_BINS, dtype=torch.float64) if observer == "mse" else None

        def pass2(name):
            s = stats[name]

            def hook(_m, inputs):
                x = first_input(inputs)
                if x is None or not s.count or not x.is_floating_point():
                    return
                flat = x.detach().reshape(-1).float()
                if observer == "percentile":
                    s.top = _merge_top(s.top, flat, s.k)
                    s.bottom = _merge_top(s.bottom, -flat, s.k)
                elif s.hi > s.lo:
                    s.hist += torch.histc(flat, MSE_BINS, s.lo, s.hi).double()
            return hook

        _run(model, batches, {n: pass2(n) for n in names}, modules, bar)
    finally:
        if bar is not None:
            bar.close()
    return stats


def _input_rows(module: nn.Module, x: torch.Tensor, per_sample: int, generator) -> torch.Tensor:
    """Rows of the layer's reduction (im2col patches for a conv), at most `per_sample` per sample."""
    if isinstance(module, nn.Conv2d):
        picked = []
        for n in range(x.shape[0]):
            patches = F.unfold(x[n:n + 1], module.kernel_size, module.dilation, module.padding, module.stride)[0]
            if patches.shape[1] > per_sample:
                patches = patches[:, torch.randperm(patches.shape[1], generator=generator)[:per_sample]]
            picked.append(patches.T)
        return torch.cat(picked)
    rows = x.reshape(-1, x.shape[-1])
    limit = per_sample * (x.shape[0] if x.dim() > 1 else 1)
    if rows.shape[0] > limit:
        rows = rows[torch.randperm(rows.shape[0], generator=generator)[:limit]]
    return rows


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _gptq_applies(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        # grouped/depthwise filters are short rows with their own inputs; nearest rounding there
        k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        return module.groups == 1 and not isinstance(module.padding, str) and k <= GPTQ_MAX_K
    return isinstance(module, nn.Linear) and module.in_features <= GPTQ_MAX_K


@torch.no_grad()
def gptq_round(weight: torch.Tensor, hessian: torch.Tensor, weight_max: int) -> torch.Tensor:
    """Weights on the symmetric per-output-channel grid (scale = row absmax / weight_max, as the
    quantized modules compute it) with rounding chosen to minimise the layer's output error on the
    calibration inputs, E||(W - Q) x||^2 with E[x x^T] ~ `hessian` (GPTQ, Frantar et al. 2022: round one
    input column at a time and spread its error over the columns not yet rounded). Each row's largest
    weight is pinned, so re-quantizing the result with absmax scales reproduces it exactly."""
    shape = weight.shape
    w = weight.detach().reshape(shape[0], -1).double().clone()
    rows, k = w.shape
    scale = (w.abs().amax(1) / weight_max).clamp_min(1e-30)
    original = w.clone()
    pinned = w.abs() == w.abs().amax(1, keepdim=True)
    h = hessian.double().clone()
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0  # inputs that were always zero: plain rounding for their weights
    diag += GPTQ_DAMP * float(diag.mean())
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError:  # numerically singular even after damping: nearest rounding
        return (torch.round(w / scale[:, None]).clamp(-weight_max, weight_max) * scale[:, None]).float().reshape(shape)
    q = torch.empty_like(w)
    for b0 in range(0, k, GPTQ_BLOCK):
        b1 = min(b0 + GPTQ_BLOCK, k)
        block = w[:, b0:b1].clone()
        errors = torch.empty_like(block)
        for i in range(b1 - b0):
            col = block[:, i]
            qc = torch.round(col / scale).clamp(-weight_max, weight_max) * scale
            q[:, b0 + i] = qc
            err = (col - qc) / u[b0 + i, b0 + i]
            block[:, i:] -= err[:, None] * u[b0 + i, b0 + i:b1][None, :]
            block[pinned[:, b0:b1]] = original[:, b0:b1][pinned[:, b0:b1]]
            errors[:, i] = err
        if b1 < k:
            w[:, b1:] -= errors @ u[b0:b1, b1:]
            tail = pinned[:, b1:]
            w[:, b1:][tail] = original[:, b1:][tail]
    return q.float().reshape(shape)


class _CountingBatches:
    """Iterates the batches and tells the hooks which batch is running."""

    def __init__(self, batches, state):
        self.batches, self.state = batches, state

    def __iter__(self):
        for i, x in enumerate(self.batches):
            self.state["batch"] = i
            yield x


def _input_range(s: _Stats, observer: str, percentile: float) -> tuple[float, float]:
    if observer == "minmax" or s.hi <= s.lo:
        return s.lo, s.hi
    if observer == "percentile":
        hi = _percentile_from_tail(s.top, s.count, percentile)
        lo = -_percentile_from_tail(s.bottom, s.count, percentile)
        return lo, hi
    return _mse_range(s.hist, s.lo, s.hi)


# ----------------------------------------------------------------------------------------- the pass

def quantize(model: nn.Module, calibration_data, *, observer: str = "percentile", percentile: float = 99.99,
             skip: Iterable[str] = (), inplace: bool = False, u8_between_layers: bool = U8_BETWEEN_LAYERS_DEFAULT,
             progress: bool = True, weight_rounding: str = "gptq") -> tuple[nn.Module, QuantizeReport]:
    """Static int8 quantization of a model's Conv2d and Linear layers; returns (quantized model, report).

    calibration_data: an iterable of model inputs (float tensors, or (input, label) pairs such as a
        DataLoader yields; a single tensor counts as one batch). A few hundred samples is typical.
    observer: how each layer's input range is chosen from the calibration data: "minmax" (all values),
        "percentile" (the `percentile`-th and (100 - `percentile`)-th percentiles, exact), or "mse" (the
        clipping range with the least expected quantization error, from a histogram).
    skip: layer names (as in model.named_modules()) to leave in float.
    inplace: work on the model's own modules instead of a deep copy (saves memory). The model passed in
        must then not be used any more: use the returned one (with tracing it is a GraphModule holding
        the model's unconverted modules; without, the model itself with its layers swapped).
    u8_between_layers: where a quantized conv's output goes only into other quantized convs, it emits
        uint8 in their input parameters instead of float32.
    progress: show calibration progress on stderr.
    weight_rounding: "gptq" rounds each layer's weights to minimise its output error on the calibration
        inputs (see `gptq_round`; layers with a reduction longer than GPTQ_MAX_K and grouped convs use
        nearest rounding), "nearest" rounds every weight to its nearest grid point.
    """
    if observer not in OBSERVERS:
        raise ValueError(f"edgeopt.quantize: observer must be one of {OBSERVERS}, got {observer!r}")
    if not (0.0 < float(percentile) <= 100.0):
        raise ValueError(f"edgeopt.quantize: percentile must be in (0, 100], got {percentile}")
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise ValueError(f"edgeopt.quantize: weight_rounding must be one of {WEIGHT_ROUNDINGS}, "
                         f"got {weight_rounding!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"edgeopt.quantize expects an nn.Module, got {type(model).__name__}")
    batches = _inputs(calibration_data)
    skip = set(skip)
    known = {name for name, _ in model.named_modules()}
    unknown = sorted(skip - known)
    if unknown:
        raise ValueError(f"edgeopt.quantize: skip names no module of the model: {', '.join(unknown)}")

    work = model if inplace else copy.deepcopy(model)
    work.eval()

    trace_error = None
    try:
        gm = _trace(work)
    except Exception as exc:  # data-dependent control flow, unsupported Python, ...
        gm = None
        trace_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    root = gm if gm is not None else work
    modules = dict(root.named_modules())

    layers = _find_layers(work, gm, skip)  # names from the model itself: gm lacks what forward never calls
    targets = [layer.name for layer in layers if layer.convertible]
    # Calibrate on the traced float model: the same modules, so hooks see what the quantized layers will.
    keep_float = {layer.name for layer in layers if layer.keep_float}
    hessian_for = [name for name in targets
                   if weight_rounding == "gptq" and name not in keep_float and _gptq_applies(modules[name])]
    stats = _calibrate(root, batches, targets, modules, observer, float(percentile), progress, hessian_for)
    with torch.no_grad():
        if gm is not None:  # the reference output, and every node's shape for the residual fusion
            reference = ShapeProp(gm).propagate(batches[0])
        else:
            reference = root(batches[0])

    QuantConv2d = _quant_conv_class()
    from edgeopt.nn import QuantLinear

    _check_calibrated(layers, stats)
    if gm is not None:
        _plan_fusion(gm, layers, modules, stats)
        if FUSE_RESIDUAL_ADD:
            _plan_residual(layers, modules)
    for layer in layers:
        if layer.convertible and isinstance(layer.module, nn.Conv2d) and QuantConv2d is None:
            layer.convertible, layer.reason = False, "edgeopt.nn.QuantConv2d is not available in this build"

    for layer in layers:
        if not layer.convertible:
            continue
        s = stats[layer.name]
        folded = layer.module
        if layer.bn_name is not None:
            folded = fold_batchnorm(layer.module, modules[layer.bn_name])
        layer.folded = folded
        if layer.keep_float:
            # float, BatchNorm folded in; its activation stays a separate node
            layer.quant, layer.act, layer.act_node, layer.add_node = folded.eval(), None, None, None
            layer.reason, layer.report.folded_bn = layer.keep_float, layer.bn_name
            continue
        lo, hi = _input_range(s, observer, float(percentile))
        cls = QuantConv2d if isinstance(folded, nn.Conv2d) else QuantLinear
        rounded = folded
        if s.hessian is not None:
            rounded = copy.deepcopy(folded)
            rounded.weight = nn.Parameter(gptq_round(folded.weight, s.hessian, WEIGHT_MAX), requires_grad=False)
            layer.report.weight_rounding = "gptq"
        try:
            layer.quant = cls.from_float(rounded, mode="static", input_range=(lo, hi), activation=layer.act).eval()
        except (ValueError, TypeError) as exc:  # e.g. NaN weights, padding="same" with an even kernel
            layer.convertible, layer.reason = False, f"{cls.__name__}.from_float refused it: {exc}"
            layer.bn_name = layer.bn_node = layer.act = layer.act_node = layer.add_node = None
            continue
        layer.report.input_range = (lo, hi)
        layer.report.observed_min_max = (s.lo, s.hi)
        layer.report.activation = layer.act
        layer.report.folded_bn = layer.bn_name
        layer.report.residual_add = layer.add_node is not None
        layer.report.converted = True
        if s.sample is not None:
            with torch.no_grad():
                ref = _apply_activation(folded(s.sample), layer.act)
                layer.report.sqnr_db = sqnr_db(ref, layer.quant(s.sample))

    for layer in layers:
        if layer.report is not None and not layer.report.converted:
            layer.report.reason = layer.reason

    # Rewrite: fused BatchNorm / activation nodes out of the graph, converted modules in.
    if gm is not None:
        for layer in layers:
            if layer.quant is None:
                continue
            if layer.bn_node is not None:
                layer.bn_node.replace_all_uses_with(layer.node)
                gm.graph.erase_node(layer.bn_node)
            if layer.add_node is not None:
                # one call at the add's place (where both inputs exist): conv(x, residual)
                # the other operand as it is now (a BatchNorm folded since planning is gone from the graph)
                residual = [a for a in layer.add_node.args if a is not layer.node][0]
                with gm.graph.inserting_before(layer.add_node):
                    fused = gm.graph.call_module(layer.name, (layer.node.args[0], residual))
                layer.add_node.replace_all_uses_with(fused)
                gm.graph.erase_node(layer.add_node)
                gm.graph.erase_node(layer.node)
                layer.node = fused
            if layer.act_node is not None:
                layer.act_node.replace_all_uses_with(layer.node)
                gm.graph.erase_node(layer.act_node)
        gm.graph.lint()
        pools = [n for n in gm.graph.nodes if n.op == "call_module" and type(modules.get(n.target)) is nn.MaxPool2d]
        for node in pools:
            pool = modules[node.target]
            if not pool.return_indices:
                _set_submodule(root, node.target, EdgeoptMaxPool2d.from_float(pool))
    for layer in layers:
        if layer.quant is not None:
            _set_submodule(root, layer.name, layer.quant)
    if gm is not None:
        gm.delete_all_unused_submodules()
        gm.recompile()
        if CHANNELS_LAST_BETWEEN_LAYERS:
            _link_channels_last(gm, layers)
        if u8_between_layers:
            _link_u8(gm, layers)

    with torch.no_grad():
        result = root(batches[0])
    model_sqnr = sqnr_db(reference, result) if isinstance(result, torch.Tensor) and isinstance(
        reference, torch.Tensor) and result.shape == reference.shape else None

    report = QuantizeReport([layer.report for layer in layers if layer.report is not None], observer,
                            float(percentile) if observer == "percentile" else None, len(batches),
                            sum(int(x.shape[0]) for x in batches), gm is not None, trace_error,
                            bool(u8_between_layers and gm is not None), model_sqnr)
    if u8_between_layers and gm is None:
        report.notes.append("u8_between_layers needs a traced graph; every layer returns float32")
    return root.eval(), report


class _Tracer(fx.Tracer):
    # edgeopt's own modules (LowRankLinear from edgeopt.low_rank, already-quantized layers) are called as
    # they are: tracing into them would hit their Python control flow and fail the whole model.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("edgeopt.nn.") or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)


def _check_calibrated(layers: list[_Layer], stats: dict[str, _Stats]) -> None:
    for layer in layers:
        if not layer.convertible:
            continue
        s = stats[layer.name]
        if s.dtype is None:
            layer.convertible, layer.reason = False, "not reached by the calibration data"
        elif s.dtype != torch.float32:
            layer.convertible, layer.reason = False, f"its input is {s.dtype}, the int8 kernels take float32"
        elif s.count == 0:
            layer.convertible, layer.reason = False, "its input was empty on every calibration batch"


def fusion_plan(model: nn.Module, example_input: torch.Tensor, skip: Iterable[str] = ()) -> dict[str, dict]:
    """What `quantize` would fold and fuse, without converting anything: {layer name: {"bn": BatchNorm
    name or None, "activation": fused activation or None}} for every layer it would convert (convs
    included even when this build has no QuantConv2d). Raises what torch.fx raises if not traceable."""
    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    modules = dict(gm.named_modules())
    layers = _find_layers(model, gm, set(skip))
    targets = [layer.name for layer in layers if layer.convertible]
    stats = _calibrate(gm, _inputs(example_input), targets, modules, "minmax", 100.0, progress=False)
    _check_calibrated(layers, stats)
    _plan_fusion(gm, layers, modules, stats)
    return {layer.name: {"bn": layer.bn_name, "activation": layer.act} for layer in layers if layer.convertible}


def _find_layers(root: nn.Module, gm: fx.GraphModule | None, skip) -> list[_Layer]:
    """Every Conv/Linear-like module of `root`, with whether it can be converted."""
    modules = dict(root.named_modules())
    layers: dict[str, _Layer] = {}
    called: Counter = Counter()
    attr_users: set[str] = set()
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module":
                called[node.target] += 1
            elif node.op == "get_attr":
                attr_users.add(node.target)
    leaf_parents = {}  # module name -> the torch.nn leaf module (not traced into) that contains it
    for name, m in root.named_modules():
        if gm is not None and called.get(name) and not _is_target(m) and m.__module__.startswith("torch.nn"):
            for sub, _ in m.named_modules(prefix=name):
                if sub != name:
                    leaf_parents[sub] = name
    for name, m in root.named_modules():
        if not _looks_like_layer(m):
            continue
        layer = _Layer(name, m)
        layer.report = LayerReport(name, _kind(m), False)
        if name in skip:
            layer.convertible, layer.reason = False, "skipped by request"
        elif name in leaf_parents:
            layer.convertible = False
            layer.reason = f"inside {type(modules[leaf_parents[name]]).__name__}, which uses its weights directly"
        elif not _is_target(m):
            if isinstance(m, nn.Linear):
                layer.reason = f"{type(m).__name__} (a subclass of nn.Linear) may be used through its weights"
            else:
                layer.reason = f"no edgeopt int8 module for {type(m).__name__}"
            layer.convertible = False
        elif isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            layer.convertible, layer.reason = False, f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)"
        elif gm is not None and any(a == name or a.startswith(name + ".") for a in attr_users):
            layer.convertible, layer.reason = False, "the model reads its parameters directly"
        elif gm is not None and not called.get(name):
            layer.convertible, layer.reason = False, "not called by the model's forward"
        elif isinstance(m, nn.Conv2d) and not _depthwise(m) and (
                m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] < MIN_INT8_REDUCTION):
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            layer.keep_float = (f"kept float: {k} products per output are too few for 7-bit weights "
                                f"(< {MIN_INT8_REDUCTION}), and float is faster there")
        layers[name] = layer
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module" and node.target in layers and called[node.target] == 1:
                layers[node.target].node = node
    return list(layers.values())


def _plan_fusion(gm: fx.GraphModule, layers: list[_Layer], modules, stats) -> None:
    """BatchNorm folding and activation fusion, where the graph shows a layer's output goes nowhere else."""
    called = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for layer in layers:
        node = layer.node
        if not layer.convertible or node is None:
            continue  # modules called at several places keep their own semantics: converted, not fused
        producer = node
        users = list(producer.users)
        if len(users) == 1 and users[0].op == "call_module" and users[0].args and users[0].args[0] is producer:
            bn = modules.get(users[0].target)
            fits = (isinstance(layer.module, nn.Conv2d) and type(bn) is nn.BatchNorm2d) or (
                isinstance(layer.module, nn.Linear) and type(bn) is nn.BatchNorm1d
                and stats[layer.name].out_ndim == 2)
            if fits and called[users[0].target] == 1 and bn.running_mean is not None:
                layer.bn_name, layer.bn_node = users[0].target, users[0]
                producer = users[0]
        users = list(producer.users)
        if len(users) == 1 and users[0].args and users[0].args[0] is producer:
            act = _activation_of(users[0], modules)
            if act is not None:
                layer.act, layer.act_node = act, users[0]


_ADDS = (operator.add, operator.iadd, torch.add)


def _plan_residual(layers: list[_Layer], modules) -> None:
    """`act(conv(x) + r)` -> conv(x, residual=r) with act fused, for convs with nothing fused after them
    yet whose output goes only into one same-shape float32 add (for `conv_a(x) + conv_b(y)`, the first)."""
    claimed = set()
    for layer in layers:
        if (not layer.convertible or layer.keep_float or layer.node is None or layer.act is not None
                or not isinstance(layer.module, nn.Conv2d)):
            continue
        out = layer.bn_node or layer.node
        users = list(out.users)
        if len(users) != 1:
            continue
        add = users[0]
        if (add in claimed or add.op != "call_function" or add.target not in _ADDS or add.kwargs
                or len(add.args) != 2):
            continue
        others = [a for a in add.args if a is not out]
        if len(others) != 1 or not isinstance(others[0], fx.Node):
            continue
        other = others[0]
        meta_out, meta_other = out.meta.get("tensor_meta"), other.meta.get("tensor_meta")
        if (meta_out is None or meta_other is None or getattr(meta_other, "dtype", None) != torch.float32
                or tuple(meta_out.shape) != tuple(meta_other.shape)):
            continue
        layer.add_node = add
        claimed.add(add)
        after = list(add.users)
        if len(after) == 1 and after[0].args and after[0].args[0] is add:
            act = _activation_of(after[0], modules)
            if act is not None:
                layer.act, layer.act_node = act, after[0]


def _link_u8(gm: fx.GraphModule, layers: list[_Layer]) -> None:
    """Conv -> conv edges (possibly through max-pools, which commute with uint8 quantization) where the
    producer can emit uint8 in the parameters its consumers quantize their input with."""
    QuantConv2d = _quant_conv_class()
    if QuantConv2d is None:
        return
    convs = {layer.name: layer for layer in layers if isinstance(layer.quant, QuantConv2d)}
    modules = dict(gm.named_modules())

    def consumers(node: fx.Node) -> list[_Layer] | None:
        found = []
        for user in node.users:
            m = modules.get(user.target) if user.op == "call_module" else None
            if user.kwargs or not user.args or user.args[0] is not node or node in user.args[1:]:
                return None
            if isinstance(m, QuantConv2d) and user.target in convs:
                found.append(convs[user.target])
            elif isinstance(m, EdgeoptMaxPool2d) and len(user.args) == 1:
                below = consumers(user)
                if below is None:
                    return None
                found += below
            else:
                return None
        return found or None

    for layer in convs.values():
        if layer.node is None:
            continue
        found = consumers(layer.node)
        if not found:
            continue
        params = {(float(c.quant.input_scale), int(c.quant.input_zero_point)) for c in found}
        if len(params) != 1:
            continue
        scale, zero_point = params.pop()
        layer.quant.set_output_quant(scale, zero_point)
        layer.report.u8_output = True
        layer.report.u8_output_to = tuple(c.name for c in found)


# Ops whose result has its input's memory format, and whose values do not depend on it.
_FORMAT_PRESERVING_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d, EdgeoptMaxPool2d, nn.AvgPool2d,
                              nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout, nn.BatchNorm2d,
                              nn.Conv2d, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.GELU)
_FORMAT_PRESERVING_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul,
                                torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.hardtanh, torch.clamp,
                                torch.cat, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.silu, torch.sigmoid}
_FORMAT_PRESERVING_METHODS = {"relu", "relu_", "clamp", "clamp_", "add", "add_", "mul", "mul_", "sigmoid"}
# Ops whose result is the same whatever the input's memory format (torch copies where it must).
_FORMAT_ABSORBING_FUNCTIONS = {torch.flatten, torch.reshape, torch.mean, getattr}
_FORMAT_ABSORBING_METHODS = {"flatten", "reshape", "mean", "contiguous", "size", "dim"}


def _layout_free(node: fx.Node, modules: dict[str, nn.Module], memo: dict) -> bool:
    """True if every consumer of `node`, followed through format-preserving ops (quantized convs among
    them), computes the same values whatever memory format `node` has, and none of it reaches the model's
    output."""
    if node in memo:
        return memo[node]
    memo[node] = False  # cycles cannot occur in an fx graph; this guards the recursion anyway
    from edgeopt.nn import QuantLinear

    QuantConv2d = _quant_conv_class()
    ok = True
    for user in node.users:
        if user.op == "call_module":
            m = modules.get(user.target)
            if isinstance(m, (QuantLinear, nn.Flatten)):
                continue
            # a QuantConv2d returns the memory format it is given, as torch's own ops do
            preserving = type(m) in _FORMAT_PRESERVING_MODULES or (
                QuantConv2d is not None and isinstance(m, QuantConv2d))
            ok = preserving and _layout_free(user, modules, memo)
        elif user.op == "call_function":
            if user.target in _FORMAT_ABSORBING_FUNCTIONS:
                continue
            ok = user.target in _FORMAT_PRESERVING_FUNCTIONS and _layout_free(user, modules, memo)
        elif user.op == "call_method":
            if user.target in _FORMAT_ABSORBING_METHODS:
                continue
            ok = user.target in _FORMAT_PRESERVING_METHODS and _layout_free(user, modules, memo)
        else:  # the model's output, or anything unknown
            ok = False
        if not ok:
            break
    memo[node] = ok
    return ok


def _link_channels_last(gm: fx.GraphModule, layers: list[_Layer]) -> None:
    QuantConv2d = _quant_conv_class()
    modules = dict(gm.named_modules())
    memo: dict = {}
    converted_float = False
    for layer in layers:
        if layer.node is None or not _layout_free(layer.node, modules, memo):
            continue
        if QuantConv2d is not None and isinstance(layer.quant, QuantConv2d):
            layer.quant.channels_last_output = True
            layer.report.channels_last_output = True
        elif isinstance(layer.quant if layer.quant is not None else layer.module, nn.Conv2d):  # still float
            # A conv kept float (the audio stem) returns NCHW for an NCHW input, and everything after it
            # would run NCHW: torch's NCHW max-pool alone took 1.36 ms against 0.085 ms channels-last for
            # vgg_audio's first pool (1 thread). One transpose of its output puts the rest on NHWC.
            with gm.graph.inserting_after(layer.node):
                nhwc = gm.graph.call_method("contiguous", (layer.node,), {"memory_format": torch.channels_last})
            layer.node.replace_all_uses_with(nhwc, delete_user_cb=lambda user: user is not nhwc)
            layer.report.channels_last_output = True
            converted_float = True
    if converted_float:
        gm.recompile()


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of `test` against `ref`, in dB (inf when equal)."""
    ref, test = ref.detach().double(), test.detach().double()
    noise = (ref - test).pow(2).mean()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(ref.pow(2).mean() / noise))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


__all__ = ["LayerReport", "OBSERVERS", "QuantizeReport", "fold_batchnorm", "fusion_plan", "gptq_round", "quantize",
           "sqnr_db"]


class _CallableModule(types.ModuleType):
    # `import edgeopt.quantize` binds the package attribute `edgeopt.quantize` to this module, so the module
    # itself must be the function for `edgeopt.quantize(model, ...)` to keep working after that import.
    def __call__(self, *args, **kwargs):
        return quantize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""Calibration: what the int8 lowering learns about each layer's input from the calibration data, and the
input range each observer picks from it.

One pass over the data collects min/max, element counts, one batch of inputs (SQNR and timing) and, for
GPTQ, E[x x^T] of the layer's reduction rows; "percentile" and "mse" need a second pass (the largest
values, or a histogram over the now known range).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from edgeopt.passes.common import observe_inputs
from edgeopt.progress import Progress

OBSERVERS = ("minmax", "percentile", "mse")
# Inputs kept per layer for the SQNR column and the kernel timing (first calibration batch, first samples only).
SQNR_SAMPLES = 4
MSE_BINS = 2048


class Stats:
    """What calibration learns about one layer's input."""

    def __init__(self):
        self.lo, self.hi = math.inf, -math.inf
        self.count = 0
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


def mse_range(hist: torch.Tensor, lo: float, hi: float, steps: int = 200) -> tuple[float, float]:
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


def input_range(s: Stats, observer: str, percentile: float) -> tuple[float, float]:
    """The input range `observer` picks from what calibration saw."""
    if observer == "minmax" or s.hi <= s.lo:
        return s.lo, s.hi
    if observer == "percentile":
        hi = _percentile_from_tail(s.top, s.count, percentile)
        lo = -_percentile_from_tail(s.bottom, s.count, percentile)
        return lo, hi
    return mse_range(s.hist, s.lo, s.hi)


RowsFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def calibrate(model: nn.Module, batches: list[torch.Tensor], names: Iterable[str], observer: str,
              percentile: float, progress: bool, rows_for: Mapping[str, RowsFn] | None = None,
              derived: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] | None = None,
              rows_total: int = 16384, owner: str = "edgeopt.quantize") -> dict[str, Stats]:
    """Stats of the first input of each named submodule over `batches`.

    rows_for[name](x, per_sample, generator): the reduction rows of x whose x x^T (summed) goes into
    stats[name].hessian, at most per_sample rows per sample, `rows_total` in all. derived[key] = (name,
    fn): stats of fn(x) for the input x of submodule `name` under their own key (a low-rank layer's
    intermediate), rows_for[key] applying to fn(x)."""
    names = list(names)
    rows_for = dict(rows_for or {})
    derived = dict(derived or {})
    stats = {key: Stats() for key in names + list(derived)}
    state = {"batch": 0}
    samples = sum(int(x.shape[0]) if x.dim() > 1 else 1 for x in batches)
    rows_per_sample = max(1, math.ceil(rows_total / samples))
    generator = torch.Generator().manual_seed(0)
    by_module: dict[str, list[tuple[str, Callable | None]]] = {name: [(name, None)] for name in names}
    for key, (name, fn) in derived.items():
        by_module.setdefault(name, []).append((key, fn))

    def observe1(s: Stats, key: str, x: torch.Tensor):
        s.dtype = x.dtype
        if not x.is_floating_point() or x.numel() == 0:
            return
        s.lo = min(s.lo, float(x.min()))
        s.hi = max(s.hi, float(x.max()))
        s.count += x.numel()
        if state["batch"] == 0 and s.sample is None:
            s.sample = x[:SQNR_SAMPLES].clone() if x.dim() > 1 else x.clone()
        if key in rows_for and x.dtype == torch.float32:
            rows = rows_for[key](x.detach(), rows_per_sample, generator)
            s.hessian = rows.T @ rows if s.hessian is None else s.hessian.addmm_(rows.T, rows)
            s.hessian_rows += rows.shape[0]

    def observe2(s: Stats, x: torch.Tensor):
        if not s.count or not x.is_floating_point():
            return
        flat = x.detach().reshape(-1).float()
        if observer == "percentile":
            s.top = _merge_top(s.top, flat, s.k)
            s.bottom = _merge_top(s.bottom, -flat, s.k)
        elif s.hi > s.lo:
            s.hist += torch.histc(flat, MSE_BINS, s.lo, s.hi).double()

    def first_pass(name):
        def run(_module, x):
            for key, fn in by_module[name]:
                observe1(stats[key], key, x if fn is None else fn(x))
        return run

    def second_pass(name):
        def run(_module, x):
            for key, fn in by_module[name]:
                observe2(stats[key], x if fn is None else fn(x))
        return run

    def out_ndim(name):
        def run(_module, output):
            if isinstance(output, torch.Tensor):
                stats[name].out_ndim = output.dim()
        return run

    passes = 1 if observer == "minmax" else 2
    bar = Progress(passes * len(batches), f"{owner}: calibrating") if progress else None

    def on_batch(i):
        state["batch"] = i
        if bar is not None and i > 0:
            bar.advance()

    try:
        observe_inputs(model, {n: first_pass(n) for n in by_module}, batches,
                       output_hooks={n: out_ndim(n) for n in names}, owner=owner, what="calibration batch", on_batch=on_batch)
        if bar is not None:
            bar.advance()
        if observer == "minmax":
            return stats
        for s in stats.values():
            if s.count:
                s.k = _tail_size(s.count, percentile) if observer == "percentile" else 0
                s.hist = torch.zeros(MSE_BINS, dtype=torch.float64) if observer == "mse" else None
        observe_inputs(model, {n: second_pass(n) for n in by_module}, batches, owner=owner, what="calibration batch", on_batch=on_batch)
        if bar is not None:
            bar.advance()
    finally:
        if bar is not None:
            bar.close()
    return stats

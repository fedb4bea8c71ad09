"""edgeopt.low_rank(model, rank=... | energy=... | speedup=...): truncated-SVD factorization of the
nn.Linear layers, kept only where it is measured to be faster.

Each candidate layer W (out x in) becomes LowRankLinear (W ~= U @ V^T, rank r, fused kernel). The rank is
chosen per layer: an explicit count or fraction of min(in, out), the smallest rank keeping a fraction of
the spectral energy, or the largest rank whose MAC ratio in*out / (r*(in+out)) reaches a speedup target.
A layer is replaced only if the factorized layer runs faster than the current one on the input shape the
layer actually sees (timed on this machine, now). Returns the model (changed in place) and a report.
With conv="tucker2" or conv="separable", nn.Conv2d layers (groups=1, k > 1) are factorized too, into
plain PyTorch convolutions (no edgeopt kernel yet): Tucker-2 (HOSVD: 1x1 Cin->R_in, kxk core R_in->R_out,
1x1 R_out->Cout) or spatially separable (kx1 Cin->R, then 1xk R->Cout). Conv ranks follow the same
rank fraction / energy / speedup rule; an integer rank= applies to Linear layers only.

Fine-tuning: with trainable=True the LowRankLinear layers carry float parameters (U, V^T, bias) and train
as two plain matmuls in training mode, while eval mode runs the fused kernel on buffers repacked from the
parameters; `freeze(model)` packs them for good and drops the parameters. The conv factorizations are
plain torch convolutions and train as they are.
"""
from __future__ import annotations

import math
import sys
import time
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeopt.nn.low_rank_linear import LowRankLinear, choose_rank


@dataclass
class LowRankReport:
    name: str
    in_features: int
    out_features: int
    rank: int            # chosen rank (0 when no rank saves MACs)
    full_rank: int
    macs_before: int     # per input row
    macs_after: int      # per input row (= macs_before when not converted)
    rel_error: float     # ||W - U V^T||_F / ||W||_F of the stored factors (nan when not evaluated)
    energy: float        # fraction of sum(s^2) kept
    dense_us: float      # measured time of the current layer (nan when not measured)
    low_rank_us: float   # measured time of the factorized layer
    converted: bool
    reason: str = ""


def rank_for_speedup(in_features: int, out_features: int, speedup: float) -> int:
    """Largest rank whose MAC ratio reaches `speedup` (0 if none does)."""
    if not speedup > 0:
        raise ValueError(f"edgeopt low_rank: speedup must be positive, got {speedup!r}")
    return int(math.floor(in_features * out_features / (speedup * (in_features + out_features))))


def _time_us(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median microseconds per call over `repeats` timed blocks (first call untimed)."""
    with torch.no_grad():
        module(x)
        loops = 1
        t0 = time.perf_counter()
        module(x)
        one = time.perf_counter() - t0
        loops = max(1, min(200, int(2e-3 / max(one, 1e-7))))  # ~2 ms blocks
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(loops):
                module(x)
            samples.append((time.perf_counter() - t0) / loops)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


@torch.no_grad()
def _input_rows(model: nn.Module, linears: dict[str, nn.Linear], example_input) -> dict[str, int]:
    """Rows (product of leading dims) each layer sees for one call on example_input."""
    rows: dict[str, int] = {}

    def hook_for(name):
        def hook(_module, inputs):
            rows[name] = max(1, inputs[0].numel() // inputs[0].shape[-1])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in linears.items()]
    was_training = model.training
    try:
        model.eval()
        model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def low_rank(model: nn.Module, rank: int | float | None = None, energy: float | None = None,
             speedup: float | None = None, *, weight_dtype: str = "fp32", example_input=None,
             measure: bool = True, min_gain: float = 1.05, repeats: int = 7,
             skip: Iterable[str] = (), conv: str | None = None,
             trainable: bool = False) -> tuple[nn.Module, list[LowRankReport]]:
    """Factorize the nn.Linear layers of `model` in place; returns (model, per-layer report).

    Exactly one of rank (int, or fraction of min(in, out)), energy (fraction of sum(s^2) kept) or
    speedup (MAC-ratio target) chooses each layer's rank. With measure=True (default), each layer is
    timed as it is and factorized on inputs of the shape it sees for `example_input` (a model input, or a
    tuple of inputs; default: one row per layer), and replaced only if the factorized layer is at least
    `min_gain` times faster. measure=False replaces every layer whose MACs go down. trainable=True makes
    the new LowRankLinear layers fine-tunable (float parameters; see `freeze` for after the fine-tuning);
    each new layer takes the training mode of the layer it replaces.
    """
    if sum(v is not None for v in (rank, energy, speedup)) != 1:
        raise ValueError("edgeopt low_rank: give exactly one of rank=, energy= or speedup=")
    if conv not in (None, "tucker2", "separable"):
        raise ValueError(f"edgeopt low_rank: conv must be None, 'tucker2' or 'separable', got {conv!r}")
    skip = set(skip)
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    rows = _input_rows(model, linears, example_input) if example_input is not None else {}
    report = []
    if conv is not None:
        report += _low_rank_convs(model, rank, energy, speedup, conv, example_input, measure, min_gain, repeats, skip)
    for name, linear in linears.items():
        k, n = linear.in_features, linear.out_features
        full = min(k, n)
        w = linear.weight.detach().to(torch.float64)
        s = torch.linalg.svdvals(w)
        total = float(s.pow(2).sum())
        macs = k * n

        def entry(r, converted, reason, err=math.nan, dense=math.nan, lr_us=math.nan):
            kept = float(s[:r].pow(2).sum()) / total if total > 0 and r > 0 else (1.0 if total == 0 else 0.0)
            after = r * (k + n) if converted else macs
            return LowRankReport(name, k, n, r, full, macs, after, err, kept, dense, lr_us, converted, reason)

        if name in skip:
            report.append(entry(0, False, "skipped by request"))
            continue
        if name not in rows and example_input is not None:
            report.append(entry(0, False, "not reached by example_input"))
            continue
        if speedup is not None:
            r = min(full, rank_for_speedup(k, n, speedup))
        else:
            r = choose_rank(s, rank if not isinstance(rank, float) or rank < 1 else int(rank), energy)
        if r < 1 or r * (k + n) >= macs:
            report.append(entry(r, False, "no MAC saving at this rank"))
            continue
        candidate = LowRankLinear.from_float(linear, rank=r, weight_dtype=weight_dtype, trainable=trainable).eval()
        err = float(torch.linalg.matrix_norm(candidate.weight_float().double() - w) / max(math.sqrt(total), 1e-300))
        dense_us = lr_us = math.nan
        if measure:
            x = torch.randn(rows.get(name, 1), k)
            dense_us = _time_us(linear, x, repeats)
            lr_us = _time_us(candidate, x, repeats)
            if not lr_us * min_gain <= dense_us:
                report.append(entry(r, False, f"not faster when measured ({lr_us:.1f} vs {dense_us:.1f} us)", err,
                                    dense_us, lr_us))
                continue
        _set_submodule(model, name, candidate.train(linear.training))
        report.append(entry(r, True, "", err, dense_us, lr_us))
    return model, report


def _conv_input_shapes(model: nn.Module, convs: dict[str, nn.Conv2d], example_input) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}

    def hook_for(name):
        def hook(_module, inputs):
            shapes[name] = tuple(inputs[0].shape[1:])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in convs.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def _rank_by(s: torch.Tensor, fraction: float | None, energy: float | None) -> int:
    if fraction is not None:
        return max(1, int(round(fraction * s.numel())))
    return choose_rank(s, energy=energy)


def tucker2(conv: nn.Conv2d, r_in: int, r_out: int) -> nn.Sequential:
    """HOSVD Tucker-2 of a conv: 1x1 (Cin -> r_in), kxk core (r_in -> r_out, the conv's stride/padding),
    1x1 (r_out -> Cout, the conv's bias)."""
    w = conv.weight.detach().double()
    cout, cin, kh, kw = w.shape
    u_out = torch.linalg.svd(w.reshape(cout, -1), full_matrices=False)[0][:, :r_out]
    u_in = torch.linalg.svd(w.permute(1, 0, 2, 3).reshape(cin, -1), full_matrices=False)[0][:, :r_in]
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    first = nn.Conv2d(cin, r_in, 1, bias=False)
    mid = nn.Conv2d(r_in, r_out, (kh, kw), conv.stride, conv.padding, conv.dilation, bias=False,
                    padding_mode=conv.padding_mode)
    last = nn.Conv2d(r_out, cout, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None])
        mid.weight.copy_(core)
        last.weight.copy_(u_out[:, :, None, None])
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, mid, last)


def separable(conv: nn.Conv2d, r: int) -> nn.Sequential:
    """Spatially separable: kh x 1 (Cin -> r) then 1 x kw (r -> Cout), from the SVD of W as a
    (Cin*kh) x (Cout*kw) matrix."""
    w = conv.weight.detach().double()
    cout, cin, kh, kw = w.shape
    u, s, vt = torch.linalg.svd(w.permute(1, 2, 0, 3).reshape(cin * kh, cout * kw), full_matrices=False)
    root = s[:r].sqrt()
    a = (u[:, :r] * root).reshape(cin, kh, r)            # V[r, i, y]
    b = (vt[:r].T * root).reshape(cout, kw, r)           # H[o, r, x]
    pad = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    if isinstance(conv.padding, str):
        raise ValueError("edgeopt low_rank: string padding is not supported for separable factorization")
    vertical = nn.Conv2d(cin, r, (kh, 1), (conv.stride[0], 1), (pad[0], 0), (conv.dilation[0], 1), bias=False)
    horizontal = nn.Conv2d(r, cout, (1, kw), (1, conv.stride[1]), (0, pad[1]), (1, conv.dilation[1]),
                           bias=conv.bias is not None)
    with torch.no_grad():
        vertical.weight.copy_(a.permute(2, 0, 1)[..., None])
        horizontal.weight.copy_(b.permute(0, 2, 1)[:, :, None, :])
        if conv.bias is not None:
            horizontal.bias.copy_(conv.bias)
    return nn.Sequential(vertical, horizontal)


def _count_macs(module: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _low_rank_convs(model, rank, energy, speedup, kind, example_input, measure, min_gain, repeats, skip):
    if example_input is None:
        raise ValueError("edgeopt low_rank: conv factorization needs example_input (for the feature-map sizes)")
    if rank is not None and not (isinstance(rank, float) and 0 < rank < 1):
        raise ValueError("edgeopt low_rank: for conv layers give rank as a fraction in (0, 1), energy or speedup")
    convs = {name: m for name, m in model.named_modules()
             if type(m) is nn.Conv2d and m.groups == 1 and m.kernel_size != (1, 1)}
    shapes = _conv_input_shapes(model, convs, example_input)
    report = []
    for name, conv in convs.items():
        cout, cin, kh, kw = conv.weight.shape
        x = torch.randn(1, *shapes[name]) if name in shapes else None
        w = conv.weight.detach().double()
        if name in skip or x is None:
            reason = "skipped by request" if name in skip else "not reached by example_input"
            report.append(LowRankReport(name, cin, cout, 0, min(cin, cout), 0, 0, math.nan, math.nan, math.nan,
                                        math.nan, False, reason))
            continue
        macs = _count_macs(conv, x)

        def build(fraction):
            if kind == "tucker2":
                s_out = torch.linalg.svdvals(w.reshape(cout, -1))
                s_in = torch.linalg.svdvals(w.permute(1, 0, 2, 3).reshape(cin, -1))
                r_in, r_out = _rank_by(s_in, fraction, energy), _rank_by(s_out, fraction, energy)
                return tucker2(conv, r_in, r_out), max(r_in, r_out)
            s = torch.linalg.svdvals(w.permute(1, 2, 0, 3).reshape(cin * kh, cout * kw))
            r = _rank_by(s, fraction, energy)
            return separable(conv, r), r

        if speedup is not None:  # the largest fraction whose MAC ratio reaches the target
            candidate, r = None, 0
            for fraction in [i / 64 for i in range(63, 0, -1)]:
                cand, rr = build(fraction)
                if macs / _count_macs(cand, x) >= speedup:
                    candidate, r = cand, rr
                    break
        else:
            candidate, r = build(rank)
        # the largest rank either Tucker-2 mode can have (a 1-channel stem still has min(Cout, k*k) output ranks)
        full = (max(min(cin, cout * kh * kw), min(cout, cin * kh * kw)) if kind == "tucker2"
                else min(cin * kh, cout * kw))
        if candidate is None:
            report.append(LowRankReport(name, cin, cout, 0, full, macs, macs, math.nan, math.nan, math.nan, math.nan,
                                        False, "no rank reaches the speedup"))
            continue
        after = _count_macs(candidate, x)
        with torch.no_grad():  # reconstruction error of the conv as an operator, on this input
            ref = conv(x)
            err = float((candidate(x) - ref).norm() / ref.norm().clamp_min(1e-30))
        kept = math.nan
        if after >= macs:
            report.append(LowRankReport(name, cin, cout, r, full, macs, macs, err, kept, math.nan, math.nan, False,
                                        "no MAC saving at this rank"))
            continue
        dense_us = lr_us = math.nan
        if measure:
            dense_us, lr_us = _time_us(conv, x, repeats), _time_us(candidate, x, repeats)
            if not lr_us * min_gain <= dense_us:
                report.append(LowRankReport(name, cin, cout, r, full, macs, macs, err, kept, dense_us, lr_us, False,
                                            f"not faster when measured ({lr_us:.1f} vs {dense_us:.1f} us)"))
                continue
        _set_submodule(model, name, candidate.train(conv.training))
        report.append(LowRankReport(name, cin, cout, r, full, macs, after, err, kept, dense_us, lr_us, True))
    return report


def format_report(report: Sequence[LowRankReport]) -> str:
    """The report as a Markdown table."""
    lines = ["| layer | in x out | rank | MACs before | MACs after | rel. error | energy | dense us | low-rank us | |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in report:
        lines.append(f"| {e.name} | {e.in_features}x{e.out_features} | {e.rank}/{e.full_rank} | {e.macs_before} | "
                     f"{e.macs_after} | {e.rel_error:.4f} | {e.energy:.4f} | {e.dense_us:.1f} | {e.low_rank_us:.1f} | "
                     f"{'factorized' if e.converted else e.reason} |")
    before = sum(e.macs_before for e in report)
    after = sum(e.macs_after for e in report)
    lines.append(f"\nMACs (Linear: per input row; Conv2d: per input): {before} -> {after} "
                 f"({before / max(after, 1):.2f}x fewer)")
    return "\n".join(lines)


def freeze(model: nn.Module) -> nn.Module:
    """After fine-tuning: packs every trainable LowRankLinear's float parameters into its fused-kernel
    buffers and removes the parameters (the layers become inference-only). Returns the model."""
    for m in model.modules():
        if isinstance(m, LowRankLinear):
            m.freeze()
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class _CallableModule(types.ModuleType):
    # `import edgeopt.low_rank` binds the package attribute to this module, so the module itself must be
    # the function for `edgeopt.low_rank(model, ...)` to work after that import.
    def __call__(self, *args, **kwargs):
        return low_rank(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""edgeopt.low_rank(model, rank=... | energy=... | speedup=...): truncated-SVD factorization of the
nn.Linear layers, kept only where it is measured to be faster.

Each candidate layer W (out x in) becomes LowRankLinear (W ~= U @ V^T, rank r, fused kernel). The rank is
chosen per layer: an explicit count or fraction of min(in, out), the smallest rank keeping a fraction of
the spectral energy, or the largest rank whose MAC ratio in*out / (r*(in+out)) reaches a speedup target.
A layer is replaced only if the factorized layer runs faster than the current one on the input shape the
layer actually sees (timed on this machine, now). Returns the model (changed in place) and a Report.
With conv="tucker2" or conv="separable", nn.Conv2d layers (groups=1, k > 1) are factorized too, into
plain PyTorch convolutions (which the int8 lowering then converts like any conv): Tucker-2 (HOSVD: 1x1
Cin->R_in, kxk core R_in->R_out, 1x1 R_out->Cout) or spatially separable (kx1 Cin->R, then 1xk R->Cout).
Conv ranks follow the same rank fraction / energy / speedup rule; an integer rank= applies to Linear
layers only.

Fine-tuning: with trainable=True the LowRankLinear layers carry float parameters (U, V^T, bias) and train
as two plain matmuls in training mode, while eval mode runs the fused kernel on buffers repacked from the
parameters; `freeze(model)` packs them for good and drops the parameters. The conv factorizations are
plain torch convolutions and train as they are. The int8 lowering (`edgeopt.quantize`) turns a
LowRankLinear into int8 factors with static ranges.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from edgeopt.nn.low_rank_linear import LowRankLinear, choose_rank
from edgeopt.passes.common import first_inputs, renamed_keyword, resolve_names, set_submodule
from edgeopt.passes.lowered import refuse_lowered
from edgeopt.perf.cost import macs_per_sample, weight_bytes
from edgeopt.passes.quantize.plan import kind
from edgeopt.passes.report import LayerReport, Report
from edgeopt.passes.timing import time_us

OWNER = "edgeopt.low_rank"
CONV_FACTORIZATIONS = ("tucker2", "separable")


def rank_for_speedup(in_features: int, out_features: int, speedup: float) -> int:
    """Largest rank whose MAC ratio reaches `speedup` (0 if none does)."""
    if not speedup > 0:
        raise ValueError(f"edgeopt low_rank: speedup must be positive, got {speedup!r}")
    return int(math.floor(in_features * out_features / (speedup * (in_features + out_features))))


def low_rank(model: nn.Module, rank: int | float | None = None, energy: float | None = None,
             speedup: float | None = None, *, weight_dtype: str = "fp32", data=None,
             measure: bool = True, min_gain: float = 1.05, repeats: int = 7,
             skip: Iterable[str] = (), conv: str | None = None,
             trainable: bool = False, **renamed) -> tuple[nn.Module, Report]:
    """Factorize the nn.Linear layers of `model` in place; returns (model, Report).

    Exactly one of rank (int, or fraction of min(in, out)), energy (fraction of sum(s^2) kept) or
    speedup (MAC-ratio target) chooses each layer's rank. With measure=True (default), each layer is
    timed as it is and factorized on inputs of the shape it sees for `data` (one model input, or a tuple
    of inputs; `example_input=` is its former name; default: one row per layer), and replaced only if the
    factorized layer is at least `min_gain` times faster. measure=False replaces every layer whose MACs go
    down. trainable=True makes the new LowRankLinear layers fine-tunable (float parameters; see `freeze`
    for after the fine-tuning); each new layer takes the training mode of the layer it replaces.
    """
    data = renamed_keyword(renamed, "example_input", "data", data, OWNER)
    if renamed:
        raise TypeError(f"{OWNER}() got unexpected keyword arguments {sorted(renamed)}")
    if sum(v is not None for v in (rank, energy, speedup)) != 1:
        raise ValueError("edgeopt low_rank: give exactly one of rank=, energy= or speedup=")
    if conv not in (None, *CONV_FACTORIZATIONS):
        raise ValueError(f"edgeopt low_rank: conv must be None, 'tucker2' or 'separable', got {conv!r}")
    refuse_lowered(model, OWNER, "factorize")
    skip = resolve_names(model, skip, "skip", OWNER)
    linears = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    seen = first_inputs(model, linears, _one_input(data), OWNER) if data is not None else {}
    report = Report(passes=[_describe(rank, energy, speedup, conv, weight_dtype)])
    if conv is not None:
        report.layers += _low_rank_convs(model, rank, energy, speedup, conv, data, measure, min_gain, repeats, skip)
    for name, linear in linears.items():
        k, n = linear.in_features, linear.out_features
        full = min(k, n)
        w = linear.weight.detach().to(torch.float64)
        s = torch.linalg.svdvals(w)
        total = float(s.pow(2).sum())
        x = seen.get(name)
        call_rows = max(1, x.numel() // k) if x is not None else 1  # rows of one call on the data
        rows = max(1, call_rows // (x.shape[0] if x is not None and x.dim() > 1 else 1))  # per sample
        row = LayerReport(name, kind(linear), full_rank=full, macs_before=rows * k * n,
                          weight_bytes_before=weight_bytes(linear))
        report.layers.append(row)

        def note(r, reason=""):
            row.rank = r
            row.energy = float(s[:r].pow(2).sum()) / total if total > 0 and r > 0 else (1.0 if total == 0 else 0.0)
            row.macs = row.macs_before
            row.reason = reason

        if name in skip:
            note(0, "skipped by request")
            continue
        if x is None and data is not None:
            note(0, "not reached by the data")
            continue
        if speedup is not None:
            r = min(full, rank_for_speedup(k, n, speedup))
        else:
            wanted = rank  # a float is a fraction of the full rank (1.0: full), an int a count
            if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > full:
                wanted = full  # a rank above this layer's full rank: no saving here, reported below
            r = choose_rank(s, wanted, energy)
        if r < 1 or r * (k + n) >= k * n:
            note(r, "no MAC saving at this rank")
            continue
        candidate = LowRankLinear.from_float(linear, rank=r, weight_dtype=weight_dtype, trainable=trainable).eval()
        row.rel_error = float(torch.linalg.matrix_norm(candidate.weight_float().double() - w) /
                              max(math.sqrt(total), 1e-300))
        note(r)
        if measure:
            probe = torch.randn(call_rows, k)
            row.kernel_us = {"torch fp32": time_us(linear, probe, repeats=repeats),
                             f"low-rank {weight_dtype}": time_us(candidate, probe, repeats=repeats)}
            dense_us, lr_us = row.kernel_us.values()
            if not lr_us * min_gain <= dense_us:
                row.reason = f"not faster when measured ({lr_us:.1f} vs {dense_us:.1f} us)"
                row.kernel, row.time_us = "torch fp32", dense_us
                continue
            row.time_us = lr_us
        set_submodule(model, name, candidate.train(linear.training))
        row.converted, row.kernel = True, f"low-rank {weight_dtype}"
        row.applied = [f"low rank r={r}" + (" (trainable)" if trainable else "")]
        row.macs = rows * r * (k + n)
        row.weight_bytes = weight_bytes(candidate)
    return model, report


def _describe(rank, energy, speedup, conv, weight_dtype) -> str:
    how = f"rank={rank}" if rank is not None else f"energy={energy}" if energy is not None else f"speedup={speedup}"
    return f"low_rank({how}{', conv=' + conv if conv else ''}, {weight_dtype})"


def _one_input(data):
    """low_rank needs one model input (shapes and timing): a tensor, a tuple of inputs, or the first item of
    an iterable of inputs / (input, label) pairs."""
    if isinstance(data, (torch.Tensor, tuple)):
        return data
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
            return item[0]
        return item
    raise ValueError(f"{OWNER}: data is empty")


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


def _rank_by(s: torch.Tensor, fraction: float | None, energy: float | None) -> int:
    if fraction is not None:
        return max(1, int(round(fraction * s.numel())))
    return choose_rank(s, energy=energy)


def _low_rank_convs(model, rank, energy, speedup, kind_, data, measure, min_gain, repeats, skip) -> list[LayerReport]:
    if data is None:
        raise ValueError("edgeopt low_rank: conv factorization needs data (example_input: for the feature-map sizes)")
    if rank is not None and not (isinstance(rank, float) and 0 < rank <= 1):
        raise ValueError("edgeopt low_rank: for conv layers give rank as a fraction in (0, 1], energy or speedup")
    convs = {name: m for name, m in model.named_modules()
             if type(m) is nn.Conv2d and m.groups == 1 and m.kernel_size != (1, 1)}
    seen = first_inputs(model, convs, _one_input(data), OWNER)
    rows = []
    for name, conv in convs.items():
        cout, cin, kh, kw = conv.weight.shape
        x = torch.randn(1, *seen[name].shape[1:]) if name in seen else None
        w = conv.weight.detach().double()
        # the largest rank either Tucker-2 mode can have (a 1-channel stem still has min(Cout, k*k) output ranks)
        full = (max(min(cin, cout * kh * kw), min(cout, cin * kh * kw)) if kind_ == "tucker2"
                else min(cin * kh, cout * kw))
        row = LayerReport(name, kind(conv), full_rank=full, weight_bytes_before=weight_bytes(conv))
        rows.append(row)
        if name in skip or x is None:
            row.reason = "skipped by request" if name in skip else "not reached by the data"
            continue
        macs = macs_per_sample(conv, x)
        row.macs_before = row.macs = macs

        def build(fraction):
            if kind_ == "tucker2":
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
                if macs / macs_per_sample(cand, x) >= speedup:
                    candidate, r = cand, rr
                    break
        else:
            candidate, r = build(rank)
        row.rank = r
        if candidate is None:
            row.reason = "no rank reaches the speedup"
            continue
        after = macs_per_sample(candidate, x)
        with torch.no_grad():  # reconstruction error of the conv as an operator, on this input
            ref = conv(x)
            row.rel_error = float((candidate(x) - ref).norm() / ref.norm().clamp_min(1e-30))
        if after >= macs:
            row.reason = "no MAC saving at this rank"
            continue
        if measure:
            row.kernel_us = {"torch fp32": time_us(conv, x, repeats=repeats),
                             f"{kind_} fp32": time_us(candidate, x, repeats=repeats)}
            dense_us, lr_us = row.kernel_us.values()
            if not lr_us * min_gain <= dense_us:
                row.reason = f"not faster when measured ({lr_us:.1f} vs {dense_us:.1f} us)"
                continue
            row.time_us = lr_us
        set_submodule(model, name, candidate.train(conv.training))
        row.converted, row.kernel, row.macs = True, f"{kind_} fp32", after
        row.applied = [f"{kind_} r={r} ({len(candidate)} convs)"]
        row.weight_bytes = weight_bytes(candidate)
    return rows


def freeze(model: nn.Module) -> nn.Module:
    """After fine-tuning: packs every trainable LowRankLinear's float parameters into its fused-kernel
    buffers and removes the parameters (the layers become inference-only). Returns the model."""
    for m in model.modules():
        if isinstance(m, LowRankLinear):
            m.freeze()
    return model

"""Per-call cost of each edgeopt module in eager mode at batch 1, on layers so small that the kernel itself
takes ~1 us: what is left is the module's Python, its argument checks, the output allocation and the
native call. This is the figure a change to the call path (edgeopt.kernels) must not make worse.

Timed as CPU time of this thread (time.thread_time; torch and edgeopt on 1 thread), median of 15 rounds of
2000 calls, in microseconds per call.

    python bench/module_overhead.py [--rounds 15] [--calls 2000]
"""
from __future__ import annotations

import argparse
import statistics
import time

from edgeopt.perf import isa  # noqa: E402  (light: no torch)

isa.steer()  # the per-library switches, before torch loads

import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgeopt  # noqa: E402
from edgeopt import nn as enn  # noqa: E402


def cases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    lin = nn.Linear(16, 16)
    conv = nn.Conv2d(8, 16, 1)
    conv3 = nn.Conv2d(8, 16, 3, padding=1)
    dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    x_lin = torch.randn(1, 16)
    x_conv = torch.randn(1, 8, 4, 4).to(memory_format=torch.channels_last)
    x_dw = torch.randn(1, 16, 4, 4).to(memory_format=torch.channels_last)
    return {
        "QuantLinear dynamic": (enn.QuantLinear.from_float(lin), x_lin),
        "QuantLinear static": (enn.QuantLinear.from_float(lin, "static", input_range=(-3, 3)), x_lin),
        "HalfLinear fp16": (enn.HalfLinear.from_float(lin), x_lin),
        "SparseLinear fp32": (enn.SparseLinear.from_float(lin), x_lin),
        "SparseLinear int8": (enn.SparseLinear.from_float(lin, dtype="int8"), x_lin),
        "LowRankLinear fp32": (enn.LowRankLinear.from_float(lin, rank=4), x_lin),
        "LowRankLinear int8": (enn.LowRankLinear.from_float(lin, rank=4, weight_dtype="int8"), x_lin),
        "QuantConv2d 1x1 static": (enn.QuantConv2d.from_float(conv, "static", input_range=(-3, 3)), x_conv),
        "QuantConv2d 3x3 dynamic": (enn.QuantConv2d.from_float(conv3, "dynamic"), x_conv),
        "QuantConv2d depthwise": (enn.QuantConv2d.from_float(dw, "static", input_range=(-3, 3)), x_dw),
        "SparseConv2d fp32 3x3": (enn.SparseConv2d.from_float(conv3), x_conv),
        "MaxPool2d channels_last": (enn.MaxPool2d(2), x_dw),
    }


def us_per_call(module: nn.Module, x: torch.Tensor, calls: int, rounds: int) -> float:
    module.eval()
    samples = []
    with torch.no_grad():
        for _ in range(200):
            module(x)
        for _ in range(rounds):
            t0 = time.thread_time()
            for _ in range(calls):
                module(x)
            samples.append((time.thread_time() - t0) / calls)
    return statistics.median(samples) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    meta = isa.setup()
    torch.set_num_threads(1)
    edgeopt.set_num_threads(1)
    print(f"# {meta['avx2_method']}, edgeopt ISA {meta['edgeopt_isa']}, 1 thread, batch 1, "
          f"median of {args.rounds} x {args.calls} calls (thread CPU time)")
    for name, (module, x) in cases().items():
        print(f"{name:26s} {us_per_call(module, x, args.calls, args.rounds):6.2f} us/call", flush=True)


if __name__ == "__main__":
    main()

"""pyperf benchmark of one Linear implementation for the low-rank / fp16-weight issue.

    python bench/kernels/bench_low_rank.py --impl lowrank_fused -o lowrank_fused.json [--m 1] [--ranks 2,4,8]

Shapes: shapes/low_rank_shapes.txt. Ranks are fractions 1/d of min(K, N), one per d in --ranks.
Implementations (all fp32 activations):
  dense_eager      nn.Linear fp32 (PyTorch)                 -- rank-independent
  dense_f32        edgeopt HalfLinear, fp32 weights          -- dense, same kernels as the low-rank layer
  dense_f16        edgeopt HalfLinear, fp16 weights (F16C)   -- the fp16 GEMV target
  lowrank_fused    edgeopt LowRankLinear, fp32 factors, fused op
  lowrank_unfused  the same factors as two edgeopt GEMM calls (LowRankLinear.unfused)
  lowrank_torch    the same factors as nn.Sequential(Linear(K, r, bias=False), Linear(r, N)) in PyTorch
  lowrank_fused_f16  LowRankLinear with fp16 factors
Factorization, packing and first calls stay outside the timer.
"""
from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import read_layer_shapes, record_metadata, time_forward  # noqa: E402

import pyperf  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

DENSE = ("dense_eager", "dense_f32", "dense_f16")
LOW_RANK = ("lowrank_fused", "lowrank_unfused", "lowrank_torch", "lowrank_fused_f16")
IMPLS = DENSE + LOW_RANK
SHAPES_FILE = Path(__file__).resolve().parent / "shapes" / "low_rank_shapes.txt"
DEFAULT_M = "1"
DEFAULT_RANKS = "2,4,8"


def read_shapes(path: Path = SHAPES_FILE) -> list[tuple[str, int, int]]:
    return read_layer_shapes(path)


def rank_of(k: int, n: int, d: int) -> int:
    return max(1, min(k, n) // d)


def bench_name(layer: str, m: int, k: int, n: int, d: int | None) -> str:
    return f"{layer} M={m} K={k} N={n}" + ("" if d is None else f" r=1/{d}")


class _Unfused(nn.Module):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr

    def forward(self, x):
        return self.lr.unfused(x)


def build(impl: str, k: int, n: int, rank: int | None) -> nn.Module:
    from edgeopt.nn import HalfLinear, LowRankLinear

    torch.manual_seed(0)
    linear = nn.Linear(k, n).eval()
    if impl == "dense_eager":
        return linear
    if impl == "dense_f32":
        return HalfLinear.from_float(linear, weight_dtype="fp32")
    if impl == "dense_f16":
        return HalfLinear.from_float(linear, weight_dtype="fp16")
    # Random factors: timing does not depend on the values, and an SVD of a 4096^2 matrix per worker is slow.
    u = torch.randn(n, rank) / rank ** 0.5
    vt = torch.randn(rank, k) / k ** 0.5
    if impl == "lowrank_fused":
        return LowRankLinear.from_factors(u, vt, linear.bias)
    if impl == "lowrank_fused_f16":
        return LowRankLinear.from_factors(u, vt, linear.bias, weight_dtype="fp16")
    if impl == "lowrank_unfused":
        return _Unfused(LowRankLinear.from_factors(u, vt, linear.bias))
    if impl == "lowrank_torch":
        first, second = nn.Linear(k, rank, bias=False), nn.Linear(rank, n)
        with torch.no_grad():
            first.weight.copy_(vt)
            second.weight.copy_(u)
            second.bias.copy_(linear.bias)
        return nn.Sequential(first, second).eval()
    raise ValueError(impl)


def add_cmdline_args(cmd, args):
    cmd.extend(("--impl", args.impl, "--m", args.m, "--ranks", args.ranks))
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=3, values=5, warmups=1, min_time=0.05, add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--impl", choices=IMPLS, required=True)
    runner.argparser.add_argument("--m", default=DEFAULT_M, help="comma-separated row counts")
    runner.argparser.add_argument("--ranks", default=DEFAULT_RANKS, help="comma-separated d: rank = min(K, N) / d")
    runner.argparser.add_argument("--only", default="", help="comma-separated layer names to run")
    args = runner.parse_args()
    record_metadata(runner, args.impl)
    only = set(filter(None, args.only.split(",")))
    ranks = [None] if args.impl in DENSE else [int(d) for d in args.ranks.split(",")]
    task = 0
    for layer, k, n in read_shapes():
        if only and layer not in only:
            continue
        for m in (int(v) for v in args.m.split(",")):
            for d in ranks:
                rank = None if d is None else rank_of(k, n, d)
                mine = args.worker and args.worker_task == task
                module = build(args.impl, k, n, rank) if mine else None
                x = torch.randn(m, k)
                if mine:
                    time_forward(2, module, x)
                macs = m * k * n if rank is None else m * rank * (k + n)
                runner.bench_time_func(bench_name(layer, m, k, n, d), time_forward, module, x,
                                       metadata={"macs": str(macs)})
                task += 1


if __name__ == "__main__":
    main()

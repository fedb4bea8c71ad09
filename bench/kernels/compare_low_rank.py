"""Interleaved same-process comparison of the low-rank / fp16 contenders (complements run_low_rank.py).

    python bench/kernels/compare_low_rank.py [--m 1,64] [--ranks 4] [--rounds 7] [--only bert.mlp.fc1]

The pyperf run times each implementation in its own processes, minutes apart; on a shared, loaded
machine that is too long to keep the background constant. Here every contender of one shape runs in
alternating blocks (first call of each block untimed, ~20 ms per block), for several rounds, and the
median per contender is compared: the ratios are taken under the same load. PyTorch and edgeopt share
this process, so each block starts after the other runtime's threads have had a block to settle.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402

from bench_low_rank import build, rank_of, read_shapes  # noqa: E402


def block_us(module, x, seconds: float = 0.02) -> float:
    with torch.no_grad():
        module(x)
        t0 = time.perf_counter()
        module(x)
        one = time.perf_counter() - t0
        loops = max(2, min(2000, int(seconds / max(one, 1e-7))))
        t0 = time.perf_counter()
        for _ in range(loops):
            module(x)
        return (time.perf_counter() - t0) / loops * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", default="1")
    parser.add_argument("--ranks", default="4")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = isa.setup()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"# Interleaved low-rank comparison ({args.threads} threads; torch {meta['torch_cpu_capability']}, "
          f"edgeopt {meta['edgeopt_isa']}; load average {' '.join(load)})\n")
    print("| layer | M | rank | ideal | nn.Linear us | edgeopt fp32 us | fp16 us | fused us | unfused us | torch 2-GEMM us "
          "| fp16 vs nn.Linear | fused vs dense fp32 (% ideal) | fused vs nn.Linear (% ideal) | fused vs unfused "
          "| fused vs torch 2-GEMM |")
    print("|" + "---|" * 15)
    only = set(filter(None, args.only.split(",")))
    for layer, k, n in read_shapes():
        if only and layer not in only:
            continue
        for m in (int(v) for v in args.m.split(",")):
            for d in (int(v) for v in args.ranks.split(",")):
                r = rank_of(k, n, d)
                mods = {i: build(i, k, n, None) for i in ("dense_eager", "dense_f32", "dense_f16")}
                mods.update({i: build(i, k, n, r) for i in ("lowrank_fused", "lowrank_unfused", "lowrank_torch")})
                x = torch.randn(m, k)
                times = {i: [] for i in mods}
                for _ in range(args.rounds):
                    for name, mod in mods.items():
                        times[name].append(block_us(mod, x))
                t = {i: statistics.median(v) for i, v in times.items()}
                ideal = k * n / (r * (k + n))
                f = t["lowrank_fused"]
                print(f"| {layer} | {m} | {r} (1/{d}) | {ideal:.2f}x | {t['dense_eager']:.1f} | {t['dense_f32']:.1f} | "
                      f"{t['dense_f16']:.1f} | {f:.1f} | {t['lowrank_unfused']:.1f} | {t['lowrank_torch']:.1f} | "
                      f"{t['dense_eager'] / t['dense_f16']:.2f}x | {t['dense_f32'] / f:.2f}x "
                      f"({100 * t['dense_f32'] / f / ideal:.0f}%) | {t['dense_eager'] / f:.2f}x "
                      f"({100 * t['dense_eager'] / f / ideal:.0f}%) | {t['lowrank_unfused'] / f:.2f}x | "
                      f"{t['lowrank_torch'] / f:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

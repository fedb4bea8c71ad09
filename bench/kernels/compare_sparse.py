"""Interleaved, same-process comparison of the block-sparse kernels with edgeopt's dense kernels.

    python bench/kernels/compare_sparse.py [--only r18.l3.3x3,...] [--sparsity 0.5,0.8,0.9] [--threads 2] [--rounds 7]

The pyperf benchmark (run_sparse.py) runs each implementation in its own processes one after another,
so on a shared machine a load change between two implementations' runs lands in their ratio. Here the
dense and sparse kernels of one shape alternate in short blocks (round-robin, first call untimed) and
each ratio is the median over rounds of dense/sparse measured back to back -- the ratio the issue's
targets are about. Same weights, layouts and int8 convention (u8 in -> u8 out, static) as bench_sparse.py.
Prints a markdown table with the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402

from bench_sparse import build, read_shapes  # noqa: E402


def block_time(fn, target_s=0.01) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    loops = max(1, min(1000, int(target_s / max(one, 1e-7))))
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - t0) / loops


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="")
    p.add_argument("--sparsity", default="0.5,0.7,0.8,0.9,0.95")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    only = set(filter(None, a.only.split(",")))
    print(f"threads {a.threads}, rounds {a.rounds}, load before {'%.2f %.2f %.2f' % os.getloadavg()}")
    print("| layer | M | K | N | sparsity | fp32 dense us | fp32 sparse us | fp32 speedup | int8 dense us | "
          "int8 sparse us | int8 speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layer, m, k, n in read_shapes():
        if only and layer not in only:
            continue
        dense = {dt: build(f"dense_{dt}", m, k, n, 0.0, a.threads) for dt in ("fp32", "int8")}
        for s in (float(v) for v in a.sparsity.split(",")):
            sparse = {dt: build(f"sparse_{dt}", m, k, n, s, a.threads) for dt in ("fp32", "int8")}
            row = f"| {layer} | {m} | {k} | {n} | {s:.0%} |"
            for dt in ("fp32", "int8"):
                ratios, td, ts = [], [], []
                for _ in range(a.rounds):
                    d = block_time(dense[dt])
                    sp = block_time(sparse[dt])
                    td.append(d)
                    ts.append(sp)
                    ratios.append(d / sp)
                row += (f" {statistics.median(td) * 1e6:.0f} | {statistics.median(ts) * 1e6:.0f} | "
                        f"{statistics.median(ratios):.2f}x |")
            print(row, flush=True)
    print(f"load after {'%.2f %.2f %.2f' % os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quick block-shape microbenchmark for the block-sparse kernels (not the pyperf benchmark).

    python bench/kernels/sparse_blocks_micro.py [--threads 1]

Times sp_linear / sp_qlinear with 8- and 16-column blocks against the dense fw_linear / qlinear of the
same dtype, interleaved in one process (min of several repeats), at several densities.
"""
import argparse
import os
import time

import numpy as np

from edgeopt._native import _C


def best(fn, reps=7, inner=None):
    fn()
    if inner is None:
        t0 = time.perf_counter(); fn(); one = time.perf_counter() - t0
        inner = max(1, int(0.02 / max(one, 1e-7)))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default="256x1024x1024,1x4096x4096,784x1152x128")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"isa {_C.isa()} threads {a.threads} load {os.getloadavg()[0]:.2f}")
    for shape in a.shapes.split(","):
        m, k, n = (int(v) for v in shape.split("x"))
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        wq = rng.integers(-63, 64, (n, k)).astype(np.int8)
        out = np.empty((m, n), np.float32)
        dense_f = _C.fw_pack(w)
        dense_q = _C.qs8_pack(wq, np.full(n, 0.01, np.float32))
        tf = best(lambda: _C.fw_linear(x, dense_f, out, num_threads=a.threads))
        tq = best(lambda: _C.qlinear(x, dense_q, out, True, num_threads=a.threads))
        print(f"M={m} K={k} N={n}: dense fp32 {tf*1e6:.0f} us, dense int8 {tq*1e6:.0f} us")
        for density in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05):
            row = [f"  density {density:4.2f}:"]
            for nb in (8, 16):
                bm = rng.random((n // nb, k)) < density
                wf = w * np.repeat(bm, nb, 0)
                bmq = rng.random((n // nb, k // 4)) < density
                wqs = (wq * np.kron(bmq, np.ones((nb, 4), np.int8))).astype(np.int8)
                pf = _C.sp_pack(wf, None, None, nb)
                pq = _C.sp_pack(wqs, np.full(n, 0.01, np.float32), None, nb)
                sf = best(lambda: _C.sp_linear(x, pf, out, num_threads=a.threads))
                sq = best(lambda: _C.sp_qlinear(x, pq, out, True, num_threads=a.threads))
                row.append(f"fp32 {nb}x1 {tf/sf:5.2f}x  int8 {nb}x4 {tq/sq:5.2f}x |")
            print(" ".join(row), flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

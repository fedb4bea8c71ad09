"""ResNet-18 at 80% block sparsity in int8 vs edgeopt's dense int8, batch 1, 2 threads (the sparse
end-to-end figure), in one process.

The model and inputs are the end-to-end benchmark's (bench_e2e.load_model / inputs: random init with
BatchNorm statistics from data, cached), so the peers' figures in the same run of bench/e2e/run_e2e.py are the
comparison for "best dense int8 peer". Pruning: edgeopt.prune to 80% in 16x4 blocks (global magnitude,
no fine-tuning: this is a speed figure; accuracy vs sparsity is measured on RAVDESS). Conversion:
edgeopt.sparsify(dtype="int8"): the int8 lowering of the pruned layers, each on the sparse or the dense
int8 kernel, whichever measured faster. Timed as in bench/NOTES.md for in-process comparisons: alternating blocks of
calls, median of block medians.

    python bench/e2e/sparse_resnet18_e2e.py [--sparsity 0.8] [--rounds 7]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402

import edgeopt  # noqa: E402
from bench_e2e import inputs, load_model  # noqa: E402
from edgeopt.sparsify import format_report  # noqa: E402


def block_median_ms(model, x, calls: int) -> float:
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(calls):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    args = ap.parse_args()
    meta = isa.setup()
    torch.set_num_threads(2)
    model, how = load_model("resnet18")
    data = inputs("resnet18")
    x = data["check"][0].contiguous(memory_format=torch.channels_last)
    dense_q, _ = edgeopt.quantize(copy.deepcopy(model), data["calib"], progress=False)

    pruned = copy.deepcopy(model)
    pruner = edgeopt.prune(pruned, args.sparsity, block=(16, 4))
    pruner.remove()  # weights stay zero where pruned; no hooks needed for inference
    sparse_q, rows = edgeopt.sparsify(pruned, data["calib"], dtype="int8")
    print(format_report(rows))
    variants = {"eager fp32": model, "edgeopt dense int8 (quantize)": dense_q,
                "edgeopt sparse int8 (sparsify)": sparse_q.eval()}
    medians = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, m in variants.items():
            medians[name].append(block_median_ms(m, x, args.calls))
    import os
    print(f"\nResNet-18 {how}; {args.sparsity:.0%} block sparsity (16x4); 2 threads; load "
          f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())}; {meta.get('path', '')}")
    base = statistics.median(medians["edgeopt dense int8 (quantize)"])
    for name, ms in medians.items():
        med = statistics.median(ms)
        print(f"  {name:32s} {med:8.2f} ms   vs dense int8 {base / med:5.2f}x")


if __name__ == "__main__":
    main()

"""RAVDESS vgg_audio end to end with the block-sparse kernels: accuracy on the held-out actors and batch-1
latency, against the dense model (fp32 eager and edgeopt's dense int8).

    python bench/e2e/e2e_sparse_ravdess.py CKPT.pt [CKPT.pt ...] [--threads 2] [--rounds 15]

Each CKPT is a pruned, fine-tuned vgg_audio state_dict (bench/accuracy/accuracy_sparse.py --save-dir). Every
model runs on channels_last inputs (the sparse conv's NHWC layout; torch's own conv is as fast there).
Variants: dense fp32 (torch eager), dense int8 (edgeopt.quantize, static, 64 calibration clips),
sparse fp32 and sparse int8 = edgeopt.sparsify on the pruned model (the one int8 lowering, restricted to
the pruned layers: static ranges, BatchNorm folded, fused ReLUs), sparse where measured faster. Latency: median over rounds of interleaved
blocks (all variants in one process, alternating). Prints a markdown table with the load average.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import edgeopt  # noqa: F401
import torch

from edgeopt.models import load_pretrained
from edgeopt.sparsify import format_report, sparsify
from edgeopt.training import evaluate, get_task


def cl(model):
    class ChannelsLast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x.contiguous(memory_format=torch.channels_last))
    return ChannelsLast(model).eval()


def block_ms(model, x, target_s=0.05):
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        model(x)
        one = time.perf_counter() - t0
        loops = max(1, int(target_s / max(one, 1e-6)))
        t0 = time.perf_counter()
        for _ in range(loops):
            model(x)
    return (time.perf_counter() - t0) / loops * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--no-dense-int8", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    task = get_task("ravdess")
    test = task.dataset("test")
    x1 = test[0][0][None]
    variants = {}
    dense = load_pretrained("ravdess_vgg_audio").eval()
    variants["dense fp32 (torch)"] = dense
    train = task.dataset("train")
    calib = torch.stack([train[i][0] for i in range(0, 640, 10)])
    if not a.no_dense_int8:
        q, _ = edgeopt.quantize(copy.deepcopy(dense), [calib], progress=False)
        variants["dense int8 (edgeopt)"] = q.eval()
    for ckpt in a.checkpoints:
        for dtype in ("fp32", "int8"):
            m = load_pretrained("ravdess_vgg_audio").eval()
            m.load_state_dict(torch.load(ckpt))
            m, report = sparsify(m, [calib], dtype=dtype)
            print(f"{ckpt.name} {dtype}:\n{format_report(report)}", flush=True)
            variants[f"{ckpt.stem} sparse {dtype}"] = m.eval()
    print(f"threads {a.threads}, load before {'%.2f %.2f %.2f' % os.getloadavg()}")
    acc = {name: evaluate(cl(m), test, task.classes).accuracy for name, m in variants.items()}
    times = {name: [] for name in variants}
    wrapped = {name: cl(m) for name, m in variants.items()}
    for _ in range(a.rounds):
        for name, m in wrapped.items():
            times[name].append(block_ms(m, x1))
    base = statistics.median(times["dense fp32 (torch)"])
    print("| model | test accuracy | batch-1 latency ms (median) | vs dense fp32 |")
    print("|---|---|---|---|")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {100 * acc[name]:.2f}% | {t:.2f} | {base / t:.2f}x |")
    print(f"load after {'%.2f %.2f %.2f' % os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

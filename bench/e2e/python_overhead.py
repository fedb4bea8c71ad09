"""How much of a quantized model's batch-1 time is not spent in edgeopt's kernels.

Runs each model (edgeopt.quantize'd) twice: as is, and with the native kernel entry points (qconv2d,
qlinear, maxpool2d) replaced by stubs that return at once. The stubbed run still does everything else
per layer -- the module's Python, argument checks, output allocation, NCHW/NHWC views -- and the torch ops
between layers (avgpool, flatten, the float stem), so `stubbed / full` is the share of the model's time
outside edgeopt's kernels: the per-layer overhead (plus the float ops that remain).

Timed as CPU time of one thread (time.thread_time, torch and edgeopt on 1 thread), best of 5 rounds of
10 calls: the machine this was written on was shared, and CPU time does not count waiting for a core.

    python bench/e2e/python_overhead.py [--models resnet18,vgg_audio,mobilenet_v2,resnet50]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)

import torch  # noqa: E402

import edgeopt  # noqa: E402
from edgeopt._native import _C  # noqa: E402
from edgeopt.models import get_model  # noqa: E402

STUBBED = ("qconv2d", "qlinear", "maxpool2d")


def cpu_ms(model, x, calls: int = 10, rounds: int = 5) -> float:
    with torch.no_grad():
        for _ in range(2):
            model(x)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.thread_time()
            for _ in range(calls):
                model(x)
            best = min(best, (time.thread_time() - t0) / calls)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,vgg_audio,mobilenet_v2,resnet50")
    args = ap.parse_args()
    isa.setup()
    torch.set_num_threads(1)
    print("model          calls/inference  full ms  kernels stubbed ms  outside kernels")
    for name in args.models.split(","):
        shape = (1, 1, 64, 128) if name.startswith("vgg_audio") else (1, 3, 224, 224)
        model = get_model(name).eval()
        torch.manual_seed(0)
        qmodel, _ = edgeopt.quantize(model, [torch.randn(shape) for _ in range(2)], progress=False,
                                     weight_rounding="nearest")
        x = torch.randn(shape)
        counts = {fn: 0 for fn in STUBBED}
        originals = {fn: getattr(_C, fn) for fn in STUBBED}

        def counting(fn):
            def call(*a, **k):
                counts[fn] += 1
                return originals[fn](*a, **k)
            return call

        for fn in STUBBED:
            setattr(_C, fn, counting(fn))
        with torch.no_grad():
            qmodel(x)
        calls = sum(counts.values())
        for fn in STUBBED:
            setattr(_C, fn, originals[fn])
        full = cpu_ms(qmodel, x)
        stubs = {"qconv2d": lambda *a, **k: (1.0, 0), "qlinear": lambda *a, **k: (1.0, 0),
                 "maxpool2d": lambda *a, **k: None}
        try:
            for fn, stub in stubs.items():
                setattr(_C, fn, stub)
            stubbed = cpu_ms(qmodel, x)
        finally:
            for fn in STUBBED:
                setattr(_C, fn, originals[fn])
        print(f"{name:14s} {calls:15d}  {full:7.2f}  {stubbed:18.2f}  {100 * stubbed / full:5.1f}% "
              f"({1000 * stubbed / calls:.1f} us per edgeopt call incl. torch ops between)")


if __name__ == "__main__":
    main()

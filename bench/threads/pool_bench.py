"""The thread pool alone: a synthetic inference of CPU-bound tasks, 1 vs 2 threads, quiet and with one core
kept busy by another process, with and without a ParallelRegion, for several pool settings.

    python bench/threads/pool_bench.py                      # ResNet-like: 40 calls x 16 tasks x 40 us
    python bench/threads/pool_bench.py --layers 60 --tasks 16 --task-us 10 --reps 30

The tasks are a fixed count of dependent integer operations (calibrated on one thread), so a descheduled
task takes longer instead of ending on time, and there is no memory traffic: the ideal 2-thread speedup is
2.0x and the ideal ratio with one core busy is 1.5x (three runnable threads on two cores). What is left is
the pool: wake-ups, hand-offs, waiting for a late or preempted worker.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from edgeopt.perf import isa
from edgeopt.perf.busy import BusyCore

isa.steer()  # before torch (harmless under the avx2only shim)
import edgeopt  # noqa: E402,F401
from edgeopt._native import _C  # noqa: E402

SETTINGS = {  # name -> (region_spin_us, contended_spin_us, worker_slice_us); None: the default
    "default": (None, None, None),
    "kernel's time slice": (None, None, 0),
    "no contention fallback": (2000, 2000, None),
    "short spin everywhere": (50, 50, None),
}


def run(layers, tasks, task_us, threads, region, reps, blocks=3) -> float:
    times = []
    for _ in range(blocks):
        _C._pool_workload(layers, tasks, task_us, threads, region)  # warm
        times += [_C._pool_workload(layers, tasks, task_us, threads, region) for _ in range(reps)]
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--task-us", type=float, default=40.0)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    defaults = (_C.region_spin_us(), _C.contended_spin_us(), _C.worker_slice_us())
    print(f"load {os.getloadavg()[0]:.2f}; {args.layers} calls x {args.tasks} tasks x {args.task_us} us "
          f"(1-thread ideal {args.layers * args.tasks * args.task_us / 1e3:.1f} ms)")
    rows = []
    for name, setting in SETTINGS.items():
        region_spin, contended_spin, slice_us = (d if v is None else v for v, d in zip(setting, defaults))
        _C.set_region_spin_us(region_spin)
        _C.set_contended_spin_us(contended_spin)
        _C.set_worker_slice_us(slice_us)
        for region in (True, False):
            t1 = run(args.layers, args.tasks, args.task_us, 1, region, args.reps)
            t2 = run(args.layers, args.tasks, args.task_us, 2, region, args.reps)
            hog = BusyCore()
            hog.set(True)
            try:
                time.sleep(0.3)
                before = _C.pool_stats()
                busy = run(args.layers, args.tasks, args.task_us, 2, region, args.reps)
                after = _C.pool_stats()
            finally:
                hog.set(False)
            calls = max(1, after["calls"] - before["calls"])
            rows.append((name, region, t1, t2, busy, (after["caller_sleeps"] - before["caller_sleeps"]) / calls,
                         (after["woke_sleepers"] - before["woke_sleepers"]) / calls))
            print(f"{name:24s} region={region!s:5s} 1T {t1:7.2f}  2T {t2:7.2f} ({t1 / t2:.2f}x)  busy 2T {busy:7.2f} "
                  f"({busy / t2:.2f}x quiet, {busy / t1:.2f}x 1T)  busy: caller sleeps/call {rows[-1][5]:.2f}, "
                  f"wakes/call {rows[-1][6]:.2f}", flush=True)
    _C.set_region_spin_us(defaults[0])
    _C.set_contended_spin_us(defaults[1])
    _C.set_worker_slice_us(defaults[2])
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

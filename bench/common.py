"""Pieces shared by the benchmark programs."""
from __future__ import annotations

import time
from pathlib import Path

import torch


def time_forward(loops: int, module, x) -> float:
    """pyperf time function: seconds for `loops` inference calls."""
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(loops):
            module(x)
        return time.perf_counter() - t0


def median_seconds(path: Path) -> dict[str, float]:
    """Benchmark name -> median value (seconds) in a pyperf JSON file."""
    import pyperf

    return {b.get_name(): b.median() for b in pyperf.BenchmarkSuite.load(str(path)).get_benchmarks()}


def write_summary(out: Path, lines: list[str]) -> None:
    summary = "\n".join(lines)
    (out / "summary.md").write_text(summary + "\n")
    print(summary)

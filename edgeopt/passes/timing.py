"""Timing a layer on this machine, now: the passes choose kernels by measured time, not by MAC counts.

One function for every pass (quantize's kernel choice, low_rank's and sparsify's gating, optimize's
latency). Figures from here guide choices inside one process; figures to quote come from bench/ under
/work/tools/quiet (see MEASURING.md).
"""
from __future__ import annotations

import time

import torch
from torch import nn

# Each timed block runs about this long, so a fast layer is timed over many calls.
BLOCK_SECONDS = 2e-3
MAX_LOOPS = 200


@torch.no_grad()
def time_us(module: nn.Module, *inputs, repeats: int = 7) -> float:
    """Median microseconds per call of module(*inputs) over `repeats` blocks of ~2 ms (first call untimed:
    packing, allocation and lazy initialisation stay outside)."""
    if repeats < 1:
        raise ValueError(f"edgeopt timing: repeats must be >= 1, got {repeats}")
    module(*inputs)
    t0 = time.perf_counter()
    module(*inputs)
    one = time.perf_counter() - t0
    loops = max(1, min(MAX_LOOPS, int(BLOCK_SECONDS / max(one, 1e-7))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            module(*inputs)
        samples.append((time.perf_counter() - t0) / loops)
    samples.sort()
    return samples[len(samples) // 2] * 1e6


@torch.no_grad()
def time_candidates(modules: dict[str, nn.Module], *inputs, rounds: int = 5) -> dict[str, float]:
    """Microseconds per call of each module on the same inputs, for choosing between them: the candidates
    are timed in turn, `rounds` times over (so a burst of load from another process hits all of them),
    and each keeps its fastest block -- the least disturbed estimate of what the kernel costs. (Figures
    to quote are medians from bench/ under /work/tools/quiet; this is for decisions inside one process.)"""
    if rounds < 1:
        raise ValueError(f"edgeopt timing: rounds must be >= 1, got {rounds}")
    loops = {}
    for name, module in modules.items():
        module(*inputs)
        t0 = time.perf_counter()
        module(*inputs)
        one = time.perf_counter() - t0
        loops[name] = max(1, min(MAX_LOOPS, int(BLOCK_SECONDS / max(one, 1e-7))))
    best = {name: float("inf") for name in modules}
    for _ in range(rounds):
        for name, module in modules.items():
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                module(*inputs)
            best[name] = min(best[name], (time.perf_counter() - t0) / loops[name])
    return {name: t * 1e6 for name, t in best.items()}


def time_model_ms(model: nn.Module, x: torch.Tensor, repeats: int = 7) -> float:
    """Median milliseconds per forward of `model` on `x` (eval mode; the mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        return time_us(model, x, repeats=repeats) / 1e3
    finally:
        model.train(was_training)

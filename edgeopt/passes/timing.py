"""The passes' layer timings on edgeopt.perf's one timer (edgeopt.perf.timing.alternating_blocks): the
passes choose kernels by measured time, not by MAC counts.

One place for every pass (quantize's kernel choice, low_rank's gating, optimize's latency). Figures from
here guide choices inside one process; figures to quote come from bench/ under /work/tools/quiet (see
MEASURING.md).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from edgeopt.perf.timing import alternating_blocks

# Each timed block runs about this long, so a fast layer is timed over many calls.
BLOCK_SECONDS = 2e-3


def time_candidates(modules: dict[str, nn.Module], *inputs, rounds: int = 5) -> dict[str, float]:
    """Median microseconds per call of each module on the same inputs, for choosing between them: the
    candidates run in alternating blocks of ~2 ms, `rounds` rounds (so a burst of load from another
    process hits all of them), no settling pause (the candidates share one thread pool)."""
    if rounds < 1:
        raise ValueError(f"edgeopt timing: rounds must be >= 1, got {rounds}")
    calls = {name: partial(module, *inputs) for name, module in modules.items()}
    samples = alternating_blocks(calls, blocks=rounds, seconds_per_block=BLOCK_SECONDS, settle_seconds=0)
    return {name: s.median * 1e6 for name, s in samples.items()}


def time_us(module: nn.Module, *inputs, repeats: int = 7) -> float:
    """Median microseconds per call of module(*inputs) over `repeats` blocks of ~2 ms (each block's first
    call untimed: packing, allocation and lazy initialisation stay outside)."""
    if repeats < 1:
        raise ValueError(f"edgeopt timing: repeats must be >= 1, got {repeats}")
    return time_candidates({"module": module}, *inputs, rounds=repeats)["module"]


def time_model_ms(model: nn.Module, x: torch.Tensor, repeats: int = 7) -> float:
    """Median milliseconds per forward of `model` on `x` (eval mode; the mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        return time_us(model, x, repeats=repeats) / 1e3
    finally:
        model.train(was_training)

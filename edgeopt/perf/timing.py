"""Timing on a shared, noisy machine: warm-up, alternating blocks, medians and p95, the load around a run.

The rules (../shared/docs/MEASURING.md): compare contenders in one run, interleaved; quote medians and
ratios; a thread pool spins after its last call and slows whoever runs next, so each contender runs a
*block* of calls whose first call is not timed, and the blocks rotate so no contender always follows the
same one.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # not available on this platform
        return (math.nan, math.nan, math.nan)


def format_load(load: tuple[float, float, float] | None = None) -> str:
    return "/".join(f"{v:.2f}" for v in (load or load_average()))


@dataclass
class LoadRecord:
    """The 1/5/15-minute load average before and after a measurement."""

    before: tuple[float, float, float] = field(default_factory=load_average)
    after: tuple[float, float, float] | None = None

    def stop(self) -> "LoadRecord":
        self.after = load_average()
        return self

    def __str__(self) -> str:
        return f"load {format_load(self.before)} before, {format_load(self.after) if self.after else '?'} after"

    def to_dict(self) -> dict:
        return {"before": list(self.before), "after": list(self.after) if self.after else None}


@dataclass
class Samples:
    """Per-call times of one contender, in seconds."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def p95(self) -> float:
        return quantile(self.values, 0.95)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    def to_dict(self) -> dict:
        return {"n": self.n, "median_ms": self.median * 1e3, "p95_ms": self.p95 * 1e3, "mean_ms": self.mean * 1e3}


def quantile(values, q: float) -> float:
    """Linear-interpolated quantile (numpy's default), nan for no values."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def call_seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """Wall time of `calls` back-to-back calls (no_grad)."""
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t0


def calls_for(fn: Callable[[], object], seconds: float, most: int = 10_000) -> int:
    """How many calls take about `seconds` (after one warm-up call), at least 1."""
    call_seconds(fn)
    one = max(call_seconds(fn), 1e-7)
    return max(1, min(most, int(seconds / one)))


def alternating_blocks(contenders: Mapping[str, Callable[[], object]], *, blocks: int = 5,
                       seconds_per_block: float = 0.2, calls_per_block: Mapping[str, int] | None = None,
                       between: Callable[[str], None] | None = None,
                       after: Mapping[str, Callable[[object], None]] | None = None,
                       settle_seconds: float = 0.02,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Samples]:
    """Times every contender in `blocks` rounds; in each round each contender runs one block of calls, the
    first of which warms it up and is not timed. The order rotates every round (A B C, B C A, ...).

    calls_per_block: timed calls per block per contender (default: as many as fit in `seconds_per_block`,
    from a trial call). between(name): called before each block (e.g. to switch thread settings).
    after[name](result): called with each timed call's return value, outside the timed interval (to keep
    per-layer times or read a runtime's profiling counters). settle_seconds: a pause before each block, so
    the threads the previous contender left spinning (OpenMP, ONNX Runtime's pool) go to sleep first and
    do not take the cores from this one. Returns name -> Samples of the per-call times."""
    names = list(contenders)
    if not names:
        return {}
    if calls_per_block is None:
        # at least 2: a block's first call is never timed, and one timed call per block is too few for a p95
        calls_per_block = {n: max(2, calls_for(contenders[n], seconds_per_block, most=2000)) for n in names}
    samples = {n: Samples() for n in names}
    done, total = 0, blocks * len(names)
    with torch.no_grad():
        for b in range(blocks):
            order = names[b % len(names):] + names[:b % len(names)]
            for name in order:
                fn = contenders[name]
                if between is not None:
                    between(name)
                if settle_seconds:
                    time.sleep(settle_seconds)
                fn()  # untimed: wakes this contender's threads, lets the previous one's spin down
                keep = (after or {}).get(name)
                for _ in range(calls_per_block[name]):
                    t0 = time.perf_counter()
                    result = fn()
                    samples[name].add(time.perf_counter() - t0)
                    if keep is not None:
                        keep(result)
                done += 1
                if progress is not None:
                    progress(done, total)
    return samples


def ratio(reference: float, other: float) -> float:
    """How many times faster `other` is than `reference` (reference time / other time)."""
    return reference / other if other and other > 0 and math.isfinite(other) else math.nan

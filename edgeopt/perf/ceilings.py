"""The machine's ceilings, measured in the same run as the layers they judge.

Three chains from the native core (csrc/ops/ceilings.cc): the int8 ``vpmaddubsw`` chain our int8 kernels are
built from (MACs/s), the fp32 FMA chain (reported here as MACs/s: one FMA is one multiply-accumulate), and
the read bandwidth from a buffer far larger than the caches (bytes/s). Each is the best of a few short
runs on `threads` threads of edgeopt's pool: noise from other processes only ever lowers a ceiling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Ceilings:
    int8_gmacs: float      # GMAC/s, u8 x s8 vpmaddubsw chain
    fp32_gmacs: float      # GMAC/s, fp32 FMA chain (GFLOP/s / 2)
    read_gbs: float        # GB/s, streaming read from DRAM
    threads: int

    def compute_gmacs(self, int8: bool) -> float:
        return self.int8_gmacs if int8 else self.fp32_gmacs

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"ceilings ({self.threads} thread{'s' if self.threads != 1 else ''}, measured in this run): "
                f"int8 chain {self.int8_gmacs:.0f} GMAC/s, fp32 FMA {self.fp32_gmacs:.0f} GMAC/s, "
                f"read {self.read_gbs:.1f} GB/s")


class CeilingsUnavailable(RuntimeError):
    """The ceiling chains need AVX2 (the reference path has none to measure)."""


def measure_ceilings(threads: int, seconds: float = 0.1, repeats: int = 3) -> Ceilings:
    """Runs each chain `repeats` times for about `seconds` and keeps the best throughput."""
    from edgeopt._native import _C

    if not _C.cpu_info()["avx2"]:
        raise CeilingsUnavailable("this CPU has no AVX2: the ceiling chains cannot run")

    def rate(kind: str) -> float:
        values = []
        for _ in range(repeats):
            units, t = _C.measure_ceiling(kind, seconds, threads)
            values.append(units / t)
        return max(values)

    return Ceilings(int8_gmacs=rate("s8_madd") / 1e9, fp32_gmacs=rate("f32_fma") / 2e9, read_gbs=rate("read") / 1e9,
                    threads=threads)

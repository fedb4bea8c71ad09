"""The pyperf side of the benchmarks: one Runner per program, one JSON per implementation, compared with
`pyperf compare_to --table`; workers record the AVX2 path they ran on.

pyperf's worker processes get a scrubbed environment: `run_contenders` passes `--inherit-environ` with every
variable the AVX2 path needs (isa.INHERIT), so the workers run where the parent runs.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgeopt.perf import isa
from edgeopt.files import atomic_write


def read_layer_shapes(path: Path) -> list[tuple[str, int, int]]:
    """(name, K, N) rows of a shapes file (bench/kernels/shapes/*.txt; '#' starts a comment)."""
    shapes = []
    for line in Path(path).read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            shapes.append((fields[0], int(fields[1]), int(fields[2])))
    return shapes


def record_metadata(runner, impl: str) -> None:
    """Puts the AVX2-path facts, the implementation and edgeopt's thread count into the pyperf results."""
    from edgeopt.threads import get_num_threads

    meta = isa.setup()
    meta.update(impl=impl, edgeopt_threads=str(get_num_threads()))
    for key, value in meta.items():
        runner.metadata[key] = value


def time_forward(loops: int, module, x) -> float:
    """pyperf time function: seconds for `loops` inference calls."""
    import torch

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
    atomic_write(out / "summary.md", summary + "\n")
    print(summary)


def run_contenders(script: Path, impls: list[str], out: Path, env: dict, extra: list[str]) -> None:
    """Runs `script --impl X` under pyperf for each implementation, in its own processes, one JSON each."""
    for i, impl in enumerate(impls, 1):
        print(f"[{i}/{len(impls)}] {impl}", flush=True)
        path = out / f"{impl}.json"
        path.unlink(missing_ok=True)  # pyperf refuses to overwrite; a rerun replaces
        subprocess.run([sys.executable, str(script), "--impl", impl, "-o", str(path), "--inherit-environ",
                        ",".join(isa.INHERIT), "--quiet", *extra], check=True, env=env)


def compare_table(out: Path, impls: list[str]) -> str:
    """`pyperf compare_to --table` over the implementations' JSON files, first one as the reference."""
    result = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", *(str(out / f"{i}.json") for i in impls),
                             "--table"], capture_output=True, text=True)
    return result.stdout


def ceilings_dict(threads: int) -> dict:
    """The three ceilings as a plain dict (GMAC/s, GB/s), for the pyperf drivers' result files."""
    from edgeopt.perf.ceilings import measure_ceilings

    c = measure_ceilings(threads, seconds=0.2)
    return {"fp32_gmacs": c.fp32_gmacs, "int8_gmacs": c.int8_gmacs, "read_gbs": c.read_gbs}

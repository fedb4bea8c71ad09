"""Thread-pool behaviour: quiet vs one core busy, and torch + edgeopt layers mixed in one model.

    python bench/threads/run_threads.py

Runs bench_model.py for each implementation twice -- on a quiet machine, then with an unrelated process
spinning on one core (started before, stopped after) -- and prints loaded/quiet latency ratios (target for
edgeopt: <= 1.5x) and the mixed model against the sum of its halves (no interference: ~1.0x).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402
from edgeopt.perf.busy import BusyCore  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import median_seconds, write_summary  # noqa: E402

from bench_model import IMPLS  # noqa: E402



def run_all(out: Path, tag: str, env: dict, impls: list[str]) -> dict[str, dict[str, float]]:
    result = {}
    for impl in impls:
        path = out / f"{tag}-{impl}.json"
        print(f"  {tag}: {impl}", flush=True)
        path.unlink(missing_ok=True)  # pyperf refuses to overwrite; a rerun replaces
        subprocess.run([sys.executable, str(HERE / "bench_model.py"), "--impl", impl, "-o", str(path), "--quiet",
                        "--inherit-environ", ",".join(isa.INHERIT)], check=True, env=env)
        result[impl] = median_seconds(path)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or HERE.parent / "results" / time.strftime("threads-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **isa.ENV_SWITCHES)
    impls = args.impls.split(",")
    print(f"results -> {out}\nquiet machine", flush=True)
    quiet = run_all(out, "quiet", env, impls)
    print("one core busy (an unrelated process spinning)", flush=True)
    load = BusyCore()
    load.set(True)
    try:
        loaded = run_all(out, "loaded", env, impls)
    finally:
        load.set(False)

    lines = [f"# Threads ({args.threads} threads per contender)", "", "## Latency with one core busy (median ms)", "",
             "| model | " + " | ".join(f"{i} quiet | {i} loaded | {i} ratio" for i in impls) + " |",
             "|---" * (1 + 3 * len(impls)) + "|"]
    for name in quiet[impls[0]]:
        if name.startswith("mixed"):
            continue
        cells = []
        for impl in impls:
            q, l = quiet[impl][name], loaded[impl][name]
            cells.append(f"{1e3 * q:.3f} | {1e3 * l:.3f} | {l / q:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "edgeopt" in impls:
        q = quiet["edgeopt"]
        both = q["mixed torch+edgeopt"]
        parts = q["mixed: torch layers alone"] + q["mixed: edgeopt layers alone"]
        lines += ["", "## torch and edgeopt layers alternating (quiet, 64 x 2048, 3 + 3 layers)", "",
                  f"- mixed model {1e3 * both:.3f} ms; torch half alone {1e3 * q['mixed: torch layers alone']:.3f} ms "
                  f"+ edgeopt half alone {1e3 * q['mixed: edgeopt layers alone']:.3f} ms = {1e3 * parts:.3f} ms; "
                  f"ratio {both / parts:.2f}x (1.00x = no interference)"]
    write_summary(out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

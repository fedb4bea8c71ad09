"""Runs the Linear benchmark for every implementation, the machine ceilings, and the comparison.

    python bench/kernels/run_linear.py                       # full sweep (several minutes)
    python bench/kernels/run_linear.py --m 1,256 --only square2048,mlp.fc2 --fast

Writes one pyperf JSON per implementation plus summary.md into bench/results/linear-<time>/, prints
`pyperf compare_to --table` and a summary in GMAC/s with each contender's fraction of the measured
ceilings and edgeopt's ratios against the issue's targets.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import ceilings_dict as measure_ceilings, compare_table, median_seconds, run_contenders, write_summary  # noqa: E402

from bench_linear import DEFAULT_M, IMPLS, bench_name, read_shapes  # noqa: E402


TARGETS = (
    # (description, predicate on (m, k, n), contender, minimum ratio edgeopt/contender in speed)
    ("compute-bound (M>=256, K,N>=1024) vs nn.Linear fp32", lambda m, k, n: m >= 256 and k >= 1024 and n >= 1024,
     "eager", 1.6),
    ("compute-bound (M>=256, K,N>=1024) vs PyTorch int8", lambda m, k, n: m >= 256 and k >= 1024 and n >= 1024,
     "torch_int8", 1.0),
    ("M=1, K=N=4096 vs nn.Linear fp32", lambda m, k, n: m == 1 and k == 4096 and n == 4096, "eager", 3.0),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", default=DEFAULT_M)
    parser.add_argument("--only", default="", help="comma-separated layer names from shapes/linear_shapes.txt")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--fast", action="store_true", help="pass --fast to pyperf (fewer values)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    out = args.out or HERE.parent / "results" / time.strftime("linear-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **isa.ENV_SWITCHES)
    os.environ.update(env)
    impls = args.impls.split(",")
    print(f"results -> {out}", flush=True)
    ceilings = {"before": measure_ceilings(args.threads)}
    print(f"ceilings ({args.threads} threads): {ceilings['before']}", flush=True)
    extra = ["--m", args.m] + (["--only", args.only] if args.only else []) + (["--fast"] if args.fast else [])
    run_contenders(HERE / "bench_linear.py", impls, out, env, extra)
    ceilings["after"] = measure_ceilings(args.threads)
    (out / "ceilings.json").write_text(json.dumps(ceilings, indent=2))

    print(compare_table(out, impls))

    ceil = {k: max(ceilings["before"][k], ceilings["after"][k]) for k in ceilings["before"]}
    times = {impl: median_seconds(out / f"{impl}.json") for impl in impls}
    lines = [f"# Linear benchmark ({args.threads} threads)", "",
             f"Ceilings (best of before/after): fp32 {ceil['fp32_gmacs']:.0f} GMAC/s, int8 {ceil['int8_gmacs']:.0f} "
             f"GMAC/s, read {ceil['read_gbs']:.1f} GB/s", "",
             "| layer | M | K | N | " + " | ".join(f"{i} GMAC/s" for i in impls) +
             " | edgeopt % int8 ceiling | edgeopt % bandwidth | edgeopt vs eager | edgeopt vs torch_int8 |",
             "|" + "---|" * (4 + len(impls) + 4)]
    verdicts = {t[0]: [] for t in TARGETS}
    only = set(filter(None, args.only.split(",")))
    for layer, k, n in read_shapes():
        if only and layer not in only:
            continue
        for m in (int(v) for v in args.m.split(",")):
            name = bench_name(layer, m, k, n)
            t = {i: times[i].get(name) for i in impls}
            gmacs = {i: (m * k * n / t[i] / 1e9 if t[i] else float("nan")) for i in impls}
            row = f"| {layer} | {m} | {k} | {n} | " + " | ".join(f"{gmacs[i]:.1f}" for i in impls)
            if "edgeopt" in impls and t.get("edgeopt"):
                eo = t["edgeopt"]
                frac_int8 = 100 * gmacs["edgeopt"] / ceil["int8_gmacs"]
                frac_bw = 100 * (k * n / eo / 1e9) / ceil["read_gbs"]  # weight bytes streamed per call
                vs = {c: (t[c] / eo if t.get(c) else float("nan")) for c in ("eager", "torch_int8")}
                row += f" | {frac_int8:.0f}% | {frac_bw:.0f}% | {vs['eager']:.2f}x | {vs['torch_int8']:.2f}x |"
                for desc, pred, contender, goal in TARGETS:
                    if pred(m, k, n) and t.get(contender):
                        verdicts[desc].append((name, t[contender] / eo, goal))
            lines.append(row)
    lines += ["", "## Targets", ""]
    for desc, results in verdicts.items():
        for name, ratio, goal in results:
            lines.append(f"- {desc}: {name}: {ratio:.2f}x (target >= {goal}x) {'MET' if ratio >= goal else 'MISSED'}")
        if not results:
            lines.append(f"- {desc}: not measured in this run")
    write_summary(out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

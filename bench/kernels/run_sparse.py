"""Runs the block-sparse benchmark for every implementation and summarises it against the issue-5 targets.

    python bench/kernels/run_sparse.py                          # every shape, sparsity 50-95% (tens of minutes)
    python bench/kernels/run_sparse.py --only r18.l3.3x3,bert.mlp.fc1 --sparsity 0.8,0.9 --fast

Writes one pyperf JSON per implementation plus summary.md into bench/results/sparse-<time>/, with the
load average before and after (the machine is shared), the measured ceilings, and per shape and
sparsity: each contender's time and the sparse kernels' speedups over edgeopt's own dense kernel of the
same dtype and over PyTorch (nn.Linear, CSR, BSR). Targets: >= 3x own dense at 80%, >= 5x at 90%,
break-even (sparse faster than own dense) at or below 50%.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from bench_sparse import DEFAULT_SPARSITY, DENSE, IMPLS, bench_name, read_shapes  # noqa: E402
from edgeopt.perf.pyperf_runs import ceilings_dict as measure_ceilings, compare_table, median_seconds, run_contenders, write_summary  # noqa: E402


def load() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsity", default=DEFAULT_SPARSITY)
    p.add_argument("--only", default="")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--summarize-only", action="store_true",
                   help="rebuild summary.md from the JSON files already in --out (implementations missing are shown as -)")
    a = p.parse_args()
    out = a.out or HERE.parent / "results" / time.strftime("sparse-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), **isa.ENV_SWITCHES)
    os.environ.update(env)
    impls = a.impls.split(",")
    loads = {"before": load()}
    print(f"results -> {out}; load {loads['before']}", flush=True)
    ceil = measure_ceilings(a.threads)
    if not a.summarize_only:
        extra = ["--sparsity", a.sparsity, "--threads", str(a.threads)] + (["--only", a.only] if a.only else [])
        extra += ["--fast"] if a.fast else []
        run_contenders(HERE / "bench_sparse.py", impls, out, env, extra)
    loads["after"] = load()
    impls = [i for i in impls if (out / f"{i}.json").exists()]
    times = {i: median_seconds(out / f"{i}.json") for i in impls}
    only = set(filter(None, a.only.split(",")))
    sparsities = [float(s) for s in a.sparsity.split(",")]

    def t(impl, layer, m, k, n, s):
        return times.get(impl, {}).get(bench_name(layer, m, k, n, 0.0 if impl in DENSE else s))

    def us(v):
        return f"{v * 1e6:.0f}" if v else "-"

    def ratio(num, den):
        return f"{num / den:.2f}x" if num and den else "-"

    lines = [f"# Block-sparse benchmark ({a.threads} threads, block 16x4)", "",
             f"Load average (1/5/15 min){' at summary time' if a.summarize_only else ''}: before {loads['before']}, "
             f"after {loads['after']}. Ceilings: fp32 "
             f"{ceil['fp32_gmacs']:.0f} GMAC/s, int8 {ceil['int8_gmacs']:.0f} GMAC/s, read {ceil['read_gbs']:.1f} GB/s.",
             "int8 = u8 in / u8 out, static parameters (no activation quantization in either int8 contender).", "",
             "| layer | M | K | N | sparsity | dense fp32 us | sparse fp32 us | fp32 speedup | dense int8 us | "
             "sparse int8 us | int8 speedup | nn.Linear us | CSR us | BSR us | sparse fp32 vs nn.Linear | "
             "sparse fp32 vs CSR | sparse fp32 vs BSR |", "|" + "---|" * 17]
    verdict = []
    for layer, m, k, n in read_shapes():
        if only and layer not in only:
            continue
        for s in sparsities:
            v = {i: t(i, layer, m, k, n, s) for i in IMPLS}
            lines.append(
                f"| {layer} | {m} | {k} | {n} | {s:.0%} | {us(v['dense_fp32'])} | {us(v['sparse_fp32'])} | "
                f"{ratio(v['dense_fp32'], v['sparse_fp32'])} | {us(v['dense_int8'])} | {us(v['sparse_int8'])} | "
                f"{ratio(v['dense_int8'], v['sparse_int8'])} | {us(v['torch_linear'])} | {us(v['torch_csr'])} | "
                f"{us(v['torch_bsr'])} | {ratio(v['torch_linear'], v['sparse_fp32'])} | "
                f"{ratio(v['torch_csr'], v['sparse_fp32'])} | {ratio(v['torch_bsr'], v['sparse_fp32'])} |")
            goal = {0.5: 1.0, 0.8: 3.0, 0.9: 5.0}.get(round(s, 2))
            for dt in ("fp32", "int8"):
                d, sp = v[f"dense_{dt}"], v[f"sparse_{dt}"]
                if goal and d and sp:
                    verdict.append((f"{layer} {dt} at {s:.0%}", d / sp, goal))
    lines += ["", "## Targets (speedup over edgeopt's own dense kernel, same dtype)", ""]
    for goal in (1.0, 3.0, 5.0):
        rows = [r for r in verdict if r[2] == goal]
        if not rows:
            continue
        met = sum(r[1] >= goal for r in rows)
        label = {1.0: "break-even at 50%", 3.0: ">= 3x at 80%", 5.0: ">= 5x at 90%"}[goal]
        lines.append(f"- {label}: MET on {met} of {len(rows)} (layer, dtype) cases")
        for name, r, g in rows:
            lines.append(f"  - {name}: {r:.2f}x {'MET' if r >= g else 'MISSED'}")
    lines += ["", "```", compare_table(out, impls), "```"]
    write_summary(out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

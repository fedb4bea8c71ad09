"""Runs the low-rank / fp16-weight benchmark for every implementation and checks the issue's targets.

    python bench/kernels/run_low_rank.py --fast                        # M=1, ranks 1/2, 1/4, 1/8, every shape
    python bench/kernels/run_low_rank.py --m 1,64 --only bert.mlp.fc1 --impls dense_eager,lowrank_fused

Writes one pyperf JSON per implementation, ceilings.json and summary.md into
bench/results/low_rank-<time>/, prints `pyperf compare_to --table` and the summary: per layer and rank,
the ideal speedup (the MAC ratio), the fused layer's speedup over dense (edgeopt fp32 kernels and
nn.Linear) and its fraction of the ideal, fused vs two separate GEMMs, and fp16 weights vs nn.Linear.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import ceilings_dict as measure_ceilings, compare_table, median_seconds, run_contenders, write_summary  # noqa: E402

from bench_low_rank import DEFAULT_M, DEFAULT_RANKS, IMPLS, bench_name, rank_of, read_shapes  # noqa: E402


def ratio(a, b):
    return a / b if a and b else float("nan")


def verdict(value: float, goal: float) -> str:
    if value != value:
        return "not measured"
    return "MET" if value >= goal else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", default=DEFAULT_M)
    parser.add_argument("--ranks", default=DEFAULT_RANKS)
    parser.add_argument("--only", default="", help="comma-separated layer names from shapes/low_rank_shapes.txt")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--fast", action="store_true", help="pass --fast to pyperf (fewer values)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    out = args.out or HERE.parent / "results" / time.strftime("low_rank-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **isa.ENV_SWITCHES)
    os.environ.update(env)
    impls = args.impls.split(",")
    print(f"results -> {out}", flush=True)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    ceilings = {"before": measure_ceilings(args.threads)}
    print(f"ceilings ({args.threads} threads): {ceilings['before']}; load {load_before}", flush=True)
    extra = ["--m", args.m, "--ranks", args.ranks] + (["--only", args.only] if args.only else []) + (["--fast"] if args.fast else [])
    run_contenders(HERE / "bench_low_rank.py", impls, out, env, extra)
    ceilings["after"] = measure_ceilings(args.threads)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    ceilings["loadavg"] = {"before": load_before, "after": load_after}
    (out / "ceilings.json").write_text(json.dumps(ceilings, indent=2))

    print(compare_table(out, impls))

    ceil = {k: max(ceilings["before"][k], ceilings["after"][k]) for k in ceilings["before"]}
    t = {impl: median_seconds(out / f"{impl}.json") for impl in impls}
    get = lambda impl, name: t.get(impl, {}).get(name)  # noqa: E731
    lines = [f"# Low-rank and fp16-weight benchmark ({args.threads} threads, AVX2 path)", "",
             f"Ceilings (best of before/after): fp32 {ceil['fp32_gmacs']:.0f} GMAC/s, read {ceil['read_gbs']:.1f} GB/s. "
             f"Load average before {' '.join(load_before)}, after {' '.join(load_after)} (2-core machine).", "",
             "## Dense layers", "",
             "| layer | M | K | N | nn.Linear us | edgeopt fp32 us | edgeopt fp16 us | fp16 vs nn.Linear | fp16 % read ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    targets: list[str] = []
    only = set(filter(None, args.only.split(",")))
    shapes = [s for s in read_shapes() if not only or s[0] in only]
    ms = [int(v) for v in args.m.split(",")]
    ds = [int(d) for d in args.ranks.split(",")]
    us = lambda s: f"{s * 1e6:.1f}" if s else "-"  # noqa: E731
    for layer, k, n in shapes:
        for m in ms:
            name = bench_name(layer, m, k, n, None)
            eager, f32, f16 = (get(i, name) for i in ("dense_eager", "dense_f32", "dense_f16"))
            bw = 100 * (k * n * 2 / f16 / 1e9) / ceil["read_gbs"] if f16 else float("nan")
            lines.append(f"| {layer} | {m} | {k} | {n} | {us(eager)} | {us(f32)} | {us(f16)} | "
                         f"{ratio(eager, f16):.2f}x | {bw:.0f}% |")
            if m == 1 and k == 4096 and n == 4096:
                r = ratio(eager, f16)
                targets.append(f"- fp16-weight GEMV M=1 K=N=4096 vs nn.Linear fp32: {r:.2f}x (target >= 1.8x) "
                               f"{verdict(r, 1.8)}")
    lines += ["", "## Low rank (fp32 factors unless noted)", "",
              "| layer | M | rank | ideal (MAC ratio) | fused us | vs edgeopt dense fp32 | % ideal | vs nn.Linear | "
              "% ideal | fused vs 2 edgeopt GEMMs | fused vs 2 torch GEMMs | fp16 factors us |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for layer, k, n in shapes:
        for m in ms:
            dense_name = bench_name(layer, m, k, n, None)
            for d in ds:
                r = rank_of(k, n, d)
                name = bench_name(layer, m, k, n, d)
                ideal = k * n / (r * (k + n))
                fused = get("lowrank_fused", name)
                s_f32 = ratio(get("dense_f32", dense_name), fused)
                s_eager = ratio(get("dense_eager", dense_name), fused)
                vs_unfused = ratio(get("lowrank_unfused", name), fused)
                vs_torch = ratio(get("lowrank_torch", name), fused)
                lines.append(f"| {layer} | {m} | {r} (1/{d}) | {ideal:.2f}x | {us(fused)} | {s_f32:.2f}x | "
                             f"{100 * s_f32 / ideal:.0f}% | {s_eager:.2f}x | {100 * s_eager / ideal:.0f}% | "
                             f"{vs_unfused:.2f}x | {vs_torch:.2f}x | {us(get('lowrank_fused_f16', name))} |")
                if d >= 4:
                    targets.append(f"- rank 1/{d} {name}: fused vs edgeopt dense fp32 {s_f32 / ideal:.0%} of the "
                                   f"ideal {ideal:.2f}x (target >= 80%) {verdict(s_f32 / ideal, 0.8)}; vs nn.Linear "
                                   f"{s_eager / ideal:.0%} {verdict(s_eager / ideal, 0.8)}")
                if m == 1:
                    targets.append(f"- fused vs two edgeopt GEMMs, {name}: {vs_unfused:.2f}x (target >= 1.2x) "
                                   f"{verdict(vs_unfused, 1.2)}; vs two torch GEMMs {vs_torch:.2f}x "
                                   f"{verdict(vs_torch, 1.2)}")
    lines += ["", "## Targets", "", *targets]
    write_summary(out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

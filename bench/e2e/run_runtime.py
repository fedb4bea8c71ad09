"""Native plans and the thread pool on whole int8 models: 1 -> 2 thread scaling, one core busy, time
outside the kernels, and the module-by-module path against the plan.

    python bench/e2e/run_runtime.py                                    # resnet18, mobilenet_v2, vgg_audio, resnet50
    python bench/e2e/run_runtime.py --models resnet18 --reps 20 --blocks 4 --no-busy

Builds each model as bench_e2e.py does (the same edgeopt.quantize result; cached in
bench/results/runtime-cache/), lowers it with edgeopt.runtime.compile, then times, in this one process,
alternating blocks of calls (the first calls of each block untimed): the module-by-module GraphModule
("modules") and the compiled one ("plan"), at 1 and 2 threads. With --busy (default) it then starts an
unrelated process spinning on one core and times the 2-thread figures again. Per contender it also reads the
pool's counters (worker wake-ups, caller sleeps, caller wait, preemptions per inference) and, for the plan,
the per-node timers: time outside the nodes = forward wall time - sum of node times.

Results: bench/results/runtime-<tag>/results.json and summary.md (medians, ms; load average before/after;
the AVX2 path each run was on).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
import edgeopt  # noqa: E402
from bench_e2e import MODELS, build, inputs  # noqa: E402,F401  (this directory: the e2e bench's models)
from edgeopt.perf.timing import format_load as load  # noqa: E402

import torch  # noqa: E402

import edgeopt.runtime as rt  # noqa: E402
from edgeopt._native import _C  # noqa: E402

CACHE = HERE.parent / "results" / "runtime-cache"


def time_block(f, x, reps: int, warm: int = 2) -> list[float]:
    with torch.no_grad():
        for _ in range(warm):
            f(x)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f(x)
            ts.append(time.perf_counter() - t0)
    return ts


def measure(contenders: dict, x, threads: int, reps: int, blocks: int) -> dict:
    """Alternating blocks per contender at `threads`; medians (ms) and pool counters per inference."""
    torch.set_num_threads(threads)
    edgeopt.set_num_threads(threads)
    times = {k: [] for k in contenders}
    counters = {k: {} for k in contenders}
    for _ in range(blocks):
        for name, f in contenders.items():
            before = _C.pool_stats()
            times[name] += time_block(f, x, reps)
            after = _C.pool_stats()
            for key in before:
                counters[name][key] = counters[name].get(key, 0) + after[key] - before[key]
    out = {}
    for name, ts in times.items():
        n = len(ts)
        c = counters[name]
        out[name] = {
            "median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
            "p90_ms": sorted(ts)[int(0.9 * (n - 1))] * 1e3, "n": n,
            "per_inference": {"worker_wakeups": c["woke_sleepers"] / n, "caller_sleeps": c["caller_sleeps"] / n,
                              "caller_wait_us": c["caller_wait_ns"] / n / 1e3,
                              "shared_calls": c["calls"] / n, "inline_calls": c["inline_calls"] / n,
                              "caller_task_share": c["caller_tasks"] / c["tasks"] if c["tasks"] else None,
                              "preemptions": c["preemptions"] / n},
        }
    return out


def overhead(compiled, x, threads: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    edgeopt.set_num_threads(threads)
    p = rt.profile(compiled, x, runs=runs, warmup=3)
    return {"forward_ms": p.forward_ms, "nodes_ms": p.nodes_ms, "native_ms": p.native_ms, "torch_ms": p.torch_ms,
            "glue_ms": p.glue_ms, "glue_fraction": p.glue_fraction, "torch_nodes": p.torch_nodes,
            "partitions": len(rt.partitions(compiled)),
            "nodes": [{"name": t.name, "op": t.op, "ms": t.ms_per_run, "macs": t.macs} for t in p.nodes]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenet_v2,vgg_audio,resnet50")
    parser.add_argument("--reps", type=int, default=15, help="timed calls per block")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per contender")
    parser.add_argument("--no-busy", dest="busy", action="store_false", help="skip the one-core-busy run")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    out = HERE.parent / "results" / f"runtime-{args.tag or time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    meta = isa.setup()
    started, load_before = time.time(), load()
    results = {"meta": meta, "models": {}}
    for name in args.models.split(","):
        print(f"{name}: building", flush=True)
        qmodel, _ = build("edgeopt", name, CACHE / f"{name}-edgeopt.pt")
        x = inputs(name)["check"][0]
        compiled = rt.compile(qmodel, x)
        contenders = {"modules": qmodel, "plan": compiled}
        r = {"quiet": {}, "overhead": {}}
        for threads in (1, 2):
            print(f"{name}: {threads} thread(s), load {load()}", flush=True)
            r["quiet"][threads] = measure(contenders, x, threads, args.reps, args.blocks)
            r["overhead"][threads] = overhead(compiled, x, threads, args.reps * 2)
        if args.busy:
            print(f"{name}: one core busy", flush=True)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                r["busy"] = {2: measure(contenders, x, 2, args.reps, args.blocks)}
            finally:
                hog.kill()
                hog.wait()
        results["models"][name] = r
    results["load"] = {"before": load_before, "after": load()}
    (out / "results.json").write_text(json.dumps(results, indent=2))

    lines = [f"# Native plans and threads ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Batch 1, in-process alternating blocks ({args.blocks} x {args.reps} calls per contender), medians in "
             f"ms. Load average {load_before} before, {results['load']['after']} after, "
             f"{(time.time() - started) / 60:.1f} min. AVX2 path: {meta.get('avx2_method', '?')}; edgeopt ISA "
             f"{meta.get('edgeopt_isa', '?')}.", "",
             "| model | modules 1T | plan 1T | modules 2T | plan 2T | scaling modules | scaling plan | "
             "plan 2T busy | busy / quiet (plan) | modules 2T busy | busy / quiet (modules) | outside any kernel 1T / 2T |",
             "|" + "---|" * 12]
    for name, r in results["models"].items():
        q1, q2 = r["quiet"][1], r["quiet"][2]
        b = r.get("busy", {}).get(2)
        cells = [f"{q1['modules']['median_ms']:.2f}", f"{q1['plan']['median_ms']:.2f}",
                 f"{q2['modules']['median_ms']:.2f}", f"{q2['plan']['median_ms']:.2f}",
                 f"{q1['modules']['median_ms'] / q2['modules']['median_ms']:.2f}x",
                 f"{q1['plan']['median_ms'] / q2['plan']['median_ms']:.2f}x"]
        if b:
            cells += [f"{b['plan']['median_ms']:.2f}", f"{b['plan']['median_ms'] / q2['plan']['median_ms']:.2f}x",
                      f"{b['modules']['median_ms']:.2f}",
                      f"{b['modules']['median_ms'] / q2['modules']['median_ms']:.2f}x"]
        else:
            cells += ["-"] * 4
        o1, o2 = r["overhead"][1], r["overhead"][2]
        cells.append(f"{100 * o1['glue_fraction']:.1f}% / {100 * o2['glue_fraction']:.1f}% "
                     f"({o2['glue_ms']:.3f} ms; torch {o2['torch_ms']:.3f} ms; {o2['partitions']} plans)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Pool counters per inference (2 threads): worker wake-ups / caller sleeps / caller wait us / "
              "preemptions / caller's share of tasks", ""]
    for name, r in results["models"].items():
        for label, runs in (("quiet", r["quiet"][2]), ("busy", r.get("busy", {}).get(2))):
            if not runs:
                continue
            for contender, m in runs.items():
                p = m["per_inference"]
                share = "-" if p["caller_task_share"] is None else f"{p['caller_task_share']:.2f}"
                lines.append(f"- {name} {label} {contender}: {p['worker_wakeups']:.1f} / {p['caller_sleeps']:.1f} / "
                             f"{p['caller_wait_us']:.0f} / {p['preemptions']:.1f} / {share} "
                             f"(p90 {m['p90_ms']:.2f} ms, min {m['min_ms']:.2f} ms)")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

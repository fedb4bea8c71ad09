"""Native plans and the thread pool on whole int8 models, against OpenVINO int8 and ONNX Runtime int8:
1 -> 2 thread scaling, one core busy, time outside the kernels, the module-by-module path against the plan.

    python bench/e2e/run_runtime.py --prepare                      # build and cache everything (under heavy)
    python bench/e2e/run_runtime.py                                # resnet18, mobilenet_v2, vgg_audio, resnet50
    python bench/e2e/run_runtime.py --models resnet18 --blocks 8 --reps 8 --no-busy --no-peers

Models, inputs and peers are bench_e2e.py's: the same edgeopt.quantize result (cached in
bench/results/runtime-cache/), lowered with edgeopt.runtime.compile (which checks bit-identity on the timed
input); the same static QDQ ONNX file for OpenVINO and ONNX Runtime (bench/results/e2e-cache/). In this one
process, edgeopt.perf.timing.alternating_blocks times the module-by-module GraphModule ("modules"), the
compiled one ("plan"), "ov_int8" and "ort_int8", each at 1 and at 2 threads, all eight interleaved (blocks
rotate; each block's first call is untimed, after a 20 ms settle). With --busy (default) an unrelated process then spins on one core while
the 2-thread figures are taken again. Per edgeopt contender it reads the pool's counters (worker wake-ups,
caller sleeps, caller wait, preemptions per inference) and, for the plan, its per-node timers: time outside
any kernel = forward wall time - plan node time - time of what stays in torch (edgeopt.runtime.profile).

Results: bench/results/runtime-<tag>/results.json and summary.md (medians, ms; load average before/after;
the AVX2 path each contender was on).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402
from edgeopt.perf.busy import BusyCore  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
import edgeopt  # noqa: E402
from bench_e2e import MODELS, build, inputs, load_model, onnx_int8  # noqa: E402,F401  (the e2e bench's models)
from edgeopt.perf import peers  # noqa: E402
from edgeopt.perf.report import markdown_table, write_json  # noqa: E402
from edgeopt.perf.timing import LoadRecord, alternating_blocks, format_load  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import edgeopt.runtime as rt  # noqa: E402
from edgeopt._native import _C  # noqa: E402
from edgeopt.nn import GlobalAvgPool2d, QuantConv2d  # noqa: E402

CACHE = HERE.parent / "results" / "runtime-cache"
EDGEOPT = ("modules", "plan")
PEERS = ("ov_int8", "ort_int8")


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    edgeopt.set_num_threads(n)


class PoolCounters:
    """The pool's counters per contender: `between(name)` (called before each block) closes the previous
    block's reading and opens one for `name`; `close()` after the last block."""

    def __init__(self):
        self.totals: dict[str, dict] = {}
        self._open: tuple[str, dict] | None = None

    def between(self, name: str) -> None:
        self.close()
        self._open = (name, _C.pool_stats())

    def close(self) -> None:
        if self._open is not None:
            name, before = self._open
            after = _C.pool_stats()
            total = self.totals.setdefault(name, {})
            for key in before:
                total[key] = total.get(key, 0) + after[key] - before[key]
        self._open = None


def measure(contenders: dict, x, reps: int, blocks: int) -> dict[str, dict]:
    """Alternating blocks of every (contender, threads) pair -- 1 and 2 threads interleaved, so that a load
    change during the run moves both sides of a scaling ratio alike. contenders: {threads: {name: fn}}.
    Returns {threads: {name: median, p95, min (ms), and for edgeopt's the pool counters per inference
    (a block's untimed first call included)}}."""
    counters = PoolCounters()
    runs = {f"{name}@{t}": (lambda f=f: f(x)) for t, group in contenders.items() for name, f in group.items()}

    def between(key: str) -> None:
        set_threads(int(key.rsplit("@", 1)[1]))
        counters.between(key)

    samples = alternating_blocks(runs, blocks=blocks, calls_per_block={k: reps for k in runs}, between=between)
    counters.close()
    out: dict[str, dict] = {}
    for key, s in samples.items():
        name, threads = key.rsplit("@", 1)
        row = out.setdefault(threads, {})[name] = dict(s.to_dict(), min_ms=min(s.values) * 1e3)
        c, calls = counters.totals[key], blocks * (reps + 1)
        if name in EDGEOPT:
            row["per_inference"] = {
                "worker_wakeups": c["woke_sleepers"] / calls, "caller_sleeps": c["caller_sleeps"] / calls,
                "caller_wait_us": c["caller_wait_ns"] / calls / 1e3, "shared_calls": c["calls"] / calls,
                "inline_calls": c["inline_calls"] / calls,
                "caller_task_share": c["caller_tasks"] / c["tasks"] if c["tasks"] else None,
                "preemptions": c["preemptions"] / calls}
    return out


def overhead(compiled, x, threads: int, runs: int) -> dict:
    set_threads(threads)
    p = rt.profile(compiled, x, runs=runs, warmup=3)
    return {"forward_ms": p.forward_ms, "nodes_ms": p.nodes_ms, "native_ms": p.native_ms, "torch_ms": p.torch_ms,
            "glue_ms": p.glue_ms, "glue_fraction": p.glue_fraction, "torch_nodes": p.torch_nodes,
            "partitions": len(rt.partitions(compiled)),
            "nodes": [{"name": t.name, "op": t.op, "ms": t.ms_per_run, "macs": t.macs} for t in p.nodes]}


def with_u8_global_pool(qmodel, x):
    """A preview of the swap the quantize pass has yet to make: the float global average pool (module or
    function) replaced by edgeopt's GlobalAvgPool2d on its producing conv's uint8 output (quantized with the
    range that conv's float output has on x), so that the whole model is one plan. None where the pool's input
    is not a QuantConv2d's output used by the pool alone. Its numerics differ from qmodel's (one more
    rounding); it is timed only for the time outside the kernels with one plan."""
    gm = copy.deepcopy(qmodel)
    pool = next((n for n in gm.graph.nodes
                 if (n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.AdaptiveAvgPool2d))
                 or (n.op == "call_function" and n.target is F.adaptive_avg_pool2d)), None)
    if pool is None or pool.args[0].op != "call_module" or len(pool.args[0].users) != 1:
        return None
    producer = gm.get_submodule(pool.args[0].target)
    if not isinstance(producer, QuantConv2d):
        return None
    seen = {}
    hook = producer.register_forward_hook(lambda m, i, out: seen.update(lo=float(out.min()), hi=float(out.max())))
    with torch.no_grad():
        gm(x)
    hook.remove()
    lo, hi = min(seen["lo"], 0.0), max(seen["hi"], 1e-6)
    scale = (hi - lo) / 255
    zero_point = min(255, max(0, round(-lo / scale)))
    producer.set_output_quant(scale, zero_point)
    gap = GlobalAvgPool2d()
    gap.set_input_quant(scale, zero_point)
    gm.add_module("u8_global_pool", gap)
    with gm.graph.inserting_after(pool):
        node = gm.graph.call_module("u8_global_pool", (pool.args[0],))
    pool.replace_all_uses_with(node)
    gm.graph.erase_node(pool)
    gm.recompile()
    return gm


def edgeopt_model(name: str):
    return build("edgeopt", name, CACHE / f"{name}-edgeopt.pt")[0]


def peer_runners(name: str, threads: int) -> dict:
    model, _ = load_model(name)
    path = onnx_int8(name, model, inputs(name)["calib"])
    return {"ov_int8": peers.openvino_model(path, threads), "ort_int8": peers.ort_session(path, threads)}


def prepare(models: list[str]) -> None:
    """Everything the timing run would otherwise build: the quantized model, the QDQ ONNX file, the plans."""
    for name in models:
        t0 = time.time()
        qmodel = edgeopt_model(name)
        rt.compile(qmodel, inputs(name)["check"][0])
        model, _ = load_model(name)
        onnx_int8(name, model, inputs(name)["calib"])
        print(f"{name}: prepared ({time.time() - t0:.0f} s)", flush=True)


def cell(r: dict | None, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(r[key]["median_ms"]) if r and key in r else "-"


def ratio(num: dict | None, den: dict | None, a: str, b: str) -> str:
    if not (num and den and a in num and b in den):
        return "-"
    return f"{num[a]['median_ms'] / den[b]['median_ms']:.2f}x"


def summary(results: dict, args, load: LoadRecord, minutes: float, meta: dict) -> str:
    lines = [f"# Native plans, threads and peers ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Batch 1, one process, alternating blocks ({args.blocks} x {args.reps} timed calls per contender), "
             f"medians in ms. {load}; {minutes:.1f} min. AVX2 path: {meta.get('avx2_method', '?')} (CPUID here: "
             f"{meta.get('cpuid_in_process', '?')}); edgeopt ISA {meta.get('edgeopt_isa', '?')}.", ""]
    rows = []
    for name, r in results["models"].items():
        q1, q2, b = r["quiet"]["1"], r["quiet"]["2"], r.get("busy", {}).get("2")
        rows.append([name, cell(q1, "modules"), cell(q1, "plan"), cell(q1, "ov_int8"), cell(q1, "ort_int8"),
                     cell(q2, "modules"), cell(q2, "plan"), cell(q2, "ov_int8"), cell(q2, "ort_int8"),
                     ratio(q1, q2, "plan", "plan"), ratio(q1, q2, "ov_int8", "ov_int8"),
                     ratio(q1, q1, "ov_int8", "plan"), ratio(q1, q1, "ort_int8", "plan"),
                     ratio(q2, q2, "ov_int8", "plan"), ratio(q2, q2, "ort_int8", "plan")])
    lines += [markdown_table(["model", "modules 1T", "plan 1T", "OV 1T", "ORT 1T", "modules 2T", "plan 2T", "OV 2T",
                              "ORT 2T", "scaling plan", "scaling OV", "OV/plan 1T", "ORT/plan 1T", "OV/plan 2T",
                              "ORT/plan 2T"], rows), ""]
    rows = []
    for name, r in results["models"].items():
        q2, b = r["quiet"]["2"], r.get("busy", {}).get("2")
        if not b:
            continue
        rows.append([name, cell(b, "plan"), ratio(b, q2, "plan", "plan"), cell(b, "modules"),
                     ratio(b, q2, "modules", "modules"), cell(b, "ov_int8"), ratio(b, q2, "ov_int8", "ov_int8"),
                     cell(b, "ort_int8"), ratio(b, q2, "ort_int8", "ort_int8")])
    if rows:
        lines += ["One core kept busy by another process, 2 threads (busy / quiet):", "",
                  markdown_table(["model", "plan", "plan busy/quiet", "modules", "modules busy/quiet", "OV",
                                  "OV busy/quiet", "ORT", "ORT busy/quiet"], rows), ""]
    rows = []
    for name, r in results["models"].items():
        o1, o2 = r["overhead"]["1"], r["overhead"]["2"]
        rows.append([name, f"{100 * o1['glue_fraction']:.1f}%", f"{100 * o2['glue_fraction']:.1f}%",
                     f"{o2['glue_ms']:.3f}", f"{o2['forward_ms']:.2f}", f"{o2['torch_ms']:.3f}",
                     ", ".join(o2["torch_nodes"]) or "-", str(o2["partitions"])])
        o = r.get("overhead_one_plan")
        if o:
            rows.append([f"{name}, u8 global pool (one plan)", f"{100 * o['1']['glue_fraction']:.1f}%",
                         f"{100 * o['2']['glue_fraction']:.1f}%", f"{o['2']['glue_ms']:.3f}", f"{o['2']['forward_ms']:.2f}",
                         f"{o['2']['torch_ms']:.3f}", ", ".join(o["2"]["torch_nodes"]) or "-", str(o["2"]["partitions"])])
    lines += ["Time outside any kernel with the plan (forward - plan nodes - torch parts; edgeopt.runtime.profile; "
              "'u8 global pool': the model with the float pool swapped for edgeopt's on uint8, as the quantize pass "
              "is to do):", "", markdown_table(["model", "1T", "2T", "2T ms", "forward 2T ms", "torch parts 2T ms",
                                                "in torch", "plans"], rows), ""]
    lines += ["Pool counters per inference (2 threads): worker wake-ups / caller sleeps / caller wait us / "
              "preemptions / caller's share of tasks", ""]
    for name, r in results["models"].items():
        for label, runs in (("quiet", r["quiet"]["2"]), ("busy", r.get("busy", {}).get("2"))):
            for contender, m in (runs or {}).items():
                p = m.get("per_inference")
                if not p:
                    continue
                share = "-" if p["caller_task_share"] is None else f"{p['caller_task_share']:.2f}"
                lines.append(f"- {name} {label} {contender}: {p['worker_wakeups']:.1f} / {p['caller_sleeps']:.1f} / "
                             f"{p['caller_wait_us']:.0f} / {p['preemptions']:.1f} / {share} "
                             f"(p95 {m['p95_ms']:.2f} ms, min {m['min_ms']:.2f} ms)")
    lines += ["", "Code paths: " + "; ".join(f"{k}: {v}" for k, v in results.get("isa", {}).items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenet_v2,vgg_audio,resnet50")
    parser.add_argument("--reps", type=int, default=8, help="timed calls per block")
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks per contender")
    parser.add_argument("--no-busy", dest="busy", action="store_false", help="skip the one-core-busy run")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="edgeopt only (no OpenVINO/ORT)")
    parser.add_argument("--prepare", action="store_true", help="build and cache, time nothing")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    models = args.models.split(",")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        prepare(models)
        return 0
    out = HERE.parent / "results" / f"runtime-{args.tag or time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    meta = isa.setup()
    started, load = time.time(), LoadRecord()
    results = {"meta": meta, "models": {}, "isa": {"edgeopt": isa.edgeopt_path()}}
    for name in models:
        print(f"{name}: loading (load {format_load()})", flush=True)
        qmodel = edgeopt_model(name)
        x = inputs(name)["check"][0]
        compiled = rt.compile(qmodel, x)  # raises unless bit-identical to qmodel on x
        runners = {t: peer_runners(name, t) for t in (1, 2)} if args.peers else {1: {}, 2: {}}
        for key, runner in runners[2].items():
            results["isa"][key] = runner.meta.get("contender_isa", "?")
        r = {"overhead": {}, "partitions": len(rt.partitions(compiled))}
        print(f"{name}: 1 and 2 threads, load {format_load()}", flush=True)
        r["quiet"] = measure({t: {"modules": qmodel, "plan": compiled, **runners[t]} for t in (1, 2)}, x,
                             args.reps, args.blocks)
        for threads in (1, 2):
            r["overhead"][str(threads)] = overhead(compiled, x, threads, args.reps * 2)
        one_plan = with_u8_global_pool(qmodel, x)
        if one_plan is not None:
            one_plan = rt.compile(one_plan, x)
            r["overhead_one_plan"] = {str(t): overhead(one_plan, x, t, args.reps * 2) for t in (1, 2)}
        if args.busy:
            print(f"{name}: one core busy, load {format_load()}", flush=True)
            hog = BusyCore()
            hog.set(True)
            try:
                time.sleep(0.5)
                r["busy"] = measure({2: {"modules": qmodel, "plan": compiled, **runners[2]}}, x, args.reps,
                                    args.blocks)
            finally:
                hog.set(False)
        results["models"][name] = r
        print(summary({"models": {name: r}}, args, load, (time.time() - started) / 60, meta), flush=True)
    load.stop()
    results["load"] = load.to_dict()
    write_json(out / "results.json", results)
    text = summary(results, args, load, (time.time() - started) / 60, meta)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs the end-to-end benchmark: every contender on every model, then the comparison.

    python bench/e2e/run_e2e.py                       # all models and contenders (16 min at load 2-4)
    python bench/e2e/run_e2e.py --fast --models vgg_audio,resnet18 --impls eager,torch_int8,ort_int8,edgeopt

For each model: makes the shared inputs and ONNX files once (bench/results/e2e-cache/), builds each
contender once in its own process to compare its outputs with eager fp32 and to see whether it can run
here (missing packages or APIs are skipped with the reason), then times every runnable contender with
bench_e2e.py under pyperf (own worker processes, one JSON per contender in bench/results/e2e-<tag>/<model>/).
Prints and writes summary.md: median latency in ms, ratios, accuracy vs fp32, the ISA each contender
reported, the load average, and each target as MET / MISSED with the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from edgeopt.perf import isa  # noqa: E402

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
from edgeopt.perf.pyperf_runs import compare_table, median_seconds, run_contenders, write_summary  # noqa: E402

from bench_e2e import IMPLS, INT8_PEERS, MODELS, REUSABLE  # noqa: E402

SCRIPT = HERE / "bench_e2e.py"
MIN_TIME = 0.1  # seconds per pyperf value (pyperf's default), used to pick --loops from the check's call time
TARGETS = (
    # (description, models, reference: "eager" or "best_int8", minimum speed ratio edgeopt / reference)
    (">= 2.5x eager fp32", ("resnet18", "vgg_audio"), "eager", 2.5),
    (">= 1.0x the best int8 peer", ("resnet18", "resnet50", "vgg_audio"), "best_int8", 1.0),
    (">= 0.8x the best int8 peer", ("mobilenet_v2",), "best_int8", 0.8),
)
LABELS = {"vgg_audio": "VGG audio CNN 1x1x64x128", "resnet18": "ResNet-18 1x3x224x224",
          "mobilenet_v2": "MobileNetV2 1x3x224x224", "resnet50": "ResNet-50 1x3x224x224"}


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def json_line(cmd: list[str], env: dict) -> tuple[dict | None, str]:
    """Runs a bench_e2e.py helper mode; (its JSON result, or None and the error output)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), *cmd], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        return None, tail
    return json.loads(lines[-1]), ""


def isa_of(impl: str, meta: dict) -> str:
    """What code path a contender reported, from its metadata (pyperf worker or check process)."""
    if "contender_isa" in meta:
        return meta["contender_isa"]
    if impl.startswith("edgeopt"):
        return f"edgeopt {meta.get('edgeopt_isa', '?')} (CPUID in the process: {meta.get('cpuid_in_process', '?')})"
    path = f"torch {meta.get('torch_cpu_capability', '?')}, {meta.get('avx2_method', '?')}"
    if impl == "torch_int8":
        path += f", FBGEMM/oneDNN capped at AVX2 ({meta.get('cpuinfo_mask', '?')})"
    return path


def worker_metadata(path: Path) -> dict:
    import pyperf

    benches = pyperf.BenchmarkSuite.load(str(path)).get_benchmarks()
    return {k: str(v) for k, v in benches[0].get_metadata().items()} if benches else {}


def built_args(out: Path, model: str, impl: str) -> list[str]:
    """Where --check leaves a built module for this run's pyperf workers (REUSABLE contenders only)."""
    return ["--built", str(out / model / f"{impl}-module.pt")] if impl in REUSABLE else []


def run_model(model: str, impls: list[str], out: Path, env: dict, fast: bool, step: str) -> dict:
    """Prepare, check and time every contender on one model; returns what the summary needs."""
    res = {"checks": {}, "skipped": {}, "failed": {}, "times": {}, "isa": {}}
    print(f"{step} {model}: preparing inputs and ONNX files (cached in {SCRIPT.parent / 'results' / 'e2e-cache'})",
          flush=True)
    t0 = time.time()
    prep, err = json_line(["--prepare", "--model", model], env)
    if prep is None:
        print(f"  prepare failed:\n{err}", flush=True)
        prep = {"weights": "?", "inputs": "?", "onnx": f"prepare failed: {err.splitlines()[-1] if err else '?'}"}
    res["prepare"] = prep
    print(f"  {prep.get('weights')}; inputs: {prep.get('inputs')} ({time.time() - t0:.0f} s)", flush=True)

    runnable = []
    for i, impl in enumerate(impls, 1):
        t0 = time.time()
        chk, err = json_line(["--check", "--impl", impl, "--model", model, *built_args(out, model, impl)], env)
        if chk is None:
            res["failed"][impl] = err.splitlines()[-1] if err else "failed"
            print(f"  check {i}/{len(impls)} {impl}: FAILED ({time.time() - t0:.0f} s)\n{err}", flush=True)
        elif chk["status"] == "skipped":
            res["skipped"][impl] = chk["reason"]
            print(f"  check {i}/{len(impls)} {impl}: skipped: {chk['reason']}", flush=True)
        else:
            res["checks"][impl] = chk
            res["isa"][impl] = isa_of(impl, chk["meta"])
            runnable.append(impl)
            print(f"  check {i}/{len(impls)} {impl}: max |diff| vs fp32 {chk['max_abs_diff']:.3g} "
                  f"(rel {chk['rel_diff']:.2g}), top-1 agrees {chk['top1_agree']}/{chk['n_check']}; "
                  f"setup {chk['setup_s']:.1f} s ({time.time() - t0:.0f} s); {res['isa'][impl]}", flush=True)

    mdir = out / model
    mdir.mkdir(parents=True, exist_ok=True)
    timed = []
    for i, impl in enumerate(runnable, 1):
        loops = max(1, math.ceil(MIN_TIME / max(res["checks"][impl]["one_call_ms"] / 1e3, 1e-6)))
        print(f"  time {i}/{len(runnable)} {impl} (load {load()}): ", end="", flush=True)
        extra = ["--model", model, "--loops", str(loops), *built_args(out, model, impl)]
        extra += ["--fast"] if fast else []
        try:
            run_contenders(SCRIPT, [impl], mdir, env, extra)
        except subprocess.CalledProcessError as exc:
            res["failed"][impl] = f"pyperf run failed (exit {exc.returncode})"
            print(f"  {impl}: pyperf run failed", flush=True)
            continue
        timed.append(impl)
        res["times"][impl] = next(iter(median_seconds(mdir / f"{impl}.json").values()))
        meta = worker_metadata(mdir / f"{impl}.json")
        res["isa"][impl] = isa_of(impl, meta)
        print(f"  {impl}: {res['times'][impl] * 1e3:.2f} ms", flush=True)
    if len(timed) > 1:
        res["table"] = compare_table(mdir, timed)
        print(res["table"], flush=True)
    return res


def target_lines(results: dict) -> list[str]:
    lines = []
    for desc, models, ref, goal in TARGETS:
        for model in models:
            r = results.get(model)
            if r is None:
                lines.append(f"- {desc} on {model}: not measured (model not in this run)")
                continue
            t = r["times"]
            if ref == "eager":
                ref_name, ref_t = "eager", t.get("eager")
            else:
                peers = {p: t[p] for p in INT8_PEERS if p in t}
                ref_name, ref_t = (min(peers, key=peers.get), min(peers.values())) if peers else (None, None)
            if "edgeopt" not in t or not ref_t:
                why = r["skipped"].get("edgeopt") or r["failed"].get("edgeopt") or (
                    "edgeopt not timed" if "edgeopt" not in t else "no reference timed")
                if "edgeopt" in t and not ref_t:
                    why = f"no {'eager' if ref == 'eager' else 'int8 peer'} timed in this run"
                lines.append(f"- {desc} on {model}: NOT MEASURED ({why})")
                continue
            ratio = ref_t / t["edgeopt"]
            if ref != "eager" and len(peers) < len(INT8_PEERS):
                ref_name += f" (best of the int8 peers timed: {', '.join(peers)})"
            lines.append(f"- {desc} on {model}: edgeopt {t['edgeopt'] * 1e3:.2f} ms vs {ref_name} {ref_t * 1e3:.2f} ms "
                         f"= {ratio:.2f}x (target >= {goal}x): {'MET' if ratio >= goal else 'MISSED'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {','.join(IMPLS)}")
    parser.add_argument("--threads", type=int, default=2, help="threads for every contender")
    parser.add_argument("--fast", action="store_true", help="pass --fast to pyperf (3 processes x 2 values)")
    parser.add_argument("--tag", default=None, help="results go to bench/results/e2e-<tag> (default: the time)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    models, impls = args.models.split(","), args.impls.split(",")
    for name, given, known in (("model", models, MODELS), ("impl", impls, IMPLS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {','.join(known)}")

    out = args.out or HERE.parent / "results" / f"e2e-{args.tag or time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **isa.ENV_SWITCHES)
    os.environ.update(env)
    print(f"results -> {out}; {len(models)} models x {len(impls)} contenders, {args.threads} threads, "
          f"load average {load()}", flush=True)
    started, load_before = time.time(), load()
    results = {}
    for i, model in enumerate(models, 1):
        results[model] = run_model(model, impls, out, env, args.fast, f"[model {i}/{len(models)}]")
    load_after = load()
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    lines = [f"# End-to-end benchmark (batch 1, {args.threads} threads{', pyperf --fast' if args.fast else ''})",
             "", f"{time.strftime('%Y-%m-%d %H:%M')}; load average (1/5/15 min) {load_before} before, {load_after} "
             f"after; {(time.time() - started) / 60:.1f} min. Median latency in ms (pyperf, own processes).", ""]
    lines += ["| model | weights | " + " | ".join(impls) + " | edgeopt vs eager | best int8 peer | edgeopt vs it |"
              " edgeopt_native vs it |", "|" + "---|" * (len(impls) + 6)]
    for model, r in results.items():
        t = r["times"]
        cells = [f"{t[i] * 1e3:.2f}" if i in t else ("skip" if i in r["skipped"] else "fail" if i in r["failed"]
                                                     else "-") for i in impls]
        peers = {p: t[p] for p in INT8_PEERS if p in t}
        best = min(peers, key=peers.get) if peers else None
        eo = t.get("edgeopt")
        vs_eager = f"{t['eager'] / eo:.2f}x" if eo and "eager" in t else "-"
        vs_best = f"{peers[best] / eo:.2f}x" if eo and best else "-"
        native = t.get("edgeopt_native")
        native_vs_best = f"{peers[best] / native:.2f}x" if native and best else "-"
        best_cell = f"{best} {peers[best] * 1e3:.2f}" if best else "-"
        weights = "trained" if "trained" in r["prepare"].get("weights", "") else "random init"
        lines.append(f"| {LABELS[model]} | {weights} | " + " | ".join(cells)
                     + f" | {vs_eager} | {best_cell} | {vs_best} | {native_vs_best} |")
    lines += ["", "## Targets", "", *target_lines(results)]
    lines += ["", "## Inputs and weights", ""]
    for model, r in results.items():
        lines.append(f"- {model}: {r['prepare'].get('weights')}; {r['prepare'].get('inputs')}"
                     + (f"; {r['prepare']['onnx']}" if "onnx" in r["prepare"] else ""))
    for model, r in results.items():
        report = r["checks"].get("edgeopt", {}).get("meta", {}).get("edgeopt_report")
        if report:
            lines.append(f"- {model}, {report}")
    lines += ["", "## Agreement with eager fp32 (8 inputs; the first is the timed one)", "",
              "relative = max abs diff / max |fp32 output|. Random-init networks on random inputs have small logit "
              "margins, so int8 top-1 flips there say little; a broken contender shows a relative difference near 1 "
              "or far above the other int8 contenders on the same model.", "",
              "| model | contender | max abs diff | relative | top-1 agreement |", "|---|---|---|---|---|"]
    for model, r in results.items():
        for impl, c in r["checks"].items():
            lines.append(f"| {model} | {impl} | {c['max_abs_diff']:.3g} | {c['rel_diff']:.2g} | "
                         f"{c['top1_agree']}/{c['n_check']} |")
    lines += ["", "## Code path each contender reported", ""]
    seen = {}
    for model, r in results.items():
        for impl, path in r["isa"].items():
            seen.setdefault((impl, path), []).append(model)
    for (impl, path), ms in seen.items():
        lines.append(f"- {impl} ({', '.join(ms)}): {path}")
    lines += ["", f"AVX2 path: {isa.mechanism()}. ONNX Runtime's MLAS dispatches on CPUID alone (no switch): it is on "
              "AVX2 only under the avx2only shim, and its line above says what CPUID reported in its process. "
              "OpenVINO's kernels are read off its compiled graph; nodes it still ran on AVX-512 are listed there."]
    skipped = {(impl, why) for r in results.values() for impl, why in r["skipped"].items()}
    failed = {(impl, model, why) for model, r in results.items() for impl, why in r["failed"].items()}
    if skipped or failed:
        lines += ["", "## Not run", ""]
        lines += [f"- {impl}: skipped: {why}" for impl, why in sorted(skipped)]
        lines += [f"- {impl} on {model}: FAILED: {why}" for impl, model, why in sorted(failed)]
    for model, r in results.items():
        if r.get("table"):
            lines += ["", f"## pyperf compare_to, {model}", "", r["table"].rstrip()]
    write_summary(out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-layer comparison of edgeopt's int8 models against OpenVINO and ONNX Runtime, in one run.

    python bench/e2e/layers.py --prepare                       # build and cache everything (heavy, once)
    /work/tools/quiet python bench/e2e/layers.py               # time all six models, 1 and 2 threads
    python bench/e2e/layers.py --fast --models resnet18 --threads 2   # a quick look: which layers lag
    python bench/e2e/layers.py --report bench/results/layers-X      # re-write the summary from saved JSON

For each model: edgeopt.quantize on the calibration batches (real training data for the trained models,
random normal for the 224x224 ones), and from the same fp32 model and the same batches the static QDQ ONNX
file that both peers run (ONNX Runtime's quantize_static, per-channel S8 weights, U8 activations).
Contenders, per thread count, alternating in blocks whose first call is not timed:
  edgeopt         the quantized model, plain (end to end) and with a clock per graph node (per layer)
  OpenVINO        CPU plugin, LATENCY hint, PERF_COUNT on (per node: real time and the kernel it chose),
                  and once more without PERF_COUNT (end to end)
  ONNX Runtime    CPU EP, its profiler on (per node kernel time), and once more without it (end to end)
Per layer (matched by module name; a peer node of a container, e.g. a residual add inside `layer1.0`, joins
that block's last edgeopt layer, where edgeopt fuses it): ms, GMAC/s, % of the int8 chain ceiling measured
in the same run, and the ratio peer time / edgeopt time (> 1: edgeopt faster). Summary per layer type.

Models: resnet18, resnet50, mobilenet_v2 (224x224, random init, BN statistics from data), ravdess (the
VGG audio CNN), cifar10 (ResNet-10 slim), fsdd (the DS-CNN); all on the AVX2 path (run under the avx2only
shim where the CPU has AVX-512: this program re-executes itself under it when it finds it built).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

from edgeopt.perf import isa

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "ravdess", "cifar10", "fsdd")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def layer_type(module, step) -> str:
    """What a layer is, for the per-type summary: conv kxk sN, depthwise, pointwise, stem, pools, linear."""
    op = step.op
    if op in ("QuantConv2d", "SparseConv2d", "Conv2d"):
        k, s = module.kernel_size, module.stride
        groups = getattr(module, "groups", 1)
        if groups > 1 and groups == module.in_channels:
            return f"depthwise {k[0]}x{k[1]} s{s[0]}"
        if module.in_channels <= 4:
            return f"stem {k[0]}x{k[1]} s{s[0]}, {module.in_channels} input ch"
        return f"conv {k[0]}x{k[1]} s{s[0]}"
    if op in ("QuantLinear", "Linear", "HalfLinear"):
        return "linear (head)"
    if "MaxPool" in op:
        return "max pool"
    if "AvgPool" in op or "AdaptiveAvgPool" in op:
        return "average pool"
    return op


def _log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------ building

def build(name: str, log=_log) -> dict:
    """The fp32 model, the quantized one (cached), the QDQ ONNX file (cached), the input and their origins."""
    import torch

    import edgeopt
    from edgeopt.perf import cache, peers
    from edgeopt.study import subjects

    subject = subjects.get_subject(name)
    model, weights = subjects.load_model(subject, log=log)
    calib, calib_source = subjects.calibration(subject)
    folder = cache.cache_root() / "bench-layers"
    key = f"{subject.name}-{peers.weights_key(model)}-{cache.code_fingerprint()}"
    t0 = time.perf_counter()

    def quantize():
        log(f"  {name}: edgeopt.quantize on {calib_source} ...")
        qmodel, report = edgeopt.quantize(copy.deepcopy(model), calib, progress=False)
        kept = [f"{layer.name} ({layer.reason})" for layer in report.layers if not layer.converted]
        return {"module": qmodel, "kept_float": kept}

    built = cache.cached_module(folder / f"{key}-edgeopt-int8.pt", quantize, log=log)
    onnx = None
    try:
        onnx = peers.export_qdq(model, (1, *subject.input_shape), calib, folder, subject.name)
    except peers.PeerUnavailable as exc:
        log(f"  {name}: no QDQ model: {exc}")
    x = subjects.example_input(subject)
    with torch.no_grad():
        ref = model(x)
        out = built["module"](x)
    return {"subject": subject, "model": model, "qmodel": built["module"].eval(), "kept_float": built["kept_float"],
            "onnx": onnx, "x": x, "weights": weights, "calibration": calib_source,
            "agreement": float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)),
            "build_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------ timing

def time_model(b: dict, threads: int, fast: bool, peer_names: list[str], log=_log) -> dict:
    import torch

    import edgeopt
    from edgeopt.perf import peers, timing
    from edgeopt.perf.ceilings import measure_ceilings
    from edgeopt.perf.layer_timer import LayerTimer
    from edgeopt.profile import assign_peer, build_profile, match_rows

    torch.set_num_threads(threads)
    edgeopt.set_num_threads(threads)
    x, qmodel = b["x"], b["qmodel"]
    timer = LayerTimer(qmodel, x)
    contenders = {"edgeopt": lambda: qmodel(x), "edgeopt per layer": lambda: timer.run(x)}
    per_call: list = []
    after = {"edgeopt per layer": per_call.append}
    runners, skipped = {}, {}
    for peer in peer_names:
        if b["onnx"] is None:
            skipped[peer] = "no QDQ ONNX model (onnx / onnxruntime missing)"
            continue
        try:
            if peer == "openvino":
                runners["OpenVINO"] = peers.openvino_model(b["onnx"], threads)
                runners["OpenVINO per node"] = peers.openvino_model(b["onnx"], threads, profiling=True)
            elif peer == "ort":
                runners["ONNX Runtime"] = peers.ort_session(b["onnx"], threads)
                runners["ONNX Runtime per node"] = peers.ort_session(b["onnx"], threads, profiling=True)
        except peers.PeerUnavailable as exc:
            skipped[peer] = str(exc)
    for label, runner in runners.items():
        contenders[label] = (lambda r=runner: r(x))
    if "OpenVINO per node" in runners:
        after["OpenVINO per node"] = lambda _: runners["OpenVINO per node"].record()
    ceiling_s = 0.05 if fast else 0.1
    ceilings = measure_ceilings(threads, ceiling_s)
    load = timing.LoadRecord()
    samples = timing.alternating_blocks(contenders, blocks=3 if fast else 7, seconds_per_block=0.1 if fast else 0.3,
                                        after=after)
    load.stop()
    again = measure_ceilings(threads, ceiling_s)
    from edgeopt.perf.ceilings import Ceilings

    ceilings = Ceilings(max(ceilings.int8_gmacs, again.int8_gmacs), max(ceilings.fp32_gmacs, again.fp32_gmacs),
                        max(ceilings.read_gbs, again.read_gbs), threads)
    prof = build_profile("edgeopt", timer, per_call, samples["edgeopt"], samples["edgeopt per layer"], ceilings)
    rows = match_rows(prof, None)
    known = {n for n, _ in b["model"].named_modules() if n}
    nodes, unmatched, isa_of = {}, {}, {"edgeopt": isa.edgeopt_path()}
    for label in ("OpenVINO", "ONNX Runtime"):
        if f"{label} per node" not in runners:
            continue
        r = runners[f"{label} per node"]
        nodes[label] = r.node_times(skip_runs=1) if label == "ONNX Runtime" else r.node_times()
        isa_of[label] = r.meta.get("contender_isa", "")
        for row in rows:
            row.peer.pop("before", None)
        unmatched[label] = assign_peer(rows, "before", nodes[label], known)
        for row in rows:
            row.peer[label] = row.peer.pop("before", [])
    out_rows = []
    for row in rows:
        main = row.main("before")
        module = qmodel.get_submodule(main.name.split("#")[0]) if main.step.kind == "layer" else None
        macs = sum(layer.cost.macs for layer in row.before)
        ms = row.seconds("before") * 1e3
        entry = {"layer": row.name, "type": layer_type(module, main.step) if module is not None else main.step.op,
                 "what": f"{main.step.op} {main.step.detail}".strip(), "steps": [layer.name for layer in row.before],
                 "macs": macs, "edgeopt_ms": ms, "int8": any(layer.cost.int8 for layer in row.before)}
        for label in nodes:
            pn = row.peer.get(label, [])
            entry[f"{label}_ms"] = sum(n.seconds for n in pn) * 1e3 if pn else None
            entry[f"{label}_kernels"] = sorted({n.kernel for n in pn})
            entry[f"{label}_nodes"] = [n.name for n in pn]
        out_rows.append(entry)
    return {"threads": threads, "load": load.to_dict(), "ceilings": ceilings.to_dict(), "isa": isa_of,
            "skipped": skipped, "rows": out_rows,
            "end_to_end": {label: s.to_dict() for label, s in samples.items()},
            "edgeopt_layers_ms": prof.layers_seconds * 1e3, "accounting_error": prof.accounting_error,
            "timing_mode": prof.mode,
            "unmatched": {label: [n.to_dict() for n in v] for label, v in unmatched.items()}}


# ------------------------------------------------------------------------------------------ report

def _ratio(peer_ms, ms):
    return peer_ms / ms if peer_ms and ms and ms > 0 else math.nan


def _gmean(values):
    values = [v for v in values if v and math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


def model_markdown(name: str, r: dict) -> list[str]:
    from edgeopt.perf.report import fmt, fmt_percent, fmt_ratio, markdown_table

    lines = [f"## {name}", "", f"{r['label']}; weights: {r['weights']}; calibration: {r['calibration']}; "
             f"edgeopt vs fp32 on the timed input: max |diff| / max |fp32| = {r['agreement']:.3g}"]
    if r.get("kept_float"):
        lines.append(f"edgeopt.quantize kept float: {', '.join(r['kept_float'])}")
    for t in r["runs"]:
        c, e = t["ceilings"], t["end_to_end"]
        lines += ["", f"### {name}, {t['threads']} thread{'s' if t['threads'] != 1 else ''}", "",
                  f"Load {'/'.join(f'{v:.2f}' for v in t['load']['before'])} before, "
                  f"{'/'.join(f'{v:.2f}' for v in t['load']['after'])} after. Ceilings (same run): int8 chain "
                  f"{c['int8_gmacs']:.0f} GMAC/s, fp32 FMA {c['fp32_gmacs']:.0f} GMAC/s, read {c['read_gbs']:.1f} GB/s.",
                  "End to end, median ms (p95): " + "; ".join(
                      f"{k} {v['median_ms']:.3f} ({v['p95_ms']:.3f})" for k, v in e.items()) + ".",
                  f"edgeopt's layers sum to {t['edgeopt_layers_ms']:.3f} ms ({100 * t['accounting_error']:+.1f}% of its "
                  f"end-to-end median). Paths: " + "; ".join(f"{k}: {v}" for k, v in t["isa"].items()) + "."]
        for peer, why in t["skipped"].items():
            lines.append(f"{peer}: skipped: {why}")
        peers_here = [p for p in ("OpenVINO", "ONNX Runtime") if any(f"{p}_ms" in row for row in t["rows"])]
        for p in peers_here:
            pe, ee = e.get(p, {}).get("median_ms"), e["edgeopt"]["median_ms"]
            lines.append(f"End to end {p} / edgeopt: {fmt_ratio(_ratio(pe, ee))}.")
        headers = ["layer", "type", "edgeopt ms", "GMAC/s", "% int8 ceiling"]
        for p in peers_here:
            headers += [f"{p} ms", f"{p} kernel", f"{p} GMAC/s", f"{p} / edgeopt"]
        table = []
        for row in t["rows"]:
            ms = row["edgeopt_ms"]
            g = row["macs"] / ms / 1e6 if ms else math.nan
            cells = [row["layer"], row["what"], fmt(ms, 3), fmt(g, 1) if row["macs"] else "-",
                     fmt_percent(g / c["int8_gmacs"]) if row["macs"] and row["int8"] else "-"]
            for p in peers_here:
                pm = row.get(f"{p}_ms")
                cells += [fmt(pm, 3), ", ".join(row.get(f"{p}_kernels", [])) or "-",
                          fmt(row["macs"] / pm / 1e6, 1) if pm and row["macs"] else "-", fmt_ratio(_ratio(pm, ms))]
            table.append(cells)
        for p in peers_here:
            un = t["unmatched"].get(p, [])
            if un:
                table.append([f"({p} only: {', '.join(n['type'] for n in un)})", "", "", "", ""]
                             + sum((["-", "-", "-", "-"] if q != p else [fmt(sum(n['ms'] for n in un), 3), "", "", ""]
                                    for q in peers_here), []))
        lines += ["", markdown_table(headers, table, "ll" + "r" * (len(headers) - 2))]
        lag = sorted((row for row in t["rows"] if row.get("OpenVINO_ms")),
                     key=lambda row: -(row["edgeopt_ms"] - row["OpenVINO_ms"]))[:5]
        if lag:
            lines += ["", "Where edgeopt loses most time to OpenVINO: " + "; ".join(
                f"{row['layer']} ({row['what']}) {row['edgeopt_ms']:.3f} vs {row['OpenVINO_ms']:.3f} ms"
                for row in lag if row["edgeopt_ms"] > row["OpenVINO_ms"]) + "."]
    return lines


def type_summary(results: dict) -> list[str]:
    """Geometric-mean ratio (peer / edgeopt) per layer type and thread count, across all models."""
    from edgeopt.perf.report import fmt, fmt_ratio, markdown_table

    cells: dict[tuple, dict] = {}
    threads = sorted({t["threads"] for r in results.values() for t in r["runs"]})
    for name, r in results.items():
        for t in r["runs"]:
            for row in t["rows"]:
                d = cells.setdefault((row["type"], t["threads"]), {"ov": [], "ort": [], "n": 0, "ms": 0.0, "models": set()})
                d["n"] += 1
                d["ms"] += row["edgeopt_ms"]
                d["models"].add(name)
                d["ov"].append(_ratio(row.get("OpenVINO_ms"), row["edgeopt_ms"]))
                d["ort"].append(_ratio(row.get("ONNX Runtime_ms"), row["edgeopt_ms"]))
    types = sorted({k[0] for k in cells}, key=lambda ty: -max(cells[(ty, th)]["ms"] for th in threads if (ty, th) in cells))
    headers = ["layer type", "layers", "models"]
    for th in threads:
        headers += [f"OpenVINO / edgeopt, {th}T", f"ONNX Runtime / edgeopt, {th}T", f"edgeopt ms, {th}T"]
    rows = []
    for ty in types:
        first = next(cells[(ty, th)] for th in threads if (ty, th) in cells)
        row = [ty, str(first["n"]), ", ".join(sorted(first["models"]))]
        for th in threads:
            d = cells.get((ty, th))
            row += ([fmt_ratio(_gmean(d["ov"])), fmt_ratio(_gmean(d["ort"])), fmt(d["ms"], 2)] if d else ["-", "-", "-"])
        rows.append(row)
    e2e_rows = []
    for name, r in results.items():
        cellsr = [name]
        for th in threads:
            t = next((t for t in r["runs"] if t["threads"] == th), None)
            if t is None:
                cellsr += ["-", "-", "-", "-"]
                continue
            e = t["end_to_end"]
            eo = e["edgeopt"]["median_ms"]
            cellsr += [fmt(eo, 3), fmt(e.get("OpenVINO", {}).get("median_ms"), 3),
                       fmt_ratio(_ratio(e.get("OpenVINO", {}).get("median_ms"), eo)),
                       fmt_ratio(_ratio(e.get("ONNX Runtime", {}).get("median_ms"), eo))]
        e2e_rows.append(cellsr)
    e2e_headers = ["model"]
    for th in threads:
        e2e_headers += [f"edgeopt ms {th}T", f"OpenVINO ms {th}T", f"OV / edgeopt {th}T", f"ORT / edgeopt {th}T"]
    return ["## Per layer type (geometric mean of the per-layer ratios; > 1: edgeopt faster)", "",
            markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)), "",
            "## End to end (plain sessions, same blocks)", "", markdown_table(e2e_headers, e2e_rows)]


def write_report(out: Path, results: dict, header: list[str]) -> Path:
    from edgeopt.perf.report import atomic_write

    lines = header + [""] + type_summary(results)
    for name, r in results.items():
        lines += [""] + model_markdown(name, r)
    return atomic_write(out / "summary.md", "\n".join(lines) + "\n")


def load_results(out: Path) -> dict:
    import json

    results = {}
    for name in MODELS:
        path = out / f"{name}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {','.join(MODELS)}")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--peers", default="openvino,ort", help="openvino,ort (or a subset; 'none')")
    ap.add_argument("--fast", action="store_true", help="3 short blocks per contender instead of 7: a quick look")
    ap.add_argument("--prepare", action="store_true", help="only build and cache the models and ONNX files")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/layers-<time>)")
    ap.add_argument("--report", type=Path, default=None, metavar="FOLDER", help="rewrite FOLDER/summary.md from its JSON")
    args = ap.parse_args()
    if args.report:
        results = load_results(args.report)
        print(write_report(args.report, results, ["# Per-layer comparison (re-written from saved results)"]).read_text())
        return 0
    isa.prepare_process()
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {','.join(MODELS)}")
    threads = [int(t) for t in args.threads.split(",")]
    peer_names = [] if args.peers == "none" else args.peers.split(",")
    from edgeopt.perf import plots  # noqa: F401  (see plots.preload: before any peer runs under the shim)

    plots.preload()
    from edgeopt.perf.report import write_json
    from edgeopt.perf.timing import format_load

    out = args.out or RESULTS / f"layers-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_before = format_load()
    for i, name in enumerate(models, 1):
        _log(f"[{i}/{len(models)}] {name}: building (cached after the first time)")
        b = build(name)
        if args.prepare:
            _log(f"  ready: {b['onnx']} ({b['build_s']:.0f} s)")
            continue
        result = {"label": b["subject"].label, "weights": b["weights"], "calibration": b["calibration"],
                  "kept_float": b["kept_float"], "agreement": b["agreement"], "runs": []}
        for th in threads:
            t0 = time.time()
            _log(f"  {name}, {th} thread(s): timing ...")
            result["runs"].append(time_model(b, th, args.fast, peer_names))
            e = result["runs"][-1]["end_to_end"]
            _log(f"    {time.time() - t0:.0f} s: " + ", ".join(f"{k} {v['median_ms']:.3f} ms" for k, v in e.items()))
        write_json(out / f"{name}.json", result)
    if args.prepare:
        return 0
    header = [f"# Per-layer comparison: edgeopt int8 vs OpenVINO and ONNX Runtime on the same QDQ model",
              "", f"{time.strftime('%Y-%m-%d %H:%M')}; batch 1; {'fast mode (3 blocks of ~0.1 s)' if args.fast else '7 blocks of ~0.3 s'} "
              f"per contender; load average {load_before} before, {format_load()} after; "
              f"{(time.time() - started) / 60:.1f} min; AVX2 path: {isa.mechanism()}."]
    report = write_report(out, load_results(out), header)
    print(report.read_text())
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pipeline's speed targets: edgeopt.optimize's models against OpenVINO int8 of the dense model (and
against each step alone), one process, alternating blocks, batch 1.

    /work/tools/heavy python bench/e2e/pipeline_targets.py --build resnet18         # modules + QDQ ONNX, cached
    LD_PRELOAD=/tmp/avx2only/avx2only.so /work/tools/quiet python bench/e2e/pipeline_targets.py --time resnet18

Groups (bench_e2e's models, inputs and calibration batches, so the figures line up with run_e2e.py):
  resnet18   OpenVINO int8 (dense QDQ model), edgeopt dense int8 (optimize [Quantize()]), one-shot
             optimize [Prune(0.8 | 0.9, block=(16, 4)), Quantize()] (random init with BN statistics: speed only)
  vgg_audio  OpenVINO int8, edgeopt dense int8, and every lowered RAVDESS module finetune_pipeline.py --lower
             saved (bench/results/pipeline/ravdess_*-lowered.pt: pruned + distilled + int8, seeds, --max-drop)
  cifar10    the same for the CIFAR-10 ResNet-10 slim (cifar10_*-lowered.pt)
  low_rank   low rank and int8 alone and composed, one-shot (speed): the RAVDESS CNN with Tucker-2 convs
             (LowRank(rank=0.25, conv="tucker2")) and the MNIST transformer (LowRank(rank=0.125)), each
             against fp32 eager, int8 alone and low rank fp32 alone
--build runs every optimize call (kernels chosen by rule, measure=False: a build under load would time
noise) and saves the modules to bench/results/pipeline/built/; --time only loads them, so the quiet run
is timing alone. Results: bench/results/pipeline/targets-<group>-<time>.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import bench_e2e  # noqa: E402  (sets the AVX2-path switches before torch; the e2e models and inputs)
import edgeopt  # noqa: E402
from edgeopt.perf import isa, peers, timing  # noqa: E402

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results" / "pipeline"
BUILT = RESULTS / "built"
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
GROUPS = ("resnet18", "vgg_audio", "cifar10", "low_rank")
LOWERED_PREFIX = {"vgg_audio": "ravdess_", "cifar10": "cifar10_"}


def _optimized(model, steps, calib):
    lowered, report = edgeopt.optimize(copy.deepcopy(model), steps, data=calib, measure=False, progress=False)
    kernels = [r.kernel for r in report if r.kernel]
    sparsity = f"sparsity {report.sparsity:.3f}, " if report.sparsity is not None else ""
    summary = (f"{sparsity}MACs {(report.macs_after or 0) / 1e6:.1f}M of {(report.macs_before or 0) / 1e6:.1f}M; "
               + ", ".join(f"{k} x{kernels.count(k)}" for k in sorted(set(kernels))))
    return lowered.eval(), summary


def recipes(group: str):
    """(model name, {contender: steps}) of the one-shot builds of a group (only the models in $PIPELINE_MODELS,
    comma-separated, when set)."""
    only = os.environ.get("PIPELINE_MODELS")
    return [(name, c) for name, c in _recipes(group) if not only or name in only.split(",")]


def _recipes(group: str):
    P, Q, L = edgeopt.Prune, edgeopt.Quantize, edgeopt.LowRank
    if group == "resnet18":
        return [("resnet18", {"edgeopt int8": [Q()], "edgeopt 80% + int8": [P(0.8, block=(16, 4)), Q()],
                              "edgeopt 90% + int8": [P(0.9, block=(16, 4)), Q()]})]
    if group in ("vgg_audio", "cifar10"):
        return [(group, {"edgeopt int8": [Q()]})]
    if group == "low_rank":
        cnn = dict(rank=0.25, conv="tucker2", measure=False, skip=("classifier.1",))
        vit = dict(rank=0.125, measure=False, skip=("head",))
        return [("vgg_audio", {"edgeopt int8": [Q()], "low rank fp32": [L(**cnn)], "low rank + int8": [L(**cnn), Q()]}),
                ("mnist_vit", {"edgeopt int8": [Q()], "low rank fp32": [L(**vit)], "low rank + int8": [L(**vit), Q()]})]
    raise ValueError(f"unknown group {group!r}; choose from {', '.join(GROUPS)}")


def built_path(group: str, name: str, label: str) -> Path:
    return BUILT / f"{group}-{name}-{label.replace(' ', '_').replace('%', '').replace('+', 'plus')}.pt"


def build(group: str) -> None:
    for name, contenders in recipes(group):
        model, weights = bench_e2e.load_model(name)
        data = bench_e2e.inputs(name)
        if group != "low_rank":
            print(f"{name}: QDQ ONNX {bench_e2e.onnx_int8(name, model, data['calib'])}", flush=True)
        for label, steps in contenders.items():
            path = built_path(group, name, label)
            if path.is_file():
                print(f"{name} {label}: built already ({path.name})", flush=True)
                continue
            t0 = time.time()
            if label == "low rank fp32":
                lowered = edgeopt.optimize(copy.deepcopy(model), steps, data=data["calib"], measure=False,
                                           progress=False)[0].eval()
                summary = "low rank only, fp32"
            else:
                lowered, summary = _optimized(model, steps, data["calib"])
            BUILT.mkdir(parents=True, exist_ok=True)
            torch.save({"module": lowered, "model": name, "label": label, "weights": weights,
                        "steps": [s.describe() for s in steps], "summary": summary}, path)
            print(f"{name} {label}: {summary} ({time.time() - t0:.0f} s)", flush=True)


def contenders_of(group: str) -> list[dict]:
    """[{model, label, run, meta}] for the timing: the built modules, the lowered fine-tuned ones, OpenVINO."""
    out = []
    for name, contenders in recipes(group):
        model, weights = bench_e2e.load_model(name)
        data = bench_e2e.inputs(name)
        entry = {"model": name, "weights": weights, "x": data["check"][0], "check": data["check"], "reference": model,
                 "runs": {}, "summaries": {}}
        if group != "low_rank":
            path = bench_e2e.onnx_int8(name, model, data["calib"])  # cached by --build
            runner = peers.openvino_model(path, THREADS)
            entry["runs"]["OpenVINO int8 (dense)"] = runner
            entry["summaries"]["OpenVINO int8 (dense)"] = f"{path.name}; {runner.meta.get('contender_isa', '')}"
        else:
            entry["runs"]["fp32 eager"] = model
            entry["summaries"]["fp32 eager"] = weights
        for label in contenders:
            path = built_path(group, name, label)
            if not path.is_file():
                raise SystemExit(f"{path} missing: run --build {group} first (under /work/tools/heavy)")
            saved = torch.load(path, weights_only=False)
            entry["runs"][label] = saved["module"].eval()
            entry["summaries"][label] = saved["summary"]
        if name in LOWERED_PREFIX and group != "low_rank":
            for path in sorted(RESULTS.glob(f"{LOWERED_PREFIX[name]}*-lowered.pt")):
                saved = torch.load(path, weights_only=False)
                label = path.name[len(LOWERED_PREFIX[name]):-len("-lowered.pt")]
                entry["runs"][label] = saved["module"].eval()
                entry["summaries"][label] = saved.get("summary", "")
        out.append(entry)
    return out


def _agreement(run, entry) -> str:
    with torch.no_grad():
        outs = [torch.as_tensor(run(x)).float() for x in entry["check"]]
        refs = [entry["reference"](x) for x in entry["check"]]
    agree = sum(int(o.argmax(-1).item() == r.argmax(-1).item()) for o, r in zip(outs, refs))
    return f"{agree}/{len(refs)}"


def top_layers(module, x, runs: int = 20, most: int = 10) -> list[tuple[str, float]]:
    """The `most` slowest steps of one call (edgeopt.perf.layer_timer), median ms over `runs` calls."""
    from edgeopt.perf.layer_timer import LayerTimer

    timer = LayerTimer(module, x)
    timer.run(x)
    per_run = [timer.run(x) for _ in range(runs)]
    medians = [sorted(r[i] for r in per_run)[runs // 2] * 1e3 for i in range(len(timer.steps))]
    order = sorted(range(len(medians)), key=lambda i: -medians[i])[:most]
    return [(timer.steps[i].name, medians[i]) for i in order] + [("sum of steps", sum(medians))]


def time_group(group: str, fast: bool, layers: bool = False) -> Path:
    torch.set_num_threads(THREADS)
    edgeopt.set_num_threads(THREADS)
    rows, header_load = [], timing.LoadRecord()
    for entry in contenders_of(group):
        x = entry["x"]
        calls = {label: (lambda r=run: r(x)) for label, run in entry["runs"].items()}
        agreement = {label: _agreement(run, entry) for label, run in entry["runs"].items()}
        load = timing.LoadRecord()
        samples = timing.alternating_blocks(calls, blocks=3 if fast else 7, seconds_per_block=0.1 if fast else 0.3)
        load.stop()
        ref_label = next(iter(entry["runs"]))
        ref = samples[ref_label].median
        for label, s in samples.items():
            rows.append({"model": entry["model"], "contender": label, "median_ms": s.median * 1e3, "p95_ms": s.p95 * 1e3,
                         "n": s.n, "vs_first": timing.ratio(ref, s.median), "first": ref_label,
                         "top1_vs_fp32": agreement[label], "what": entry["summaries"].get(label, ""), "load": str(load)})
        if layers:
            for label, run in entry["runs"].items():
                if isinstance(run, torch.nn.Module) and label.startswith(("edgeopt", "s8", "s9", "low rank")):
                    rows.append({"model": entry["model"], "contender": label, "layers": top_layers(run, x)})
        print(f"{entry['model']} ({load}):", flush=True)
        for r in rows:
            if r["model"] == entry["model"] and "layers" in r:
                print(f"  {r['contender']}: " + ", ".join(f"{n} {ms:.3f}" for n, ms in r["layers"]), flush=True)
            elif r["model"] == entry["model"]:
                print(f"  {r['contender']:<40} {r['median_ms']:8.3f} ms  p95 {r['p95_ms']:8.3f}  {r['vs_first']:5.2f}x "
                      f"{ref_label}  top-1 {r['top1_vs_fp32']}", flush=True)
    header_load.stop()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"group": group, "threads": THREADS, "batch": 1, "avx2_path": isa.mechanism(), "edgeopt": isa.edgeopt_path(),
            "load": str(header_load), "blocks": 3 if fast else 7, "time": stamp}
    (RESULTS / f"targets-{group}-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Pipeline targets: {group} ({stamp})", "",
             f"batch 1, {THREADS} threads, {meta['blocks']} alternating blocks per contender, medians; AVX2 path: "
             f"{meta['avx2_path']}; {meta['load']}", "",
             "| model | contender | median ms | p95 ms | x first | top-1 vs fp32 | what |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {r['model']} | {r['contender']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['vs_first']:.2f}x | "
              f"{r['top1_vs_fp32']} | {r['what']} |" for r in rows if "layers" not in r]
    for r in (r for r in rows if "layers" in r):
        lines += ["", f"{r['model']} {r['contender']}, slowest steps (median ms, edgeopt.perf.layer_timer): "
                  + ", ".join(f"{n} {ms:.3f}" for n, ms in r["layers"])]
    path = RESULTS / f"targets-{group}-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"results: {path}")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", choices=GROUPS)
    ap.add_argument("--time", choices=GROUPS)
    ap.add_argument("--fast", action="store_true", help="3 blocks of 0.1 s instead of 7 of 0.3 s")
    ap.add_argument("--layers", action="store_true", help="also the slowest steps of each edgeopt model")
    a = ap.parse_args()
    if not (a.build or a.time):
        ap.error("give --build GROUP or --time GROUP")
    if a.build:
        build(a.build)
    if a.time:
        from edgeopt.perf import plots

        plots.preload()  # before OpenVINO runs under the shim (see plots.preload)
        time_group(a.time, a.fast, a.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""pyperf benchmark of one whole model at batch 1 under one implementation (end-to-end peers).

    python bench/e2e/bench_e2e.py --impl ort_int8 --model resnet18 -o ort_int8.json   # pyperf, own processes
    python bench/e2e/bench_e2e.py --check --impl ort_int8 --model resnet18            # build + accuracy, JSON line

run_e2e.py drives this for every model and contender; it prepares the shared inputs and the ONNX files in
bench/results/e2e-cache/ first, so the pyperf workers only load them.

Models (edgeopt.study.subjects): vgg_audio (the trained RAVDESS checkpoint, 1x1x64x128 log-mel, real
calibration and check clips); resnet18, mobilenet_v2, resnet50 at 1x3x224x224 with random init (seed 0) and
BatchNorm statistics measured on random batches. Peers are built by edgeopt.perf.peers, which documents
their configuration.
Contenders, every one at batch 1 on THREADS threads (OMP_NUM_THREADS, default 2):
  eager           PyTorch fp32, eval mode
  compile         torch.compile (default mode)
  compile_frozen  torch.compile with torch._inductor.config.freezing = True
  torch_int8      PyTorch's own static int8, FX graph mode (prepare_fx/convert_fx, x86 qconfig and engine);
                  PT2E (X86InductorQuantizer) is no longer in torch 2.13 (it moved to torchao)
  ort_fp32        ONNX Runtime, CPU EP, the fp32 ONNX export
  ort_int8        ONNX Runtime on the static QDQ model (quantize_static: U8 activations, per-channel S8 weights)
  ov_fp32         OpenVINO CPU on the fp32 ONNX file, LATENCY hint, INFERENCE_PRECISION_HINT=f32
  ov_int8         OpenVINO CPU on the same QDQ ONNX file
  edgeopt         qmodel, report = edgeopt.quantize(model, calibration batches)
  edgeopt_native  the same qmodel lowered by edgeopt.runtime.compile: one native plan per partition
Every int8 contender is calibrated on the same 8 batches (see `inputs`). A contender whose package or API
is missing raises Skip with the reason; it is never replaced by something else.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

from edgeopt.perf import isa

isa.steer()  # before torch: the AVX2-path switches (harmless under the avx2only shim)
import edgeopt  # noqa: E402  (before torch, as users should: it tunes torch's OpenMP spin, see README)
from edgeopt.perf import peers  # noqa: E402
from edgeopt.perf.cache import save  # noqa: E402
from edgeopt.perf.pyperf_runs import record_metadata, time_forward  # noqa: E402
from edgeopt.study import subjects  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent

MODELS = {  # name -> input shape (batch 1)
    "vgg_audio": (1, 1, 64, 128),
    "resnet18": (1, 3, 224, 224),
    "mobilenet_v2": (1, 3, 224, 224),
    "resnet50": (1, 3, 224, 224),
}
IMPLS = ("eager", "compile", "compile_frozen", "torch_int8", "ort_fp32", "ort_int8", "ov_fp32", "ov_int8", "edgeopt",
         "edgeopt_native")
INT8_PEERS = ("torch_int8", "ort_int8", "ov_int8")
CACHE = HERE.parent / "results" / "e2e-cache"
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
N_CALIB_BATCHES, CALIB_BATCH, N_CHECK = 8, 4, 8


Skip = peers.PeerUnavailable  # the contender cannot run here (package or API missing); the message says why


# ---------------------------------------------------------------------------------------------- models, inputs

def load_model(name: str) -> tuple[nn.Module, str]:
    """(fp32 model in eval mode, how its weights were made): the study's subjects (edgeopt.study.subjects);
    random-init weights are made once and cached, so every process runs the very same model."""
    return subjects.load_model(subjects.get_subject(name))


def inputs(name: str) -> dict:
    """{"calib": 8 batches, "check": N_CHECK batch-1 inputs (the first is the timed one), "source": text},
    made once per model and cached so every process uses the very same tensors."""
    path = CACHE / f"inputs-{name}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    subject = subjects.get_subject(name)
    calib, source = subjects.calibration(subject, N_CALIB_BATCHES, CALIB_BATCH)
    if subject.task is None:
        g = torch.Generator().manual_seed(4321)
        check = [torch.randn(*MODELS[name], generator=g) for _ in range(N_CHECK)]
        check_source = f"{N_CHECK} random-normal check inputs"
    else:
        test = subjects.dataset(subject, "test")
        check = [test[i * len(test) // N_CHECK][0].unsqueeze(0) for i in range(N_CHECK)]
        check_source = f"{N_CHECK} check inputs from the {subject.task} test split"
    data = {"calib": calib, "check": check, "source": f"calibration: {source}; {check_source}"}
    save(path, data)
    return data


def onnx_fp32(name: str, model: nn.Module) -> Path:
    return peers.export_fp32(model, MODELS[name], CACHE, name)


def onnx_int8(name: str, model: nn.Module, calib: list[torch.Tensor]) -> Path:
    return peers.export_qdq(model, MODELS[name], calib, CACHE, name)


def prepare(name: str) -> dict:
    """Everything a worker would otherwise redo, made once: inputs and both ONNX files (when possible)."""
    model, weights = load_model(name)
    data = inputs(name)
    done = {"weights": weights, "inputs": data["source"]}
    try:
        done["onnx_fp32"] = str(onnx_fp32(name, model))
        done["onnx_int8"] = str(onnx_int8(name, model, data["calib"]))
    except Skip as exc:
        done["onnx"] = f"skipped: {exc}"
    return done


# built modules that pickle: made once per run, loaded by the workers (FX-quantized torch_int8 modules do
# not unpickle in torch 2.13: fx re-tracing fails on their quantized submodules)
REUSABLE = ("edgeopt", "edgeopt_native")


def build(impl: str, name: str, built: Path | None = None) -> tuple:
    """(callable taking the batch-1 input tensor, metadata dict) for one contender on one model.

    built: for REUSABLE contenders, a file with the module already built in this run (by --check): loaded
    instead of calibrating and converting again in every pyperf worker (edgeopt.quantize takes minutes on
    ResNet-50 when the machine is loaded). Timing is the same: the pickle holds the very same module."""
    if built is not None and impl in REUSABLE and built.is_file():
        try:
            saved = torch.load(built, weights_only=False)
            return saved["module"].eval(), dict(saved["meta"], built="loaded from the module --check built")
        except Exception as exc:  # noqa: BLE001  (any unpickling problem: build it here instead)
            print(f"cannot load {built} ({type(exc).__name__}: {exc}); building again", file=sys.stderr)
            built = None
    if impl == "edgeopt_native" and built is not None and built.with_name("edgeopt-module.pt").is_file():
        # the very module the edgeopt contender runs in this run, lowered: the two differ only in the runtime
        forward, meta = _native(*build("edgeopt", name, built.with_name("edgeopt-module.pt")), name)
    else:
        forward, meta = _build(impl, name)
    if built is not None and impl in REUSABLE:
        save(built, {"module": forward, "meta": meta})
    return forward, meta


def _build(impl: str, name: str) -> tuple:
    model, _ = load_model(name)
    data = inputs(name)
    meta = {}
    if impl == "eager":
        return model, meta
    if impl in ("compile", "compile_frozen"):
        meta["inductor_freezing"] = str(impl == "compile_frozen")
        return peers.torch_compiled(model, data["check"][0], frozen=impl == "compile_frozen"), meta
    if impl == "torch_int8":
        meta["torch_int8_flow"] = "FX prepare_fx/convert_fx, get_default_qconfig_mapping('x86'), engine x86"
        meta["contender_isa"] = isa.torch_path(int8=True)
        return peers.torch_int8(model, data["calib"]), meta
    if impl in ("ort_fp32", "ort_int8", "ov_fp32", "ov_int8"):
        path = onnx_fp32(name, model) if impl.endswith("fp32") else onnx_int8(name, model, data["calib"])
        runner = peers.ort_session(path, THREADS) if impl.startswith("ort") else peers.openvino_model(path, THREADS)
        return runner, dict(meta, **runner.meta)
    if impl in ("edgeopt", "edgeopt_native"):
        qmodel, report = edgeopt.quantize(copy.deepcopy(model), data["calib"], progress=False)
        meta["edgeopt_report"] = str(report).splitlines()[0]
        if getattr(report, "model_sqnr_db", None) is not None:
            meta["edgeopt_report"] += f"; model SQNR {report.model_sqnr_db:.1f} dB"
        if impl == "edgeopt_native":
            return _native(qmodel.eval(), meta, name)
        return qmodel.eval(), meta
    raise ValueError(f"unknown implementation {impl!r}")


def _native(qmodel: nn.Module, meta: dict, name: str) -> tuple:
    from edgeopt import runtime as native_runtime

    compiled = native_runtime.compile(qmodel, inputs(name)["check"][0])  # checks bit-identity on that input
    return compiled, dict(meta, edgeopt_partitions=str(len(native_runtime.partitions(compiled))))


def _as_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)


def check(impl: str, name: str, built: Path | None = None) -> dict:
    """Builds the contender (saving it to `built` when reusable) and compares its outputs with eager fp32
    on the check inputs."""
    meta = isa.setup()
    torch.set_num_threads(THREADS)
    edgeopt.set_num_threads(THREADS)
    result = {"impl": impl, "model": name, "meta": meta}
    t0 = time.perf_counter()
    try:
        if built is not None:
            built.unlink(missing_ok=True)  # --check always builds afresh
            if impl not in REUSABLE:
                built = None
        forward, extra = build(impl, name, built)
    except Skip as exc:
        return dict(result, status="skipped", reason=str(exc))
    data = inputs(name)
    reference, _ = load_model(name)
    with torch.no_grad():  # the grad mode time_forward uses: compiled code is reused, not re-traced
        outs = [_as_tensor(forward(x)).float() for x in data["check"]]  # first call compiles, for compile
        result["setup_s"] = time.perf_counter() - t0
        refs = [reference(x) for x in data["check"]]
        t1 = time.perf_counter()
        forward(data["check"][0])
        result["one_call_ms"] = (time.perf_counter() - t1) * 1e3
    diff = max(float((o - r).abs().max()) for o, r in zip(outs, refs))
    scale = max(float(r.abs().max()) for r in refs)
    agree = sum(int(o.argmax(-1).item() == r.argmax(-1).item()) for o, r in zip(outs, refs))
    result.update(status="ok", max_abs_diff=diff, rel_diff=diff / scale if scale else float("nan"),
                  top1_agree=agree, n_check=len(refs), meta=dict(meta, **extra))
    return result


def main() -> None:
    if "--check" in sys.argv or "--prepare" in sys.argv:  # not pyperf runs: one JSON line on stdout
        import argparse

        parser = argparse.ArgumentParser()
        parser.add_argument("--check", action="store_true", help="build the contender, compare with fp32")
        parser.add_argument("--prepare", action="store_true", help="make the cached inputs and ONNX files")
        parser.add_argument("--impl", choices=IMPLS)
        parser.add_argument("--model", choices=tuple(MODELS), required=True)
        parser.add_argument("--built", type=Path, default=None, help="where to save the built module")
        args = parser.parse_args()
        if args.prepare:
            print(json.dumps(prepare(args.model)))
        else:
            print(json.dumps(check(args.impl, args.model, args.built)))
        return

    import pyperf

    def worker_args(cmd, args):
        cmd.extend(("--impl", args.impl, "--model", args.model))
        if args.built:
            cmd.extend(("--built", str(args.built)))

    # 3 processes x 4 values (--fast: 3 x 2): building a contender costs more than timing it, and a full run
    # of 4 models x 9 contenders has to stay near 20 minutes on the shared 2-core machine
    runner = pyperf.Runner(processes=3, values=4, warmups=1, add_cmdline_args=worker_args)
    runner.argparser.add_argument("--impl", choices=IMPLS, required=True)
    runner.argparser.add_argument("--model", choices=tuple(MODELS), required=True)
    runner.argparser.add_argument("--built", type=Path, default=None,
                                  help="module saved by --check --built (torch_int8, edgeopt): load, do not rebuild")
    args = runner.parse_args()
    record_metadata(runner, args.impl)
    torch.set_num_threads(THREADS)
    edgeopt.set_num_threads(THREADS)
    runner.metadata["threads"] = str(THREADS)
    forward, x = None, None
    if args.worker:
        forward, extra = build(args.impl, args.model, args.built)  # Skip fails the run: run_e2e checks first
        for key, value in extra.items():
            runner.metadata[key] = value
        x = inputs(args.model)["check"][0]
        time_forward(3, forward, x)  # warm-up outside pyperf's timing (compiles the compile contenders)
    shape = "x".join(map(str, MODELS[args.model]))
    runner.bench_time_func(f"{args.model} {shape}", time_forward, forward, x)


if __name__ == "__main__":
    main()

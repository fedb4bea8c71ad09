"""pyperf benchmark of one whole model at batch 1 under one implementation (end-to-end peers).

    python bench/bench_e2e.py --impl ort_int8 --model resnet18 -o ort_int8.json   # pyperf, own processes
    python bench/bench_e2e.py --check --impl ort_int8 --model resnet18            # build + accuracy, JSON line

run_e2e.py drives this for every model and contender; it prepares the shared inputs and the ONNX files in
bench/results/e2e-cache/ first, so the pyperf workers only load them.

Models (edgeopt.models): vgg_audio (the trained RAVDESS checkpoint when present, 1x1x64x128 log-mel);
resnet18, mobilenet_v2, resnet50 at 1x3x224x224 with random init (seed 0).
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
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import avx2_path  # noqa: E402,F401  (must precede torch: it sets the AVX2-path switches)
import edgeopt  # noqa: E402  (before torch, as users should: it tunes torch's OpenMP spin, see README)
from common import record_metadata, time_forward  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

MODELS = {  # name -> input shape (batch 1)
    "vgg_audio": (1, 1, 64, 128),
    "resnet18": (1, 3, 224, 224),
    "mobilenet_v2": (1, 3, 224, 224),
    "resnet50": (1, 3, 224, 224),
}
IMPLS = ("eager", "compile", "compile_frozen", "torch_int8", "ort_fp32", "ort_int8", "ov_fp32", "ov_int8", "edgeopt",
         "edgeopt_native")
INT8_PEERS = ("torch_int8", "ort_int8", "ov_int8")
CACHE = HERE / "results" / "e2e-cache"
THREADS = int(os.environ.get("OMP_NUM_THREADS", "2"))
N_CALIB_BATCHES, CALIB_BATCH, N_CHECK = 8, 4, 8
AUDIO_CHECKPOINT = "ravdess_vgg_audio"
OPSET = 17


class Skip(Exception):
    """The contender cannot run here (package or API missing); the message says why."""


# ---------------------------------------------------------------------------------------------- models, inputs

# With the default init and identity BatchNorm statistics the activations shrink layer by layer (MobileNetV2's
# logits came out ~1e-9, which no int8 contender can represent), so the statistics are measured on data.
RANDOM_INIT = "random init (seed 0), BatchNorm statistics measured on 4 random-normal batches of 8"


def _set_bn_statistics(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Gives a random-init model the activation scales of a trained one: BatchNorm statistics from data."""
    g = torch.Generator().manual_seed(99)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, *shape[1:], generator=g))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    model.eval()


def load_model(name: str) -> tuple[nn.Module, str]:
    """(fp32 model in eval mode, how its weights were made). Random-init weights are made once and cached,
    so every process runs the very same model."""
    from edgeopt.models import PretrainedNotFoundError, get_model, load_pretrained

    if name == "vgg_audio":
        try:
            return load_pretrained(AUDIO_CHECKPOINT).eval(), f"trained checkpoint {AUDIO_CHECKPOINT}"
        except PretrainedNotFoundError:
            pass
    torch.manual_seed(0)
    model = get_model(name)
    path = CACHE / f"model-{name}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval(), RANDOM_INIT
        except RuntimeError:  # the architecture changed since: make it again
            pass
    _set_bn_statistics(model, MODELS[name])
    _atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return model.eval(), RANDOM_INIT


def weights_key(model: nn.Module) -> str:
    """Short hash of the weights: cache files follow the model, not just its name."""
    h = hashlib.sha1()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _ravdess_inputs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Log-mels (the training features) from RAVDESS: calibration from the training split, evenly spaced
    clips; check inputs from the held-out test actors."""
    from edgeopt.training.tasks import get_task

    task = get_task("ravdess")
    train, test = task.dataset("train"), task.dataset("test")
    n = N_CALIB_BATCHES * CALIB_BATCH
    clips = [train[i * len(train) // n][0] for i in range(n)]
    calib = [torch.stack(clips[b * CALIB_BATCH:(b + 1) * CALIB_BATCH]) for b in range(N_CALIB_BATCHES)]
    check = [test[i * len(test) // N_CHECK][0].unsqueeze(0) for i in range(N_CHECK)]
    return calib, check


def inputs(name: str) -> dict:
    """{"calib": 8 batches, "check": N_CHECK batch-1 inputs (the first is the timed one), "source": text},
    made once per model and cached so every process uses the very same tensors."""
    path = CACHE / f"inputs-{name}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    shape = MODELS[name]
    data = None
    if name == "vgg_audio":
        try:
            calib, check = _ravdess_inputs()
            data = {"calib": calib, "check": check,
                    "source": f"real RAVDESS log-mels: calibration {N_CALIB_BATCHES}x{CALIB_BATCH} clips of the "
                              f"training actors, check {N_CHECK} clips of the held-out test actors"}
        except Exception as exc:  # data not present: fall back, and say so
            print(f"RAVDESS not usable ({exc}); random-normal inputs for vgg_audio", file=sys.stderr)
    if data is None:
        g = torch.Generator().manual_seed(1234)
        data = {"calib": [torch.randn(CALIB_BATCH, *shape[1:], generator=g) for _ in range(N_CALIB_BATCHES)],
                "check": [torch.randn(*shape, generator=g) for _ in range(N_CHECK)],
                "source": f"deterministic random-normal (seed 1234): calibration {N_CALIB_BATCHES}x{CALIB_BATCH}, "
                          f"check {N_CHECK}"}
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


# ---------------------------------------------------------------------------------------------- ONNX files

def _atomic(path: Path, write) -> Path:
    """Runs write(tmp_path) and renames: a worker never sees a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp{os.getpid()}-" + path.name)
    write(tmp)
    os.replace(tmp, path)
    return path


def onnx_fp32(name: str, model: nn.Module) -> Path:
    """fp32 ONNX export (legacy TorchScript exporter, dynamo=False: works offline without onnxscript)."""
    path = CACHE / f"{name}-{weights_key(model)}-fp32.onnx"
    if path.is_file():
        return path
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise Skip("onnx is not installed (pip install .[bench])") from exc
    import warnings

    def write(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(MODELS[name]),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["output"], do_constant_folding=True)

    return _atomic(path, write)


def onnx_int8(name: str, model: nn.Module, calib: list[torch.Tensor]) -> Path:
    """Static QDQ model from ONNX Runtime's tools: pre-processing (shape inference + graph optimisation, as
    the ORT docs recommend), then quantize_static with QDQ format, per-channel S8 weights, U8 activations,
    MinMax calibration on the shared calibration batches (fed one sample at a time: the export is batch 1)."""
    path = CACHE / f"{name}-{weights_key(model)}-qdq.onnx"
    if path.is_file():
        return path
    fp32 = onnx_fp32(name, model)
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise Skip("onnxruntime is not installed (pip install .[bench])") from exc

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter([{"input": s.unsqueeze(0).numpy()} for batch in calib for s in batch])

        def get_next(self):
            return next(self.samples, None)

    def write(tmp):
        pre = tmp.with_name(tmp.stem + "-pre.onnx")
        quant_pre_process(str(fp32), str(pre))
        try:
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            pre.unlink(missing_ok=True)

    return _atomic(path, write)


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


# ---------------------------------------------------------------------------------------------- contenders

def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    isa = ("not steerable: MLAS picks its kernels from CPUID/XCR0 with no switch (no session option or "
           "environment variable), so on this CPU it runs its AVX-512 kernels"
           + (" and AVX-512 VNNI for int8" if "-qdq" in path.name else ""))
    return (lambda x: sess.run(None, {"input": x.numpy()})[0]), {"ort_version": ort.__version__, "contender_isa": isa}


def _ov_model(path: Path):
    import collections

    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY",
        # f32 for non-quantized parts: by default OpenVINO runs fp32 models in bf16 on CPUs with
        # AVX512_BF16 (this one), which the AVX2 laptop does not have; with ONEDNN_MAX_CPU_ISA=AVX2 the bf16
        # default fails to compile at all.
        "INFERENCE_PRECISION_HINT": "f32",
    })
    request = compiled.create_infer_request()
    # what each compute node runs, read back from the compiled graph (primitiveType names carry the ISA;
    # gemm_mlas is OpenVINO's copy of MLAS, which dispatches on CPUID alone: AVX-512 here)
    steered, not_steered = collections.Counter(), collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer, kind = info["layerType"].astype(str), info["primitiveType"].astype(str)
        if layer in ("Input", "Output", "Const", "Reshape", "Reorder"):
            continue
        wide = any(tag in kind for tag in ("avx512", "amx", "mlas"))
        (not_steered if wide else steered)[f"{kind} ({layer})" if wide else kind] += 1
    isa = "; ".join(f"{label}: " + ", ".join(f"{k} x{v}" for k, v in c.most_common())
                    for label, c in (("AVX2 or narrower", steered), ("AVX-512 (not steered)", not_steered)) if c)
    meta = {"ov_version": ov.get_version(), "contender_isa": isa,
            "ov_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")}
    return (lambda x: request.infer([x.numpy()], share_inputs=True)[0]), meta


def _torch_int8(model: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[0],))
        with torch.no_grad():
            for batch in calib:
                prepared(batch)
        return convert_fx(prepared).eval()


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
        _atomic(built, lambda tmp: torch.save({"module": forward, "meta": meta}, tmp))
    return forward, meta


def _build(impl: str, name: str) -> tuple:
    model, _ = load_model(name)
    data = inputs(name)
    meta = {}
    if impl == "eager":
        return model, meta
    if impl in ("compile", "compile_frozen"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = impl == "compile_frozen"
        meta["inductor_freezing"] = str(inductor_config.freezing)
        return torch.compile(model), meta
    if impl == "torch_int8":
        meta["torch_int8_flow"] = "FX prepare_fx/convert_fx, get_default_qconfig_mapping('x86'), engine x86"
        return _torch_int8(model, data["calib"]), meta
    if impl in ("ort_fp32", "ort_int8", "ov_fp32", "ov_int8"):
        package = "onnxruntime" if impl.startswith("ort") else "openvino"
        try:
            __import__(package)
        except ImportError as exc:
            raise Skip(f"{package} is not installed (pip install .[bench])") from exc
        path = onnx_fp32(name, model) if impl.endswith("fp32") else onnx_int8(name, model, data["calib"])
        return _ort_session(path) if package == "onnxruntime" else _ov_model(path)
    if impl in ("edgeopt", "edgeopt_native"):
        try:
            quantize = edgeopt.quantize
        except (AttributeError, ImportError) as exc:
            raise Skip(f"edgeopt.quantize is not available yet ({exc})") from exc
        import inspect
        import types

        if isinstance(quantize, types.ModuleType):  # edgeopt.quantize is a callable module
            quantize = quantize.quantize
        quiet = {"progress": False} if "progress" in inspect.signature(quantize).parameters else {}
        qmodel, report = quantize(copy.deepcopy(model), data["calib"], **quiet)
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
    meta = avx2_path.setup()
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

"""The peers edgeopt is compared with, each configured as its documentation recommends for batch-1 latency,
and their own per-node profilers.

- ONNX files: the fp32 export (TorchScript exporter, opset 17) and the static QDQ model made with ONNX
  Runtime's tools (pre-processing, then quantize_static: U8 activations, per-channel S8 weights, MinMax),
  shared by ONNX Runtime and OpenVINO so both run the very same quantized graph.
- ONNX Runtime: CPU execution provider, intra-op threads = the run's thread count, sequential execution,
  all graph optimizations; optionally its profiler (per-node kernel times).
- OpenVINO: CPU plugin, LATENCY hint, INFERENCE_NUM_THREADS, fp32 for non-quantized parts; optionally
  PERF_COUNT (per-node real times, the kernel each node chose).
- PyTorch's own int8: FX graph mode, x86 qconfig and engine.

A peer whose package is missing raises `PeerUnavailable` with the reason, never a stand-in.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from edgeopt.perf import isa
from edgeopt.files import atomic_by_name
from edgeopt.perf.report import atomic_write

OPSET = 17


class PeerUnavailable(Exception):
    """The peer cannot run here (package or API missing); the message says why."""


def weights_key(model: nn.Module) -> str:
    """Short hash of the weights: cached exports follow the model, not just its name."""
    import hashlib

    h = hashlib.sha1()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def _need(package: str, why: str = "") -> None:
    try:
        __import__(package)
    except ImportError as exc:
        raise PeerUnavailable(f"{package} is not installed (pip install 'edgeopt[bench]'){why}") from exc


# --------------------------------------------------------------------------------------------- ONNX files

def export_fp32(model: nn.Module, input_shape: Sequence[int], folder: Path, name: str) -> Path:
    """fp32 ONNX export (legacy TorchScript exporter, dynamo=False: works offline without onnxscript); cached
    by weights. Node names carry the module path (`/layer1/layer1.0/conv1/Conv`), which `module_name` reads."""
    path = Path(folder) / f"{name}-{weights_key(model)}-fp32.onnx"
    if path.is_file():
        return path
    _need("onnx")

    def export(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(copy.deepcopy(model).eval(), (torch.zeros(*input_shape),), tmp, dynamo=False,
                              opset_version=OPSET, input_names=["input"], output_names=["output"],
                              do_constant_folding=True)

    return atomic_by_name(path, export)


def export_qdq(model: nn.Module, input_shape: Sequence[int], calibration: Sequence[torch.Tensor], folder: Path,
               name: str) -> Path:
    """Static QDQ int8 model from ONNX Runtime's tools: quant_pre_process (shape inference and graph
    optimisation, as the ORT docs recommend), then quantize_static (QDQ, per-channel S8 weights, U8
    activations, MinMax calibration on `calibration` fed one sample at a time: the export is batch 1)."""
    path = Path(folder) / f"{name}-{weights_key(model)}-qdq.onnx"
    if path.is_file():
        return path
    fp32 = export_fp32(model, input_shape, folder, name)
    _need("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter([{"input": s.unsqueeze(0).numpy()} for batch in calibration for s in batch])

        def get_next(self):
            return next(self.samples, None)

    def quantize(tmp: str) -> None:
        pre = Path(tmp).with_name(Path(tmp).stem + "-pre.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(pre))
            try:
                quantize_static(str(pre), tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            finally:
                pre.unlink(missing_ok=True)

    return atomic_by_name(path, quantize)


def module_name(onnx_node_name: str, known: set[str] | None = None) -> str:
    """The torch module an exported node came from. The exporter names nodes by module scope:
    `/layer1/layer1.0/conv1/Conv` is `layer1.0.conv1` (a component that extends the previous one,
    `layer1` -> `layer1.0`, replaces it; others are children). Runtimes keep that prefix and add suffixes
    (OpenVINO `/WithoutBiases`, ONNX Runtime `_token_5`). With `known` (the model's module names) the longest
    known module on the path is returned ('' if none: graph inputs, reorders); without it, the path minus
    its last component (the op)."""
    parts = [p for p in onnx_node_name.split("/") if p]
    paths, current, previous = [], "", ""
    for part in parts:
        if previous and part.startswith(previous + "."):
            current = current[: len(current) - len(previous)] + part
        else:
            current = f"{current}.{part}" if current else part
        previous = part
        paths.append(current)
    if known is None:
        return paths[-2] if len(paths) >= 2 else ""
    hits = [p for p in paths if p in known]
    return hits[-1] if hits else ""


# --------------------------------------------------------------------------------------------- per-node times

@dataclass
class NodeTime:
    name: str          # the runtime's node name
    type: str          # op type (Convolution, Conv, QLinearConv, ...)
    kernel: str        # what ran (OpenVINO: exec type such as jit_avx2_I8; ORT: the provider)
    seconds: float     # median over the profiled calls
    module: str = ""   # the torch module it maps to (module_name), filled in when matched

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "kernel": self.kernel, "ms": self.seconds * 1e3,
                "module": self.module}


# --------------------------------------------------------------------------------------------- ONNX Runtime

@dataclass
class OrtRunner:
    session: object
    path: Path
    profiling: bool
    meta: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor):
        return self.session.run(None, {"input": x.numpy()})[0]

    def node_times(self, skip_runs: int = 1) -> list[NodeTime]:
        """Ends profiling and returns each node's median kernel time over the profiled runs after the first
        `skip_runs` (the first includes one-time work). Only with profiling=True."""
        if not self.profiling:
            raise RuntimeError("OrtRunner.node_times needs a session made with profiling=True")
        trace = Path(self.session.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink(missing_ok=True)
        runs, per_node, info = -1, {}, {}
        for e in events:
            if e.get("cat") == "Session" and e.get("name") == "model_run":
                runs += 1
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            name = e["name"][: -len("_kernel_time")]
            per_node.setdefault(name, []).append((e.get("ts", 0), e["dur"] * 1e-6))
            args = e.get("args", {})
            info[name] = (args.get("op_name", "?"), args.get("provider", "?"))
        out = []
        for name, samples in per_node.items():
            samples.sort()
            kept = [d for _, d in samples[skip_runs:]] or [d for _, d in samples]
            out.append(NodeTime(name, info[name][0], info[name][1], statistics.median(kept)))
        return out


def ort_session(path: Path, threads: int, profiling: bool = False) -> OrtRunner:
    _need("onnxruntime")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profiling:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(path).parent / f"ort-profile-{os.getpid()}")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    meta = {"ort_version": ort.__version__, "contender_isa": isa.ort_path(int8="-qdq" in Path(path).name)}
    return OrtRunner(session, Path(path), profiling, meta)


# --------------------------------------------------------------------------------------------- OpenVINO

@dataclass
class OpenVinoRunner:
    compiled: object
    request: object
    profiling: bool
    path: Path | None = None
    meta: dict = field(default_factory=dict)
    _samples: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor):
        return self.request.infer([x.numpy()], share_inputs=True)[0]

    def record(self) -> None:
        """Keeps the per-node times of the last inference (PERF_COUNT reports the last call only)."""
        for p in self.request.get_profiling_info():
            if p.status.name != "EXECUTED":
                continue
            self._samples.setdefault(p.node_name, (p.node_type, p.exec_type, []))[2].append(
                p.real_time.total_seconds())

    def node_times(self) -> list[NodeTime]:
        return [NodeTime(name, kind, kernel, statistics.median(times))
                for name, (kind, kernel, times) in self._samples.items()]


# Every compiled model stays alive until the process ends. OpenVINO installs an alternate signal stack on the
# calling thread while it runs; after some compiled models were freed, the next CPUID the avx2only shim had to
# emulate (its SIGSEGV handler runs on the alternate stack, SA_ONSTACK) killed the process outright: the kernel
# could not deliver the signal. Seen with OpenVINO 2026.4; never freeing them avoided it.
_KEEP_ALIVE: list = []


def openvino_model(path: Path, threads: int, profiling: bool = False) -> OpenVinoRunner:
    _need("openvino")
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              # f32 for the non-quantized parts: by default OpenVINO runs fp32 in bf16 on CPUs with AVX512_BF16,
              # which the AVX2 laptop does not have (and under ONEDNN_MAX_CPU_ISA=AVX2 the bf16 default fails)
              "INFERENCE_PRECISION_HINT": "f32"}
    if profiling:
        config["PERF_COUNT"] = True
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    _KEEP_ALIVE.append(compiled)
    meta = {"ov_version": ov.get_version(), "contender_isa": isa.openvino_path(compiled)}
    return OpenVinoRunner(compiled, compiled.create_infer_request(), profiling, Path(path), meta)


# --------------------------------------------------------------------------------------------- PyTorch

def torch_int8(model: nn.Module, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """PyTorch's own static int8: FX prepare_fx / convert_fx, x86 qconfig and engine (PT2E's
    X86InductorQuantizer moved to torchao and is not in torch 2.13)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calibration[0],))
        with torch.no_grad():
            for batch in calibration:
                prepared(batch)
        return convert_fx(prepared).eval()


def torch_compiled(model: nn.Module, example: torch.Tensor, frozen: bool) -> Callable:
    """torch.compile, default mode; frozen: with torch._inductor.config.freezing = True (weights folded as
    constants, what CPU inference guides recommend). The setting is read when the graph compiles, at the
    first call, which happens here (under no_grad, as the timed calls run)."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model)
    previous = inductor_config.freezing
    inductor_config.freezing = frozen
    try:
        with torch.no_grad():
            compiled(example)
    finally:
        inductor_config.freezing = previous
    return compiled

"""Per-layer int8 conv / GEMM kernels: edgeopt against OpenVINO's int8 node, layer by layer.

Each layer shape (taken from ResNet-18/50, MobileNetV2, the VGG audio CNN) becomes a one-conv QDQ ONNX model
(u8 activations, per-channel s8 weights, ReLU, u8 output: what a conv between two quantized layers does);
OpenVINO runs it with PERF_COUNT and its Convolution (or FullyConnected) node's time is read per request.
edgeopt runs the same shape through `_C.qconv2d` / `_C.qlinear` on u8 NHWC input with u8 output (the f32
output for the Linear heads), called directly so the figure is the kernel's, not a module's. The int8 chain
ceiling (`_C.measure_ceiling("s8_madd")`) is measured in the same worker, before and after its layers.

Each contender runs in its own process (a runtime's spinning threads would slow the other), alternating
OpenVINO / edgeopt (and an older edgeopt build given by --before) per thread count for --rounds rounds; the figure per layer is the median of the rounds'
medians. Run it under the avx2only shim (LD_PRELOAD=/tmp/avx2only/avx2only.so) so OpenVINO picks its AVX2
kernels, and under /work/tools/quiet:

    LD_PRELOAD=/tmp/avx2only/avx2only.so python bench/kernels/conv_layers.py [--threads 1,2] [--only a,b]

--profile NAME [--calls N] runs one layer's edgeopt call N times without timing (for callgrind / perf).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Layer:
    name: str
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    pad: int = 0
    h: int = 1
    w: int = 1
    linear: bool = False  # a batch-1 Linear head: cin -> cout features, f32 output

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.linear:
            return 1, 1
        return ((self.h + 2 * self.pad - self.k) // self.stride + 1, (self.w + 2 * self.pad - self.k) // self.stride + 1)

    @property
    def macs(self) -> int:
        oh, ow = self.out_hw
        return oh * ow * self.cout * self.cin * self.k * self.k


def conv(name, cin, cout, k, stride, h, w=None):
    return Layer(name, cin, cout, k, stride, k // 2, h, w or h)


LAYERS = [
    conv("r18.stem7x7s2", 3, 64, 7, 2, 224),
    conv("r18.l1.3x3", 64, 64, 3, 1, 56),
    conv("r18.l2.3x3s2", 64, 128, 3, 2, 56),
    conv("r18.l2.3x3", 128, 128, 3, 1, 28),
    conv("r18.l2.ds1x1s2", 64, 128, 1, 2, 56),
    conv("r18.l3.3x3s2", 128, 256, 3, 2, 28),
    conv("r18.l3.3x3", 256, 256, 3, 1, 14),
    conv("r18.l3.ds1x1s2", 128, 256, 1, 2, 28),
    conv("r18.l4.3x3s2", 256, 512, 3, 2, 14),
    conv("r18.l4.3x3", 512, 512, 3, 1, 7),
    conv("r18.l4.ds1x1s2", 256, 512, 1, 2, 14),
    conv("r50.l1.1x1in", 256, 64, 1, 1, 56),
    conv("r50.l1.1x1out", 64, 256, 1, 1, 56),
    conv("r50.l2.ds1x1s2", 256, 512, 1, 2, 56),
    conv("mnv2.stem3x3s2", 3, 32, 3, 2, 224),
    conv("mnv2.pw16-96@112", 16, 96, 1, 1, 112),
    conv("mnv2.pw96-24@56", 96, 24, 1, 1, 56),
    conv("mnv2.pw144-24@56", 144, 24, 1, 1, 56),
    conv("mnv2.pw32-192@28", 32, 192, 1, 1, 28),
    conv("mnv2.pw384-64@14", 384, 64, 1, 1, 14),
    conv("mnv2.pw960-160@7", 960, 160, 1, 1, 7),
    conv("mnv2.pw320-1280@7", 320, 1280, 1, 1, 7),
    conv("audio.c1.1ch", 1, 32, 3, 1, 64, 128),
    conv("audio.c2", 32, 64, 3, 1, 32, 64),
    Layer("r18.fc", 512, 1000, linear=True),
    Layer("r50.fc", 2048, 1000, linear=True),
    Layer("mnv2.fc", 1280, 1000, linear=True),
]
BY_NAME = {layer.name: layer for layer in LAYERS}

X_SCALE, X_ZP, Y_SCALE, Y_ZP = 0.02, 128, 0.05, 0


def weights(layer: Layer):
    """int8 weights in [-63, 63] (edgeopt's range; OpenVINO gets the same values), per-channel scales, bias."""
    rng = np.random.default_rng(zlib.crc32(layer.name.encode()))
    shape = (layer.cout, layer.cin) if layer.linear else (layer.cout, layer.cin, layer.k, layer.k)
    w = rng.integers(-63, 64, shape).astype(np.int8)
    scale = (rng.uniform(0.5, 1.5, layer.cout) / (63 * np.sqrt(w[0].size) * X_SCALE * 40)).astype(np.float32)
    bias = rng.normal(0, 0.1, layer.cout).astype(np.float32)
    return w, scale, bias


def input_u8(layer: Layer) -> np.ndarray:
    rng = np.random.default_rng(1)
    shape = (1, layer.cin) if layer.linear else (1, layer.h, layer.w, layer.cin)
    return rng.integers(0, 256, shape).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ OpenVINO

def onnx_model(layer: Layer):
    from onnx import TensorProto, helper, numpy_helper

    w, scale, bias = weights(layer)
    # MatMul takes (cin, cout) weights, quantized along axis 1 (OpenVINO cannot convert Gemm over a dequantized B)
    w_onnx = np.ascontiguousarray(w.T) if layer.linear else w
    init = [numpy_helper.from_array(w_onnx, "w_q"), numpy_helper.from_array(scale, "w_s"),
            numpy_helper.from_array(np.zeros(layer.cout, np.int8), "w_zp"),
            numpy_helper.from_array(np.array(X_SCALE, np.float32), "x_s"),
            numpy_helper.from_array(np.array(X_ZP, np.uint8), "x_zp"),
            numpy_helper.from_array(np.array(Y_SCALE, np.float32), "y_s"),
            numpy_helper.from_array(np.array(Y_ZP, np.uint8), "y_zp"), numpy_helper.from_array(bias, "b")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], axis=1 if layer.linear else 0)]
    if layer.linear:
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="layer"),
                  helper.make_node("Add", ["mm", "b"], ["output"])]
        in_shape, out = [1, layer.cin], helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, layer.cout])
    else:
        p = layer.pad
        nodes += [helper.make_node("Conv", ["xd", "wd", "b"], ["c"], kernel_shape=[layer.k] * 2,
                                   strides=[layer.stride] * 2, pads=[p] * 4, name="layer"),
                  helper.make_node("Relu", ["c"], ["r"]),
                  helper.make_node("QuantizeLinear", ["r", "y_s", "y_zp"], ["output"])]
        in_shape = [1, layer.cin, layer.h, layer.w]
        out = helper.make_tensor_value_info("output", TensorProto.UINT8, [1, layer.cout, *layer.out_hw])
    outputs = [out]
    if not layer.linear and layer.k == 1 and layer.stride > 1:
        # A strided 1x1 conv alone on the input becomes a float subsampling Pooling + a float 1x1 conv in
        # OpenVINO (its strides optimization); in ResNet the 3x3 strided conv beside it on the same input
        # keeps it a strided int8 conv (jit_avx2_1x1_I8). Same here: only the node named `layer` is timed.
        sib = np.ones((layer.cout, layer.cin, 3, 3), np.int8)
        init.append(numpy_helper.from_array(sib, "sib_q"))
        nodes += [helper.make_node("DequantizeLinear", ["sib_q", "w_s", "w_zp"], ["sib_d"], axis=0),
                  helper.make_node("Conv", ["xd", "sib_d", "b"], ["sib_c"], kernel_shape=[3, 3],
                                   strides=[layer.stride] * 2, pads=[1] * 4, name="sibling"),
                  helper.make_node("QuantizeLinear", ["sib_c", "y_s", "y_zp"], ["sibling_out"])]
        outputs.append(helper.make_tensor_value_info("sibling_out", TensorProto.UINT8, [1, layer.cout, *layer.out_hw]))
    graph = helper.make_graph(nodes, layer.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              outputs, init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def time_openvino(layers: list[Layer], threads: int, reps: int) -> dict:
    import onnx
    import openvino as ov

    core = ov.Core()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layer in layers:
            path = Path(tmp) / f"{layer.name}.onnx"
            onnx.save(onnx_model(layer), str(path))
            compiled = core.compile_model(str(path), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
                "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            xu8 = input_u8(layer)
            x = ((xu8.astype(np.float32) - X_ZP) * X_SCALE)
            x = x if layer.linear else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            for _ in range(max(10, reps // 10)):
                request.infer([x])
            node_us, total_us, kinds = [], [], set()
            for _ in range(reps):
                t0 = time.perf_counter()
                request.infer([x])
                total_us.append((time.perf_counter() - t0) * 1e6)
                t = 0.0
                for info in request.get_profiling_info():
                    if info.node_type in ("Convolution", "FullyConnected") and info.node_name.startswith("layer"):
                        t += info.real_time.total_seconds() * 1e6
                        kinds.add(info.exec_type)
                node_us.append(t)
            results[layer.name] = {"us": statistics.median(node_us), "total_us": statistics.median(total_us),
                                   "kernel": ",".join(sorted(kinds))}
    return results


# ------------------------------------------------------------------------------------------------- edgeopt

def edgeopt_call(layer: Layer, threads: int):
    """A no-argument function running the layer once, on preallocated arrays."""
    from edgeopt._native import _C

    w, scale, bias = weights(layer)
    x = input_u8(layer)
    if layer.linear:
        packed = _C.qs8_pack(w, scale, bias)
        out = np.empty((1, layer.cout), np.float32)
        return lambda: _C.qlinear(x, packed, out, False, X_SCALE, X_ZP, num_threads=threads)
    packed = _C.qconv_pack(np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(layer.cout, -1)), scale, bias, 1)
    oh, ow = layer.out_hw
    out = np.empty((1, oh, ow, layer.cout), np.uint8)
    k, s, p = (layer.k,) * 2, (layer.stride,) * 2, (layer.pad,) * 2
    return lambda: _C.qconv2d(x, packed, out, k, s, p, (1, 1), 1, False, X_SCALE, X_ZP, 0.0, float("inf"),
                              Y_SCALE, Y_ZP, threads)


def ceiling_gmacs(threads: int) -> float:
    from edgeopt._native import _C

    return max(u / s for u, s in (_C.measure_ceiling("s8_madd", 0.2, threads) for _ in range(3))) / 1e9


def time_edgeopt(layers: list[Layer], threads: int, reps: int) -> dict:
    from edgeopt._native import _C

    results = {"_ceiling_before": ceiling_gmacs(threads), "_isa": _C.isa()}
    for layer in layers:
        call = edgeopt_call(layer, threads)
        for _ in range(max(10, reps // 10)):
            call()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e6)
        results[layer.name] = {"us": statistics.median(times)}
    results["_ceiling_after"] = ceiling_gmacs(threads)
    return results


# ---------------------------------------------------------------------------------------------------- main

def worker(args) -> None:
    layers = [BY_NAME[n] for n in args.layers.split(",")]
    fn = time_openvino if args.worker == "openvino" else time_edgeopt
    print(json.dumps(fn(layers, args.threads, args.reps)))


def run_worker(impl: str, threads: int, layers: list[Layer], reps: int, python: str = sys.executable) -> dict:
    cmd = [python, __file__, "--worker", impl, "--threads", str(threads), "--reps", str(reps),
           "--layers", ",".join(layer.name for layer in layers)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(layers: list[Layer], threads: int, ov: list[dict], eo: list[dict], before: list[dict]) -> list[str]:
    probes = [r[k] for r in eo + before for k in ("_ceiling_before", "_ceiling_after")]
    ceil = statistics.median(probes)
    lines = [f"### {threads} thread{'s' if threads > 1 else ''} (int8 chain ceiling {ceil:.1f} GMAC/s, median of "
             f"{len(probes)} probes, range {min(probes):.1f}-{max(probes):.1f})", ""]
    head = "| layer | MMAC | OpenVINO us (kernel) | OV % ceil |"
    rule = "| --- | ---: | ---: | ---: |"
    if before:
        head += " before us | before % ceil | ratio before |"
        rule += " ---: | ---: | ---: |"
    head += " edgeopt us | GMAC/s | % ceil | ratio OV/eo |"
    rule += " ---: | ---: | ---: | ---: |"
    lines += [head, rule]
    pct = lambda macs, us: 100 * macs / us / 1e3 / ceil  # noqa: E731
    for layer in layers:
        o = statistics.median(r[layer.name]["us"] for r in ov)
        e = statistics.median(r[layer.name]["us"] for r in eo)
        row = f"| {layer.name} | {layer.macs / 1e6:.1f} | {o:.1f} ({ov[0][layer.name]['kernel']}) | {pct(layer.macs, o):.0f}% |"
        if before:
            b = statistics.median(r[layer.name]["us"] for r in before)
            row += f" {b:.1f} | {pct(layer.macs, b):.0f}% | {o / b:.2f}x |"
        row += f" {e:.1f} | {layer.macs / e / 1e3:.1f} | {pct(layer.macs, e):.0f}% | {o / e:.2f}x |"
        lines.append(row)
    return lines


def profile(name: str, threads: int, calls: int) -> None:
    call = edgeopt_call(BY_NAME[name], threads)
    for _ in range(calls):
        call()
    print(f"{name}: {calls} calls")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", default="", help="comma-separated layer names (or name prefixes)")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the tables and raw results here")
    ap.add_argument("--before", default="", help="python of another edgeopt build (e.g. a venv with main installed): "
                    "timed in the same rounds as a third contender")
    ap.add_argument("--profile", default="", help="run this layer's edgeopt call in a loop (no timing)")
    ap.add_argument("--calls", type=int, default=1000, help="with --profile: calls to make")
    ap.add_argument("--worker", choices=["openvino", "edgeopt"], help=argparse.SUPPRESS)
    ap.add_argument("--layers", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        return worker(args)
    if args.profile:
        return profile(args.profile, int(args.threads.split(",")[0]), args.calls)
    prefixes = [p for p in args.only.split(",") if p]
    layers = [layer for layer in LAYERS if not prefixes or any(layer.name.startswith(p) for p in prefixes)]
    shim = "avx2only" in os.environ.get("LD_PRELOAD", "")
    head = [f"# int8 conv / GEMM layers, edgeopt vs OpenVINO ({time.strftime('%Y-%m-%d %H:%M')})", "",
            f"AVX2 path: {'avx2only shim (CPUID faulting)' if shim else 'NOT under the avx2only shim'}; "
            f"load average before {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.reps} reps per layer; "
            "batch 1; u8 NHWC in, u8 out (Linear: f32 out)", ""]
    raw, lines = {}, list(head)
    for threads in [int(t) for t in args.threads.split(",")]:
        ov, eo, before = [], [], []
        for _ in range(args.rounds):
            ov.append(run_worker("openvino", threads, layers, args.reps))
            if args.before:
                before.append(run_worker("edgeopt", threads, layers, args.reps, args.before))
            eo.append(run_worker("edgeopt", threads, layers, args.reps))
        raw[threads] = {"openvino": ov, "edgeopt": eo, "before": before}
        lines += table(layers, threads, ov, eo, before) + [""]
        print("\n".join(lines[-len(layers) - 6:]), flush=True)
    lines.append(f"load average after {os.getloadavg()[0]:.2f}; edgeopt ISA {raw[threads]['edgeopt'][0]['_isa']}")
    print(lines[-1])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text("\n".join(lines) + "\n")
        (args.out / "raw.json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()

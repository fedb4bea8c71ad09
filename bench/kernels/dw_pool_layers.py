"""Depthwise conv, max pool and global average pool, layer by layer: edgeopt against OpenVINO int8.

Every layer is a shape from a model in edgeopt/models (MobileNetV2's depthwise convs, 3x3 and the same shapes
at 5x5; ResNet-18/50's stem max pool; the VGG audio CNN's 2x2 pools; the global average pools in front of
each model's head). For each layer and thread count, in one process:

  OpenVINO  a single-layer QDQ ONNX model (u8 activations, per-channel s8 weights; a 1x1 consumer conv after
            it so the layer writes u8, as inside a model), compiled with PERF_COUNT: the layer's own node time
            (`get_profiling_info()` real_time), median over the timed inferences.
  edgeopt   the native call on u8 NHWC input writing u8 (the op a quantized model runs), timed per call;
            and the nn.Module forward around it ("module"), which adds the Python call path.

Both run in long alternating blocks (first calls of each block untimed: thread pools spin after a call),
same thread count, under whatever AVX2 mechanism edgeopt.perf.isa finds (the avx2only shim when
LD_PRELOAD has it). Ceilings are measured in the same run: the int8 chain (vpmaddubsw+vpmaddwd+vpaddd,
MAC/s) for depthwise, streaming read bandwidth (bytes/s, far larger than the caches) for pools.

  LD_PRELOAD=/tmp/avx2only/avx2only.so python bench/kernels/dw_pool_layers.py [--threads 1 2] [--only dw5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.perf import isa  # noqa: E402  (light: no torch)

isa.steer()  # the per-library switches, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgeopt  # noqa: E402
from edgeopt._native import _C  # noqa: E402


@dataclass
class Layer:
    name: str
    kind: str          # "dw", "maxpool", "gap"
    channels: int
    size: tuple[int, int]  # input H, W
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    model: str = ""

    def out_size(self) -> tuple[int, int]:
        if self.kind == "gap":
            return (1, 1)
        return tuple((s + 2 * self.pad - self.kernel) // self.stride + 1 for s in self.size)

    def work(self) -> float:
        """MACs (depthwise) or bytes moved (pools: u8 input read + output written)."""
        oh, ow = self.out_size()
        if self.kind == "dw":
            return float(oh * ow * self.channels * self.kernel * self.kernel)
        return float(self.size[0] * self.size[1] * self.channels + oh * ow * self.channels)


# MobileNetV2 (224 input): (channels, input size, stride) of each distinct depthwise conv
MOBILENETV2_DW = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2),
                  (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]


def layers() -> list[Layer]:
    out = []
    for k in (3, 5):
        for c, s, st in MOBILENETV2_DW:
            out.append(Layer(f"dw{k}x{k} {c}@{s} s{st}", "dw", c, (s, s), k, st, k // 2, "mobilenetv2"))
    out.append(Layer("maxpool 3x3 s2 64@112", "maxpool", 64, (112, 112), 3, 2, 1, "resnet18/50"))
    for c, (h, w) in [(32, (64, 128)), (64, (32, 64)), (128, (16, 32)), (256, (8, 16))]:
        out.append(Layer(f"maxpool 2x2 s2 {c}@{h}x{w}", "maxpool", c, (h, w), 2, 2, 0, "vgg_audio"))
    for c, (h, w), model in [(512, (7, 7), "resnet18"), (2048, (7, 7), "resnet50"), (1280, (7, 7), "mobilenetv2"),
                             (256, (4, 8), "vgg_audio")]:
        out.append(Layer(f"gap {c}@{h}x{w}", "gap", c, (h, w), model=model))
    return out


# Quantization parameters of the synthetic layers (any valid values time the same).
X_SCALE, X_ZP = 0.02, 128
Y_SCALE, Y_ZP = 0.03, 0


# ----------------------------------------------------------------------------------------------- OpenVINO

def qdq_onnx(layer: Layer, w_q: np.ndarray | None, w_scale: np.ndarray | None, bias: np.ndarray | None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper as nh

    c = layer.channels
    # a pool commutes with quantization: OpenVINO (like edgeopt) pools u8 as it is when the parameters match
    y_scale, y_zp = (X_SCALE, X_ZP) if layer.kind == "maxpool" else (Y_SCALE, Y_ZP)
    inits = [nh.from_array(np.array(X_SCALE, np.float32), "x_s"), nh.from_array(np.array(X_ZP, np.uint8), "x_zp"),
             nh.from_array(np.array(y_scale, np.float32), "y_s"), nh.from_array(np.array(y_zp, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_zp"], ["xd"])]
    if layer.kind == "dw":
        k, p = layer.kernel, layer.pad
        inits += [nh.from_array(w_q.reshape(c, 1, k, k), "w_q"), nh.from_array(w_scale, "w_s"),
                  nh.from_array(np.zeros(c, np.int8), "w_zp"), nh.from_array(bias, "b"),
                  nh.from_array(np.array(0.0, np.float32), "lo"), nh.from_array(np.array(6.0, np.float32), "hi")]
        nodes += [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], axis=0),
                  helper.make_node("Conv", ["xd", "wd", "b"], ["y0"], group=c, kernel_shape=[k, k],
                                   strides=[layer.stride] * 2, pads=[p] * 4, name="target"),
                  helper.make_node("Clip", ["y0", "lo", "hi"], ["y1"])]
    elif layer.kind == "maxpool":
        nodes.append(helper.make_node("MaxPool", ["xd"], ["y1"], kernel_shape=[layer.kernel] * 2,
                                      strides=[layer.stride] * 2, pads=[layer.pad] * 4, name="target"))
    else:
        nodes.append(helper.make_node("GlobalAveragePool", ["xd"], ["y1"], name="target"))
    # a small quantized consumer, so the layer under test writes u8 as it does inside a model
    rng = np.random.default_rng(1)
    inits += [nh.from_array(rng.integers(-127, 128, (16, c, 1, 1)).astype(np.int8), "c_q"),
              nh.from_array(np.full(16, 0.01, np.float32), "c_s"), nh.from_array(np.zeros(16, np.int8), "c_zp")]
    nodes += [helper.make_node("QuantizeLinear", ["y1", "y_s", "y_zp"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["yd"]),
              helper.make_node("DequantizeLinear", ["c_q", "c_s", "c_zp"], ["cw"], axis=0),
              helper.make_node("Conv", ["yd", "cw"], ["out"], kernel_shape=[1, 1], name="consumer")]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [1, c, *layer.size])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


class OpenVinoLayer:
    def __init__(self, layer: Layer, model, threads: int, tmp: Path):
        import onnx
        import openvino as ov

        path = tmp / "layer.onnx"
        onnx.save(model, str(path))
        self.compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.x = np.random.default_rng(2).random((1, layer.channels, *layer.size), dtype=np.float32)
        self.request.infer([self.x])
        self.node, self.exec_type = None, None
        for info in self.request.get_profiling_info():
            if info.node_name.startswith("target") and info.status == info.Status.EXECUTED:
                self.node, self.exec_type = info.node_name, f"{info.exec_type} ({info.node_type})"
        if self.node is None:
            raise RuntimeError(f"OpenVINO ran no node for {layer.name}: " + ", ".join(
                f"{i.node_name}:{i.node_type}" for i in self.request.get_profiling_info()))

    def run(self, n: int, skip: int) -> list[float]:
        times = []
        for i in range(n + skip):
            self.request.infer([self.x])
            if i >= skip:
                for info in self.request.get_profiling_info():
                    if info.node_name == self.node:
                        times.append(info.real_time.total_seconds())
        return times


# ------------------------------------------------------------------------------------------------ edgeopt

class EdgeoptLayer:
    """The native call and the module around it, on u8 NHWC input."""

    def __init__(self, layer: Layer, w_q, w_scale, bias, threads: int):
        self.layer = layer
        h, w = layer.size
        c = layer.channels
        rng = np.random.default_rng(3)
        self.x = rng.integers(0, 256, (1, h, w, c), dtype=np.uint8)
        oh, ow = layer.out_size()
        self.threads = threads
        k, s, p = (layer.kernel,) * 2, (layer.stride,) * 2, (layer.pad,) * 2
        x_t = torch.from_numpy(self.x).permute(0, 3, 1, 2)  # u8, channels_last
        self.impl = "native"
        if layer.kind == "dw":
            self.out = np.empty((1, oh, ow, c), np.uint8)
            self.packed = _C.qdw_pack(np.ascontiguousarray(w_q), w_scale, bias)
            self.native = lambda: _C.qconv2d(self.x, self.packed, self.out, k, s, p, (1, 1), c, False, X_SCALE, X_ZP,
                                             0.0, 6.0, Y_SCALE, Y_ZP, threads)
            conv = torch.nn.Conv2d(c, c, layer.kernel, layer.stride, layer.pad, groups=c)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w_q.astype(np.float32) * w_scale[:, None]).reshape(c, 1, *k))
                conv.bias.copy_(torch.from_numpy(bias))
            module = edgeopt.nn.QuantConv2d.from_float(conv, input_range=(-X_SCALE * X_ZP, X_SCALE * (255 - X_ZP)),
                                                       activation=(0.0, 6.0))
            module.set_output_quant(Y_SCALE, Y_ZP)
            self.module = lambda: module(x_t)
        elif layer.kind == "maxpool":
            self.out = np.empty((1, oh, ow, c), np.uint8)
            self.native = lambda: _C.maxpool2d(self.x, self.out, k, s, p, (1, 1), threads)
            module = edgeopt.nn.MaxPool2d(layer.kernel, layer.stride, layer.pad)
            self.module = lambda: module(x_t)
        else:
            gap = getattr(_C, "global_avgpool", None)
            if gap is not None:
                self.out = np.empty((1, c), np.uint8)
                self.native = lambda: gap(self.x, self.out, X_SCALE, X_ZP, Y_SCALE, Y_ZP, threads)
                module = edgeopt.nn.GlobalAvgPool2d()
                module.set_input_quant(X_SCALE, X_ZP)
                module.set_output_quant(Y_SCALE, Y_ZP)
                self.module = lambda: module(x_t)
            else:  # what runs today: the last conv writes f32 and torch pools it
                self.impl = "torch f32 adaptive_avg_pool2d (no native op)"
                xf = torch.rand(1, c, h, w).contiguous(memory_format=torch.channels_last)
                self.native = lambda: torch.nn.functional.adaptive_avg_pool2d(xf, (1, 1))
                self.module = self.native

    def run(self, fn, n: int, skip: int) -> list[float]:
        edgeopt.set_num_threads(self.threads)
        times = []
        for i in range(n + skip):
            t0 = time.perf_counter()
            fn()
            t1 = time.perf_counter()
            if i >= skip:
                times.append(t1 - t0)
        return times


# -------------------------------------------------------------------------------------------------- main

def ceilings(threads: int) -> dict[str, float]:
    macs, sec = _C.measure_ceiling("s8_madd", 0.3, threads)
    read, rsec = _C.measure_ceiling("read", 0.3, threads)
    return {"int8_gmacs": macs / sec / 1e9, "read_gbs": read / rsec / 1e9}


def measure(layer: Layer, threads: int, calls: int, rounds: int, tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    w_q = w_scale = bias = None
    if layer.kind == "dw":
        w_q = rng.integers(-127, 128, (layer.channels, layer.kernel ** 2)).astype(np.int8)
        w_scale = ((rng.random(layer.channels) + 0.5) * 0.01).astype(np.float32)
        bias = rng.standard_normal(layer.channels).astype(np.float32)
    ov_layer = OpenVinoLayer(layer, qdq_onnx(layer, w_q, w_scale, bias), threads, tmp)
    eo = EdgeoptLayer(layer, w_q, w_scale, bias, threads)
    ov_t, eo_t, mod_t = [], [], []
    skip = max(3, calls // 10)
    torch.set_num_threads(threads)
    with torch.no_grad():
        for _ in range(rounds):
            ov_t += ov_layer.run(calls, skip)
            eo_t += eo.run(eo.native, calls, skip)
            mod_t += eo.run(eo.module, calls // 2, skip)
    return {"layer": layer.name, "kind": layer.kind, "model": layer.model, "threads": threads,
            "work": layer.work(), "ov_ms": statistics.median(ov_t) * 1e3, "ov_kernel": ov_layer.exec_type,
            "edgeopt_ms": statistics.median(eo_t) * 1e3, "module_ms": statistics.median(mod_t) * 1e3,
            "edgeopt_impl": eo.impl}


def table(results: list[dict], ceil: dict[int, dict]) -> str:
    lines = ["| layer | thr | edgeopt ms | module ms | OpenVINO ms (kernel) | ratio OV/edgeopt | edgeopt rate "
             "| % ceiling | OV % ceiling |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = ceil[r["threads"]]
        if r["kind"] == "dw":
            rate = r["work"] / r["edgeopt_ms"] / 1e6
            unit, top = "GMAC/s", c["int8_gmacs"]
            ov_rate = r["work"] / r["ov_ms"] / 1e6
        else:
            rate = r["work"] / r["edgeopt_ms"] / 1e6
            unit, top = "GB/s", c["read_gbs"]
            ov_rate = r["work"] / r["ov_ms"] / 1e6
        note = "" if r["edgeopt_impl"] == "native" else f" [{r['edgeopt_impl']}]"
        lines.append(f"| {r['layer']}{note} | {r['threads']} | {r['edgeopt_ms']:.4f} | {r['module_ms']:.4f} "
                     f"| {r['ov_ms']:.4f} ({r['ov_kernel']}) | {r['ov_ms'] / r['edgeopt_ms']:.2f}x "
                     f"| {rate:.1f} {unit} | {100 * rate / top:.0f}% | {100 * ov_rate / top:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", default="", help="run the layers whose name contains this text")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per contender")
    parser.add_argument("--out", type=Path, default=None, help="write results.json and table.md here")
    args = parser.parse_args()
    meta = isa.setup()
    import openvino as ov

    meta["openvino"] = ov.get_version()
    print("# " + "; ".join(f"{k}={v}" for k, v in meta.items()), flush=True)
    print(f"# loadavg at start: {os.getloadavg()[0]:.2f}", flush=True)
    chosen = [layer for layer in layers() if args.only in layer.name]
    ceil = {t: ceilings(t) for t in args.threads}
    for t, c in ceil.items():
        print(f"# ceilings, {t} thread(s): int8 chain {c['int8_gmacs']:.1f} GMAC/s, read {c['read_gbs']:.1f} GB/s",
              flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in chosen:
            for t in args.threads:
                r = measure(layer, t, args.calls, args.rounds, Path(tmp))
                results.append(r)
                print(f"  {r['layer']} t={t}: edgeopt {r['edgeopt_ms']:.4f} ms (module {r['module_ms']:.4f}), "
                      f"OpenVINO {r['ov_ms']:.4f} ms -> {r['ov_ms'] / r['edgeopt_ms']:.2f}x", flush=True)
    print(f"# loadavg at end: {os.getloadavg()[0]:.2f}")
    md = table(results, ceil)
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"meta": meta, "ceilings": ceil, "results": results},
                                                          indent=1))
        (args.out / "table.md").write_text(md + "\n")


if __name__ == "__main__":
    main()

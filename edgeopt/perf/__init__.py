"""edgeopt.perf: the one timing and reporting library of the profiler, the study and the benchmarks.

- `isa`: the AVX2 path (avx2only shim or per-library switches) and what each contender really ran;
- `timing`: warm-up, alternating blocks, medians and p95, the load around a run;
- `ceilings`: int8 chain, fp32 FMA and read bandwidth, measured in the same run;
- `cost`: MACs and bytes moved per layer (and per model);
- `peers`: ONNX exports, ONNX Runtime, OpenVINO, PyTorch int8 and torch.compile, with their per-node profilers;
- `report`: Markdown / terminal tables and JSON.

Importing this package is light (nothing native, no peer runtime): `edgeopt.perf.isa.steer()` must be able to
run before torch is imported.
"""

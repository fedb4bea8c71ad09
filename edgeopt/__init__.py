"""edgeopt: fast deep-learning inference on AVX2 laptops.

Importing edgeopt is light: the native core and torch ops load with the modules that use them.
"""
__version__ = "0.1.0"

import os as _os
import sys as _sys

# PyTorch's OpenMP threads keep spinning for a while after each torch op (libgomp's default). In a model
# that alternates torch and edgeopt layers, that spin occupies the core edgeopt's worker needs: measured
# 1.31x the sum of the parts (64x2048 layers, 2 threads); with GOMP_SPINCOUNT=10000, 1.06x and torch's own
# layers as fast as before. libgomp reads this once, when torch loads, so it can only be set here if
# edgeopt is imported before torch; an explicit setting by the user always wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def __getattr__(name):
    # Lazy so `edgeopt.models` / data loaders import without building anything native.
    if name in ("set_num_threads", "get_num_threads"):
        from edgeopt import threads

        return getattr(threads, name)
    if name in ("isa", "set_isa", "cpu_info"):
        from edgeopt._native import _C

        return getattr(_C, name)
    if name in ("nn", "low_rank", "quantize", "profile", "perf"):  # low_rank, quantize, profile: callable modules
        import importlib

        return importlib.import_module(f"edgeopt.{name}")
    if name == "quantize_linear_layers":
        from edgeopt.quantize_linear import quantize_linear_layers

        return quantize_linear_layers
    if name in ("prune", "sparsify"):
        import importlib

        return importlib.import_module(f"edgeopt.{name}")
    if name in ("optimize", "Distill", "FineTune", "LowRank", "Prune", "PruneChannels", "Quantize"):
        import importlib

        pipeline = importlib.import_module("edgeopt.optimize")  # callable: edgeopt.optimize(model, steps, ...)
        return pipeline if name == "optimize" else getattr(pipeline, name)
    if name in ("Report", "LayerReport"):
        import importlib

        return getattr(importlib.import_module("edgeopt.passes.report"), name)
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")

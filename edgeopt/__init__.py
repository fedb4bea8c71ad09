"""edgeopt: fast deep-learning inference on AVX2 laptops.

Importing edgeopt is light: the native core and torch ops load with the modules that use them.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so `edgeopt.models` / data loaders import without building anything native.
    if name in ("set_num_threads", "get_num_threads"):
        from edgeopt import threads

        return getattr(threads, name)
    if name in ("isa", "set_isa", "cpu_info"):
        from edgeopt._native import _C

        return getattr(_C, name)
    if name in ("nn", "low_rank"):  # edgeopt.low_rank is a callable module: edgeopt.low_rank(model, ...)
        import importlib

        return importlib.import_module(f"edgeopt.{name}")
    if name == "quantize_linear_layers":
        from edgeopt.quantize_linear import quantize_linear_layers

        return quantize_linear_layers
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")

"""`edgeopt info`: what this machine is and which kernel path edgeopt runs on."""
from __future__ import annotations

import os
import platform


def collect() -> dict:
    import torch

    from edgeopt import __version__
    from edgeopt._native import _C
    from edgeopt.threads import get_num_threads

    cpu = _C.cpu_info()
    forced = os.environ.get("EDGEOPT_ISA")
    return {
        "cpu": cpu["brand"] or platform.processor() or "unknown",
        "cpu_avx2_fma_f16c": cpu["avx2"],
        "cpu_avx512f": cpu["avx512f"],
        "edgeopt_isa": _C.isa() + (f" (forced by EDGEOPT_ISA={forced})" if forced else " (auto)"),
        "edgeopt_threads": get_num_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "edgeopt": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run(args) -> int:
    for key, value in collect().items():
        print(f"{key:22s} {value}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="print the CPU, the ISA path edgeopt uses, threads and versions")
    p.set_defaults(run=run)

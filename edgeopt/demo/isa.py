"""Which instruction set the demo's models run on, and how they are kept on the target's AVX2 path.

The target laptop (Core i5-8259U) has AVX2 + FMA and no AVX-512. On a newer CPU, PyTorch, oneDNN and MKL
would pick AVX-512 kernels the laptop never runs, so the comparison would be about another machine. The
demo therefore starts its processes (stream, models) on the AVX2 path when the CPU reports AVX-512:

1. the avx2only shim (`--avx2-shim PATH`, ``$EDGEOPT_AVX2ONLY``, or ``/tmp/avx2only/avx2only.so`` where the
   development machines build it) via LD_PRELOAD: CPUID faulting makes every library see an AVX2 CPU;
2. where there is no shim, or the kernel or CPU has no CPUID faulting (the shim then exits with status 3),
   each library's own switch: ATEN_CPU_CAPABILITY (PyTorch's vectorised kernels), ONEDNN_MAX_CPU_ISA
   (oneDNN convolutions), MKL_ENABLE_INSTRUCTIONS (MKL); edgeopt has no AVX-512 path at all.

Each model process reports what it actually ran on (torch's CPU capability, edgeopt's kernel path) and
the page shows it next to the mechanism; `--isa native` turns the masking off.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

SHIM_ENV = "EDGEOPT_AVX2ONLY"
SHIM_DEV_PATH = "/tmp/avx2only/avx2only.so"
SHIM_NAME = "avx2only shim (CPUID faulting)"
SWITCHES = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SWITCHES_NAME = "per-library switches (" + ", ".join(f"{k}={v}" for k, v in SWITCHES.items()) + ")"


@dataclass(frozen=True)
class IsaPlan:
    mechanism: str  # what the page says
    env: dict  # environment for the demo's child processes


def cpu_has_avx512() -> bool:
    from edgeopt._native import _C

    return bool(_C.cpu_info()["avx512f"])


def shim_works(path: str) -> bool:
    """The shim loads and the machine has CPUID faulting (otherwise it exits with status 3)."""
    try:
        return subprocess.run([sys.executable, "-c", "pass"], env=dict(os.environ, LD_PRELOAD=path),
                              timeout=60, capture_output=True).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def plan(mode: str = "avx2", shim: str | None = None) -> IsaPlan:
    """How to start the child processes: `mode` "avx2" (mask where needed) or "native"."""
    if mode not in ("avx2", "native"):
        raise ValueError(f"isa mode must be 'avx2' or 'native', got {mode!r}")
    if "avx2only" in os.environ.get("LD_PRELOAD", ""):
        return IsaPlan(SHIM_NAME + ", preloaded by the caller", {})
    if mode == "native":
        return IsaPlan("native ISA (--isa native: no masking)", {})
    if not cpu_has_avx512():
        return IsaPlan("native (this CPU has no AVX-512: the AVX2 path is its own)", {})
    candidates = [shim] if shim else [os.environ.get(SHIM_ENV), SHIM_DEV_PATH]
    for path in filter(None, candidates):
        if os.path.isfile(path) and shim_works(path):
            preload = " ".join(filter(None, [path, os.environ.get("LD_PRELOAD")]))
            return IsaPlan(SHIM_NAME, {"LD_PRELOAD": preload})
    if shim:
        print(f"edgeopt demo: the avx2only shim {shim} does not load or this machine has no CPUID faulting; "
              "using the per-library switches", file=sys.stderr)
    return IsaPlan(SWITCHES_NAME, dict(SWITCHES))


def report(role: str) -> dict:
    """What this process runs on: called inside each model process."""
    import torch

    out = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "shim_active": "avx2only" in os.environ.get("LD_PRELOAD", "")}
    if role == "optimized":
        from edgeopt._native import _C

        out["edgeopt_isa"] = _C.isa()
        out["cpu_reports_avx512"] = bool(_C.cpu_info()["avx512f"])
    return out

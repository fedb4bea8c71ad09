"""Puts every contender on its AVX2 code path, and says how.

Import this module before torch. The preferred mechanism is ../shared/tools/avx2only (CPUID faulting,
LD_PRELOAD): every library then sees an AVX2-only CPU. Where the machine has no CPUID faulting (the shim
exits with status 3; AMD EPYC dev machines here), each library is steered by its own switch instead:
  ATEN_CPU_CAPABILITY=avx2        PyTorch's vectorized ATen kernels
  ONEDNN_MAX_CPU_ISA=AVX2         oneDNN (convolutions, some matmuls)
  FBGEMM_ENABLE_INSTRUCTIONS=AVX2 FBGEMM (PyTorch's int8 Linear and conv)
  MKL_ENABLE_INSTRUCTIONS=AVX2    MKL sgemm (nn.Linear fp32)
and, after torch loads, the AVX-512/VNNI flags in cpuinfo's table (libc10) are cleared, because parts of
FBGEMM ask cpuinfo directly rather than through its own switch. The metadata records which path each
contender reported; a contender that could not be steered is reported as such, never hidden.
"""
from __future__ import annotations

import ctypes
import os

ENV_SWITCHES = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
# pyperf workers get a scrubbed environment; these must be inherited explicitly.
INHERIT = ["LD_PRELOAD", "OMP_NUM_THREADS", "EDGEOPT_ISA", *ENV_SWITCHES]

# Offsets of the AVX-512 family in cpuinfo's `struct cpuinfo_x86_isa` as built into torch 2.13
# (read off fbgemmHasAvx512Support / fbgemmHasAvx512VnniSupport / fbgemmHasAvx512Bf16Support:
# avx512f 0x1d, dq/bw/vl 0x21-0x23, vnni 0x29, bf16 0x2a); 0x1d..0x2a holds only AVX-512 flags.
_CPUINFO_AVX512_RANGE = range(0x1D, 0x2B)
_CPUINFO_AVX2_OFFSET = 0x1C

for _key, _value in ENV_SWITCHES.items():
    os.environ.setdefault(_key, _value)


def _shim_active() -> bool:
    return "avx2only" in os.environ.get("LD_PRELOAD", "")


def _mask_cpuinfo() -> str:
    import torch

    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
    if not lib.cpuinfo_initialize():
        return "cpuinfo unavailable"
    isa = (ctypes.c_uint8 * 0x40).in_dll(lib, "cpuinfo_isa")
    if not isa[_CPUINFO_AVX2_OFFSET]:
        return "cpuinfo layout not recognised (avx2 flag not where expected); left alone"
    for off in _CPUINFO_AVX512_RANGE:
        isa[off] = 0
    return "cpuinfo AVX-512 flags cleared"


def setup() -> dict:
    """Call after `import torch`; returns metadata describing the path every contender is on."""
    import torch

    from edgeopt._native import _C

    meta = {"avx2_method": "avx2only shim (CPUID faulting)" if _shim_active() else "per-library switches"}
    if not _shim_active():
        meta["cpuinfo_mask"] = _mask_cpuinfo()
    meta["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    meta["torch_sees_avx512"] = str(bool(torch.cpu._is_avx512_supported()))
    meta["edgeopt_isa"] = _C.isa()
    meta["cpu_reports_avx512"] = str(_C.cpu_info()["avx512f"])
    meta["torch_threads"] = str(torch.get_num_threads())
    meta["torch"] = torch.__version__
    return meta

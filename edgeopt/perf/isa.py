"""The AVX2 path: put every contender on its AVX2 kernels, and say what each one really ran.

Performance claims are about the AVX2-only target laptop. On a newer machine two mechanisms exist:

1. The avx2only shim (``../shared/tools/avx2only``, ``LD_PRELOAD``): Linux CPUID faulting makes every CPUID
   instruction in the process report an AVX2-only CPU, so every library (PyTorch, oneDNN, FBGEMM, MKL,
   ONNX Runtime's MLAS, OpenVINO) picks its AVX2 kernels. Preferred wherever the kernel supports it.
2. Per-library switches, where there is no CPUID faulting (the shim exits with status 3):
   ``ATEN_CPU_CAPABILITY=avx2`` (ATen), ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN, also OpenVINO's copy),
   ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``, and the AVX-512 flags in the cpuinfo
   table inside libc10 cleared after torch loads (parts of FBGEMM ask cpuinfo directly). ONNX Runtime's MLAS
   has no switch: under this mechanism it runs whatever CPUID reports.

`steer()` sets the switches (call it before torch is imported; harmless under the shim). `describe()` reports
the path from inside the process: what CPUID reports *here* (which is what MLAS and oneDNN dispatch on), the
capability PyTorch chose, edgeopt's ISA; `ort_path()` and `openvino_path(compiled)` say what those runtimes ran.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCHES = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
# Child processes that scrub their environment (pyperf workers) must inherit these explicitly.
INHERIT = ["LD_PRELOAD", "OMP_NUM_THREADS", "EDGEOPT_ISA", "EDGEOPT_DATA", "EDGEOPT_CACHE", *ENV_SWITCHES]
SHIM = "avx2only shim (CPUID faulting)"
SWITCHES = "per-library switches"
NATIVE = "native ISA (not steered)"

# Offsets of the AVX-512 family in cpuinfo's `struct cpuinfo_x86_isa` as built into torch 2.13
# (read off fbgemmHasAvx512Support / fbgemmHasAvx512VnniSupport / fbgemmHasAvx512Bf16Support:
# avx512f 0x1d, dq/bw/vl 0x21-0x23, vnni 0x29, bf16 0x2a); 0x1d..0x2a holds only AVX-512 flags.
_CPUINFO_AVX512_RANGE = range(0x1D, 0x2B)
_CPUINFO_AVX2_OFFSET = 0x1C
_cpuinfo_masked: str | None = None
_cpu_features: dict[str, bool] | None = None


def shim_active() -> bool:
    return "avx2only" in os.environ.get("LD_PRELOAD", "")


def shim_library() -> str | None:
    """The built shim, if one is where the project builds it (``$EDGEOPT_AVX2ONLY`` or /tmp/avx2only)."""
    for path in (os.environ.get("EDGEOPT_AVX2ONLY"), "/tmp/avx2only/avx2only.so"):
        if path and os.path.isfile(path):
            return path
    return None


def steer(switches: bool = True) -> str:
    """Sets the per-library switches (unless already set) and returns the mechanism in force. Call before
    torch is imported: ATen and oneDNN read their switches once, at load."""
    if switches:
        for key, value in ENV_SWITCHES.items():
            os.environ.setdefault(key, value)
    return mechanism()


def mechanism() -> str:
    if shim_active():
        return SHIM
    if all(os.environ.get(k) for k in ENV_SWITCHES):
        return SWITCHES
    return NATIVE


def mask_cpuinfo() -> str:
    """Clears the AVX-512 flags in torch's cpuinfo table (the switches mechanism; needless under the shim)."""
    global _cpuinfo_masked
    if _cpuinfo_masked is not None:
        return _cpuinfo_masked
    cpu_features()  # read what CPUID says before the table is changed
    import torch

    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
    if not lib.cpuinfo_initialize():
        _cpuinfo_masked = "cpuinfo unavailable"
    else:
        isa = (ctypes.c_uint8 * 0x40).in_dll(lib, "cpuinfo_isa")
        if not isa[_CPUINFO_AVX2_OFFSET]:
            _cpuinfo_masked = "cpuinfo layout not recognised (avx2 flag not where expected); left alone"
        else:
            for off in _CPUINFO_AVX512_RANGE:
                isa[off] = 0
            _cpuinfo_masked = "cpuinfo AVX-512 flags cleared"
    return _cpuinfo_masked


def cpu_features() -> dict[str, bool]:
    """What CPUID reports inside this process (through the shim when it is preloaded): the answer every
    library that dispatches on CPUID (MLAS, oneDNN, FBGEMM, cpuinfo) sees. Read once, before this module
    masks cpuinfo's table (the mask changes what torch.cpu reports, not what CPUID says)."""
    global _cpu_features
    if _cpu_features is not None:
        return dict(_cpu_features)
    import torch

    from edgeopt._native import _C

    info = _C.cpu_info()
    _cpu_features = {
        "avx2": bool(info["avx2"]),
        "avx512f": bool(info["avx512f"]),
        # torch.cpu._is_*: cpuinfo, i.e. CPUID in this process (masked table under the switches mechanism)
        "avx512_vnni": bool(torch.cpu._is_vnni_supported()),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
    }
    return dict(_cpu_features)


def setup() -> dict[str, str]:
    """Call after `import torch` (and after `steer()` before it). Applies the cpuinfo mask when the switches
    are the mechanism and returns metadata describing the path of every contender in this process."""
    import torch

    from edgeopt._native import _C

    how = mechanism()
    features = cpu_features()  # before the mask: what MLAS (which reads CPUID itself) sees
    meta = {"avx2_method": how}
    if how == SWITCHES:
        meta["cpuinfo_mask"] = mask_cpuinfo()
    meta["cpuid_in_process"] = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items())
    meta["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    meta["edgeopt_isa"] = _C.isa()
    meta["torch_threads"] = str(torch.get_num_threads())
    meta["torch"] = torch.__version__
    return meta


def describe() -> str:
    """One line for result headers: the mechanism and what this process runs."""
    meta = setup()
    return (f"{meta['avx2_method']}; CPUID here: {meta['cpuid_in_process']}; torch {meta['torch_cpu_capability']}, "
            f"edgeopt {meta['edgeopt_isa']}")


def torch_path(int8: bool = False) -> str:
    import torch

    path = f"torch {torch.backends.cpu.get_cpu_capability()}"
    if int8:
        wide = cpu_features()["avx512_vnni"]
        path += (", FBGEMM/oneDNN int8 on AVX-512 VNNI (CPUID reports it)" if wide else
                 ", FBGEMM/oneDNN int8 on AVX2 (CPUID reports no AVX-512 VNNI"
                 + (f"; {_cpuinfo_masked}" if _cpuinfo_masked else "") + ")")
    return path


def edgeopt_path() -> str:
    from edgeopt._native import _C

    forced = os.environ.get("EDGEOPT_ISA")
    return f"edgeopt {_C.isa()}" + (f" (forced by EDGEOPT_ISA={forced})" if forced else "")


def ort_path(int8: bool = False) -> str:
    """ONNX Runtime's CPU kernels (MLAS) dispatch on CPUID and XGETBV with no switch and log nothing about it,
    so the path is read off CPUID as this process sees it: that is the input MLAS's dispatch reads."""
    f = cpu_features()
    if f["avx512f"] or (int8 and (f["avx512_vnni"] or f["amx"])):
        wide = "AMX" if int8 and f["amx"] else "AVX-512 VNNI" if int8 and f["avx512_vnni"] else "AVX-512"
        return f"MLAS {wide} (CPUID in this process reports it; no switch steers MLAS: use the avx2only shim)"
    return "MLAS AVX2 (CPUID in this process reports no AVX-512, VNNI or AMX" + (
        f"; {SHIM})" if shim_active() else ")")


def openvino_path(compiled) -> str:
    """The kernels an OpenVINO compiled model chose, from its runtime graph: each node's primitiveType names
    the ISA (jit_avx2_I8, jit_avx512_..., brgconv_avx2, gemm_mlas...)."""
    import collections

    steered, wide = collections.Counter(), collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer, kind = info["layerType"].astype(str), info["primitiveType"].astype(str)
        if layer in ("Input", "Output", "Const", "Reshape", "Reorder"):
            continue
        # gemm_mlas is OpenVINO's copy of MLAS, which dispatches on CPUID: wide only where CPUID says so
        is_wide = any(tag in kind for tag in ("avx512", "amx")) or ("mlas" in kind and cpu_features()["avx512f"])
        (wide if is_wide else steered)[f"{kind} ({layer})" if is_wide else kind] += 1
    return "; ".join(f"{label}: " + ", ".join(f"{k} x{v}" for k, v in c.most_common())
                     for label, c in (("AVX2 or narrower", steered), ("AVX-512/AMX", wide)) if c)


def reexec_under_shim(argv: list[str] | None = None) -> None:
    """Replaces this process by the same command under the avx2only shim when CPUID reports AVX-512, the shim
    is built and not yet preloaded. Returns (does nothing) when that is not needed or not possible."""
    if shim_active() or os.environ.get("EDGEOPT_NO_SHIM_REEXEC"):
        return
    path = shim_library()
    if path is None:
        return
    from edgeopt._native import _C

    if not _C.cpu_info()["avx512f"]:
        return
    env = dict(os.environ, LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"), path])),
               EDGEOPT_NO_SHIM_REEXEC="1")
    args = [sys.executable, *(sys.orig_argv[1:] if argv is None else argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


def prepare_process() -> str:
    """For the timing commands (`edgeopt profile`, `edgeopt study`): re-executes under the avx2only shim when
    CPUID reports AVX-512 and the shim is built (EDGEOPT_NO_SHIM_REEXEC=1 prevents it), else sets the
    per-library switches. Does nothing once torch is loaded (an embedding process, a test run): the switches
    would take effect only in part. Returns the mechanism in force."""
    if "torch" in sys.modules:  # too late for the switches (ATen reads them at load): leave the process alone
        return mechanism()
    reexec_under_shim()
    return steer()

// CPU feature detection and the ISA choice, made once per process.
#pragma once

namespace edgeopt {

enum class Isa { kRef = 0, kAvx2 = 1 };

struct CpuInfo {
  bool avx2 = false;   // AVX2 + FMA + F16C and the OS saves ymm state: everything our avx2 kernels use
  bool avx512f = false;  // reported for `edgeopt info` only; nothing here uses it
  char brand[49] = {0};
};

// Reads CPUID on the first call and caches the answer.
const CpuInfo& cpu_info();

// The ISA the kernels run on: the best this CPU supports, unless EDGEOPT_ISA=ref|avx2 says otherwise.
// Asking for avx2 on a CPU without it is an error (thrown), never an illegal instruction later.
Isa active_isa();
// Switches the path at run time (tests compare both in one process). Throws if unsupported.
void set_active_isa(Isa isa);
const char* isa_name(Isa isa);
Isa parse_isa(const char* name);  // throws std::invalid_argument on an unknown name

}  // namespace edgeopt

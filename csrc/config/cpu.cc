#include "config/cpu.h"

#include <cpuid.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace edgeopt {
namespace {

// xgetbv without -mxsave: this file is compiled for baseline x86-64.
uint64_t read_xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

CpuInfo detect() {
  CpuInfo info;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return info;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  bool ymm_state = false, zmm_state = false;
  if (osxsave) {
    const uint64_t xcr0 = read_xcr0();
    ymm_state = (xcr0 & 0x6) == 0x6;
    zmm_state = (xcr0 & 0xe6) == 0xe6;
  }
  unsigned b7 = 0;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b7, c, d);
  }
  info.avx2 = avx && fma && f16c && ymm_state && (b7 & (1u << 5));
  info.avx512f = zmm_state && (b7 & (1u << 16));
  unsigned regs[12];
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
    std::memcpy(info.brand, regs, 48);
  }
  return info;
}

Isa best_supported() { return cpu_info().avx2 ? Isa::kAvx2 : Isa::kRef; }

void check_supported(Isa isa) {
  if (isa == Isa::kAvx2 && !cpu_info().avx2)
    throw std::runtime_error("edgeopt: the avx2 path was requested but this CPU (or OS) lacks AVX2/FMA/F16C");
}

Isa initial_isa() {
  const char* env = std::getenv("EDGEOPT_ISA");
  if (env == nullptr || *env == '\0') return best_supported();
  Isa isa = parse_isa(env);
  check_supported(isa);
  return isa;
}

std::atomic<int> g_isa{-1};

}  // namespace

const CpuInfo& cpu_info() {
  static const CpuInfo info = detect();
  return info;
}

Isa parse_isa(const char* name) {
  if (std::strcmp(name, "ref") == 0) return Isa::kRef;
  if (std::strcmp(name, "avx2") == 0) return Isa::kAvx2;
  throw std::invalid_argument(std::string("edgeopt: unknown ISA '") + name + "' (expected 'ref' or 'avx2')");
}

const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "ref"; }

Isa active_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(initial_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  check_supported(isa);
  g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace edgeopt

// Float GEMM micro-kernels: f32 activations x packed f32 or f16 (IEEE binary16) weights, f32 accumulation.
//
// Packed weight block ("16"): 16 output columns x K, k-major: for each k the 16 weights of the block's
// columns are adjacent (two ymm of f32, or two 16-byte halves converted with vcvtph2ps). Blocks are
// K * 16 elements, one after another; N is padded to 16 with zero weights (and zero bias).
//
// Accumulation order -- the same on every ISA path, so the paths agree bit for bit:
//   acc = +0.0f; for k = 0 .. K-1: acc = fma(a[k], w[k], acc);  out = clamp(acc + bias, out_min, out_max)
// A single sequential chain per output (no k splitting), so a kernel is free to compute any number of
// columns at once. f16 weights are widened exactly (F16C on AVX2, eo_f16_to_f32 in the reference), so
// fp16 storage loses precision only when the weights are rounded to half, never in the kernel.
// Clamp: max(out_min, v) then min(out_max, v) with NaN passing through (an input NaN stays NaN).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace edgeopt {

constexpr int kFGemmNr = 16;  // columns per packed block

// w points at the packed block holding the tile's first column; blocks are w_block_stride elements
// apart (K * 16). bias points at the tile's first column of a zero-padded array. nr <= the kernel's tile.
using F32GemmUkernelFn = void (*)(size_t mr, size_t nr, size_t k, const float* a, size_t a_stride, const float* w,
                                  size_t w_block_stride, const float* bias, float out_min, float out_max, float* c,
                                  size_t c_stride);
using F16wGemmUkernelFn = void (*)(size_t mr, size_t nr, size_t k, const float* a, size_t a_stride,
                                   const uint16_t* w, size_t w_block_stride, const float* bias, float out_min,
                                   float out_max, float* c, size_t c_stride);

// Portable binary16 -> binary32 (exact for every finite half, subnormals included).
inline float eo_f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0u);  // Inf, or NaN made quiet (as F16C)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {
    const float f = float(mant) * 5.9604644775390625e-08f;  // mant * 2^-24, exact
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// 1x64: one row, up to four blocks at once (8 independent FMA chains), the batch-1 (GEMV) kernel.
// 4x16: up to four rows of one block (8 chains), for M > 1.
void eo_f32_gemm_minmax_ukernel_1x64__ref(size_t, size_t, size_t, const float*, size_t, const float*, size_t,
                                          const float*, float, float, float*, size_t);
void eo_f32_gemm_minmax_ukernel_4x16__ref(size_t, size_t, size_t, const float*, size_t, const float*, size_t,
                                          const float*, float, float, float*, size_t);
void eo_f32_gemm_minmax_ukernel_1x64__avx2(size_t, size_t, size_t, const float*, size_t, const float*, size_t,
                                           const float*, float, float, float*, size_t);
void eo_f32_gemm_minmax_ukernel_4x16__avx2(size_t, size_t, size_t, const float*, size_t, const float*, size_t,
                                           const float*, float, float, float*, size_t);
void eo_f32_f16w_gemm_minmax_ukernel_1x64__ref(size_t, size_t, size_t, const float*, size_t, const uint16_t*,
                                               size_t, const float*, float, float, float*, size_t);
void eo_f32_f16w_gemm_minmax_ukernel_4x16__ref(size_t, size_t, size_t, const float*, size_t, const uint16_t*,
                                               size_t, const float*, float, float, float*, size_t);
void eo_f32_f16w_gemm_minmax_ukernel_1x64__avx2(size_t, size_t, size_t, const float*, size_t, const uint16_t*,
                                                size_t, const float*, float, float, float*, size_t);
void eo_f32_f16w_gemm_minmax_ukernel_4x16__avx2(size_t, size_t, size_t, const float*, size_t, const uint16_t*,
                                                size_t, const float*, float, float, float*, size_t);

}  // namespace edgeopt

// Quantized GEMM micro-kernels: u8 activations x s8 weights, int32 accumulation, fused epilogue.
//
// Packed weight block ("16c4"): for each group of 4 consecutive k, 16 output columns x 4 bytes,
// columns 0-7 then 8-15 (one ymm each), so one 32-bit broadcast of activations meets 8 columns.
// Blocks are k_padded * 16 bytes; k_padded is K rounded up to 4 and the padding weights are 0.
//
// Saturation: vpmaddubsw adds two u8*s8 products into int16 with saturation. Weights are limited to
// [-63, 63] when packed, so |a0*w0 + a1*w1| <= 2*255*63 = 32130 < 32767 and the sum never saturates:
// every kernel here equals a plain int32 dot product exactly.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace edgeopt {

constexpr int kQGemmNr = 16;        // columns per packed block
constexpr int kQGemmKr = 4;         // k values interleaved per column
constexpr int kQGemmMr = 4;         // rows per micro-kernel call
constexpr int kQGemmWeightMax = 63; // |w| bound that makes vpmaddubsw exact (see above)

// Offset of weight (column j of its block, k) inside a packed 16c4 block.
inline size_t qgemm_packed_offset(size_t j, size_t k) {
  return (k / kQGemmKr) * kQGemmNr * kQGemmKr + (j / 8) * 32 + (j % 8) * kQGemmKr + k % kQGemmKr;
}

enum class OutKind : int32_t { kF32 = 0, kU8 = 1, kS32 = 2 };

// What the kernel does after accumulating acc[i][j] = sum_k a[i][k] * w[j][k]:
//   s32: acc - a_zero_point * w_colsum[j]                            (the exact integer result)
//   f32: clamp(fma(float(s32), a_scale * w_scale[j], bias[j]) [+ residual], out_min, out_max)
//   u8 with a residual: clamp(rint(f32 * out_inv_scale) + out_zero_point, 0, 255)
//   u8 without: rint(clamp(fma(float(s32), a_scale * w_scale[j] * out_inv_scale,
//                              fma(bias[j], out_inv_scale, out_zero_point)), u8_out_lo, u8_out_hi))
//     the same value as the line above up to where one rounding instead of two lands a value on the other
//     side of a .5 boundary, in a third of the instructions (the epilogue is a large part of a short-K layer).
// Arrays are indexed by absolute column and padded to a multiple of kQGemmNr.
struct QGemmEpilogue {
  const int32_t* w_colsum;
  const float* w_scale;
  const float* bias;
  float a_scale;
  int32_t a_zero_point;
  float out_min;
  float out_max;
  float out_inv_scale;
  int32_t out_zero_point;
  OutKind out_kind;
  // Optional fused residual add (f32 and u8 outputs): float values laid out exactly like the output, so
  // the output element at byte offset o from out_base adds residual[o / output element size].
  const float* residual = nullptr;
  const char* out_base = nullptr;
};

// The u8 output's clamp on the fused (u8-grid) path: the activation bounds moved to the u8 grid, within [0, 255].
inline float u8_out_lo(const QGemmEpilogue& ep) {
  const float lo = std::fma(ep.out_min, ep.out_inv_scale, float(ep.out_zero_point));
  return lo > 0.0f ? lo : 0.0f;
}
inline float u8_out_hi(const QGemmEpilogue& ep) {
  const float hi = std::fma(ep.out_max, ep.out_inv_scale, float(ep.out_zero_point));
  return hi < 255.0f ? hi : 255.0f;
}
inline bool u8_fused_epilogue(const QGemmEpilogue& ep) { return ep.out_kind == OutKind::kU8 && ep.residual == nullptr; }

// Index into ep.residual of the output element at `c` (the caller checked ep.residual).
inline size_t residual_index(const QGemmEpilogue& ep, const void* c) {
  return size_t(static_cast<const char*>(c) - ep.out_base) / (ep.out_kind == OutKind::kU8 ? 1 : 4);
}

// Computes mr rows (mr <= kQGemmMr) x nc columns of C starting at column `col` (a multiple of kQGemmNr),
// one packed block of kQGemmNr columns after another.
// a: mr rows of k_padded u8 values, rows a_stride bytes apart. w: the packed block holding `col`, the
// following blocks after it. c: the tile's first element, of the type out_kind names; rows c_stride
// elements apart.
using QGemmUkernelFn = void (*)(size_t mr, size_t nc, size_t k_padded, const uint8_t* a, size_t a_stride,
                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                size_t c_stride);

void eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                              size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                              size_t col, void* c, size_t c_stride);
// The __ref kernel serves every mr <= 4; the avx2 ones are the 4-row tile and narrow ones for small M.
void eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride);
void eo_qu8s8_gemm_minmax_ukernel_2x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride);
void eo_qu8s8_gemm_minmax_ukernel_1x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride);

// Implicit GEMM ("igemm", XNNPACK's name) for convolutions: the same tile, with the reduction split into
// ks taps of kc bytes each (kc a multiple of kQGemmKr) read through pointers instead of from one row.
// a: per tap, kQGemmMr pointers (tap-major: a[t * kQGemmMr + r]), each to the kc bytes row r meets at tap t
//   (an input pixel's channels read in place, or a buffer of zero-point bytes for padding); rows r >= mr
//   repeat a real row's pointers (their results are not stored). The kernels read exactly kc bytes each.
// w: the packed block holding `col`, its reduction ks * kc long in (tap, k) order; nc columns as in the GEMM.
using QIgemmUkernelFn = void (*)(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                 const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c, size_t c_stride);

void eo_qu8s8_igemm_minmax_ukernel_4x16c4__ref(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                               const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                               size_t c_stride);
void eo_qu8s8_igemm_minmax_ukernel_4x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride);
void eo_qu8s8_igemm_minmax_ukernel_2x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride);
void eo_qu8s8_igemm_minmax_ukernel_1x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride);

// Activation quantization (per tensor). Range scan: min and max over a rows x cols matrix (row stride
// in elements); returns false if any value is NaN or +-Inf.
using F32MinMaxFn = bool (*)(size_t rows, size_t cols, const float* x, size_t x_stride, float* min_out,
                             float* max_out);
// q = clamp(rint(x * inv_scale) + zero_point, 0, 255), computed as rint(clamp(x * inv_scale, -zp, 255 - zp)) + zp
// so out-of-range inputs saturate. Returns false if any value is NaN or +-Inf (the output is then unspecified).
using F32QuantizeU8Fn = bool (*)(size_t rows, size_t cols, const float* x, size_t x_stride, float inv_scale,
                                 int32_t zero_point, uint8_t* q, size_t q_stride);

bool eo_f32_minmax__ref(size_t, size_t, const float*, size_t, float*, float*);
bool eo_f32_minmax__avx2(size_t, size_t, const float*, size_t, float*, float*);
bool eo_f32_qu8_quantize__ref(size_t, size_t, const float*, size_t, float, int32_t, uint8_t*, size_t);
bool eo_f32_qu8_quantize__avx2(size_t, size_t, const float*, size_t, float, int32_t, uint8_t*, size_t);

}  // namespace edgeopt

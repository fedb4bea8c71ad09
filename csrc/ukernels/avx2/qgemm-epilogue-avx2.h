// The AVX2 pieces shared by the int8 kernels (dense and sparse GEMM, depthwise conv): the u8 x s8 dot
// step of the 16c4 layout, and the epilogue (zero-point correction, per-channel scale, bias, clamp, and
// f32 / u8 / s32 stores). Included only by files compiled with AVX2.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "ukernels/qgemm.h"

namespace edgeopt {

// acc += the sums of 4 adjacent u8 x s8 products (vpmaddubsw, then vpmaddwd with ones to int32); exact
// for weights in [-63, 63] (ukernels/qgemm.h).
inline __m256i dot4(__m256i acc, __m256i a, __m256i w, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
}

// 4 activation bytes broadcast to all eight 32-bit lanes.
inline __m256i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// The per-column terms of the epilogue for one block of 16 columns: computed once and shared by every
// row of a tile (the same products the scalar epilogue forms, so results stay bit-identical).
// On the fused u8 path (u8_fused_epilogue) scale and bias are already on the u8 grid and lo/hi hold its
// clamp; otherwise lo/hi are the activation bounds.
struct ColumnEpilogue {
  __m256i zp_colsum0, zp_colsum1;  // a_zero_point * w_colsum
  __m256 scale0, scale1;           // a_scale * w_scale [* out_inv_scale]
  __m256 bias0, bias1;             // bias [* out_inv_scale + out_zero_point]
  __m256 lo, hi;
};

inline ColumnEpilogue column_epilogue(const QGemmEpilogue& ep, size_t col) {
  const __m256i zp = _mm256_set1_epi32(ep.a_zero_point);
  const __m256 a_scale = _mm256_set1_ps(ep.a_scale);
  ColumnEpilogue ce;
  ce.zp_colsum0 = _mm256_mullo_epi32(zp, _mm256_loadu_si256((const __m256i*)(ep.w_colsum + col)));
  ce.zp_colsum1 = _mm256_mullo_epi32(zp, _mm256_loadu_si256((const __m256i*)(ep.w_colsum + col + 8)));
  ce.scale0 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(ep.w_scale + col));
  ce.scale1 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(ep.w_scale + col + 8));
  ce.bias0 = _mm256_loadu_ps(ep.bias + col);
  ce.bias1 = _mm256_loadu_ps(ep.bias + col + 8);
  if (u8_fused_epilogue(ep)) {
    const __m256 inv = _mm256_set1_ps(ep.out_inv_scale), ozp = _mm256_set1_ps(float(ep.out_zero_point));
    ce.scale0 = _mm256_mul_ps(ce.scale0, inv);
    ce.scale1 = _mm256_mul_ps(ce.scale1, inv);
    ce.bias0 = _mm256_fmadd_ps(ce.bias0, inv, ozp);
    ce.bias1 = _mm256_fmadd_ps(ce.bias1, inv, ozp);
    ce.lo = _mm256_set1_ps(u8_out_lo(ep));
    ce.hi = _mm256_set1_ps(u8_out_hi(ep));
  } else {
    ce.lo = _mm256_set1_ps(ep.out_min);
    ce.hi = _mm256_set1_ps(ep.out_max);
  }
  return ce;
}

// 16 int32 values in [0, 255] (two vectors) as 16 bytes in column order, nr of them stored.
__attribute__((always_inline)) inline void store_u8x16(__m256i q0, __m256i q1, size_t nr, void* c) {
  // packs interleaves 128-bit lanes; the permute puts the 16 values back in column order.
  const __m256i q16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  const __m128i q8 = _mm_packus_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1));
  if (nr == 16) {
    _mm_storeu_si128((__m128i*)c, q8);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128((__m128i*)tmp, q8);
    std::memcpy(c, tmp, nr);
  }
}

// Applies the epilogue to 16 accumulators of one row (two vectors) and stores nr of them.
__attribute__((always_inline)) inline void store_row(__m256i acc0, __m256i acc1, const ColumnEpilogue& ce,
                                                     const QGemmEpilogue& ep, size_t nr, void* c) {
  acc0 = _mm256_sub_epi32(acc0, ce.zp_colsum0);
  acc1 = _mm256_sub_epi32(acc1, ce.zp_colsum1);
  if (ep.out_kind == OutKind::kS32) {
    alignas(32) int32_t tmp[16];
    _mm256_store_si256((__m256i*)tmp, acc0);
    _mm256_store_si256((__m256i*)(tmp + 8), acc1);
    std::memcpy(c, tmp, nr * sizeof(int32_t));
    return;
  }
  __m256 y0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc0), ce.scale0, ce.bias0);
  __m256 y1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc1), ce.scale1, ce.bias1);
  if (u8_fused_epilogue(ep)) {
    y0 = _mm256_min_ps(_mm256_max_ps(y0, ce.lo), ce.hi);
    y1 = _mm256_min_ps(_mm256_max_ps(y1, ce.lo), ce.hi);
    store_u8x16(_mm256_cvtps_epi32(y0), _mm256_cvtps_epi32(y1), nr, c);
    return;
  }
  if (ep.residual != nullptr) {
    const float* r = ep.residual + residual_index(ep, c);
    if (nr == 16) {
      y0 = _mm256_add_ps(y0, _mm256_loadu_ps(r));
      y1 = _mm256_add_ps(y1, _mm256_loadu_ps(r + 8));
    } else {
      alignas(32) float tmp[16] = {};
      std::memcpy(tmp, r, nr * sizeof(float));
      y0 = _mm256_add_ps(y0, _mm256_load_ps(tmp));
      y1 = _mm256_add_ps(y1, _mm256_load_ps(tmp + 8));
    }
  }
  y0 = _mm256_min_ps(_mm256_max_ps(y0, ce.lo), ce.hi);
  y1 = _mm256_min_ps(_mm256_max_ps(y1, ce.lo), ce.hi);
  if (ep.out_kind == OutKind::kF32) {
    if (nr == 16) {
      _mm256_storeu_ps((float*)c, y0);
      _mm256_storeu_ps((float*)c + 8, y1);
    } else {
      alignas(32) float tmp[16];
      _mm256_store_ps(tmp, y0);
      _mm256_store_ps(tmp + 8, y1);
      std::memcpy(c, tmp, nr * sizeof(float));
    }
    return;
  }
  const __m256 inv = _mm256_set1_ps(ep.out_inv_scale);
  const __m256 qlo = _mm256_set1_ps(float(-ep.out_zero_point)), qhi = _mm256_set1_ps(float(255 - ep.out_zero_point));
  const __m256i ozp = _mm256_set1_epi32(ep.out_zero_point);
  const __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y0, inv), qlo), qhi)), ozp);
  const __m256i q1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y1, inv), qlo), qhi)), ozp);
  store_u8x16(q0, q1, nr, c);
}

inline void store_row(__m256i acc0, __m256i acc1, const QGemmEpilogue& ep, size_t col, size_t nr, void* c) {
  store_row(acc0, acc1, column_epilogue(ep, col), ep, nr, c);
}

// The same epilogue for 8 accumulators (one vector) of one row, nr <= 8 stored: the block-sparse
// kernels' 8-column tiles. Bit-identical to store_row on the same columns. No residual add:
// the sparse layers never set ep.residual.
inline void store_row8(__m256i acc, const QGemmEpilogue& ep, size_t col, size_t nr, void* c) {
  const __m256i zp = _mm256_set1_epi32(ep.a_zero_point);
  acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(zp, _mm256_loadu_si256((const __m256i*)(ep.w_colsum + col))));
  if (ep.out_kind == OutKind::kS32) {
    alignas(32) int32_t tmp[8];
    _mm256_store_si256((__m256i*)tmp, acc);
    std::memcpy(c, tmp, nr * sizeof(int32_t));
    return;
  }
  const __m256 s = _mm256_mul_ps(_mm256_set1_ps(ep.a_scale), _mm256_loadu_ps(ep.w_scale + col));
  if (ep.out_kind == OutKind::kF32) {
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, _mm256_loadu_ps(ep.bias + col));
    y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(ep.out_min)), _mm256_set1_ps(ep.out_max));
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, y);
    std::memcpy(c, tmp, nr * sizeof(float));
    return;
  }
  // u8, the fused path (no residual here): see ukernels/qgemm.h
  const __m256 inv = _mm256_set1_ps(ep.out_inv_scale);
  const __m256 b = _mm256_fmadd_ps(_mm256_loadu_ps(ep.bias + col), inv, _mm256_set1_ps(float(ep.out_zero_point)));
  __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(s, inv), b);
  y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(u8_out_lo(ep))), _mm256_set1_ps(u8_out_hi(ep)));
  const __m256i q = _mm256_cvtps_epi32(y);
  const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  alignas(16) uint8_t tmp[16];
  _mm_store_si128((__m128i*)tmp, _mm_packus_epi16(q16, q16));
  std::memcpy(c, tmp, nr);
}

}  // namespace edgeopt

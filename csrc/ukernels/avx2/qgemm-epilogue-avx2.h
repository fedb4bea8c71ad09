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
struct ColumnEpilogue {
  __m256i zp_colsum0, zp_colsum1;  // a_zero_point * w_colsum
  __m256 scale0, scale1;           // a_scale * w_scale
  __m256 bias0, bias1;
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
  return ce;
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
  const __m256 lo = _mm256_set1_ps(ep.out_min), hi = _mm256_set1_ps(ep.out_max);
  y0 = _mm256_min_ps(_mm256_max_ps(y0, lo), hi);
  y1 = _mm256_min_ps(_mm256_max_ps(y1, lo), hi);
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
  __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y0, inv), qlo), qhi)), ozp);
  __m256i q1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y1, inv), qlo), qhi)), ozp);
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
  __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, _mm256_loadu_ps(ep.bias + col));
  y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(ep.out_min)), _mm256_set1_ps(ep.out_max));
  if (ep.out_kind == OutKind::kF32) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, y);
    std::memcpy(c, tmp, nr * sizeof(float));
    return;
  }
  const __m256 inv = _mm256_set1_ps(ep.out_inv_scale);
  const __m256 qlo = _mm256_set1_ps(float(-ep.out_zero_point)), qhi = _mm256_set1_ps(float(255 - ep.out_zero_point));
  const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y, inv), qlo), qhi)),
                                     _mm256_set1_epi32(ep.out_zero_point));
  const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  alignas(16) uint8_t tmp[16];
  _mm_store_si128((__m128i*)tmp, _mm_packus_epi16(q16, q16));
  std::memcpy(c, tmp, nr);
}

}  // namespace edgeopt

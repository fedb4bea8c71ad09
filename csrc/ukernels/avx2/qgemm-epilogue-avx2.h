// The AVX2 epilogue of the int8 GEMM kernels (dense 16c4 and block-sparse), written once: applies
// QGemmEpilogue (ukernels/qgemm.h) to int32 accumulators of 8 or 16 consecutive columns of one row and
// stores nr of them. Included only by files under ukernels/avx2/ (compiled with -mavx2 -mfma).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "ukernels/qgemm.h"

namespace edgeopt {
namespace avx2 {

inline __m256i ep_sub_zero_point(__m256i acc, const QGemmEpilogue& ep, size_t col) {
  const __m256i zp = _mm256_set1_epi32(ep.a_zero_point);
  return _mm256_sub_epi32(acc, _mm256_mullo_epi32(zp, _mm256_loadu_si256((const __m256i*)(ep.w_colsum + col))));
}

inline __m256 ep_to_f32(__m256i v, const QGemmEpilogue& ep, size_t col) {
  const __m256 s = _mm256_mul_ps(_mm256_set1_ps(ep.a_scale), _mm256_loadu_ps(ep.w_scale + col));
  const __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), s, _mm256_loadu_ps(ep.bias + col));
  return _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(ep.out_min)), _mm256_set1_ps(ep.out_max));
}

inline __m256i ep_to_q(__m256 y, const QGemmEpilogue& ep) {
  const __m256 inv = _mm256_set1_ps(ep.out_inv_scale);
  const __m256 qlo = _mm256_set1_ps(float(-ep.out_zero_point)), qhi = _mm256_set1_ps(float(255 - ep.out_zero_point));
  return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(y, inv), qlo), qhi)),
                          _mm256_set1_epi32(ep.out_zero_point));
}

// 16 columns (acc0: 0-7, acc1: 8-15).
inline void store_row(__m256i acc0, __m256i acc1, const QGemmEpilogue& ep, size_t col, size_t nr, void* c) {
  acc0 = ep_sub_zero_point(acc0, ep, col);
  acc1 = ep_sub_zero_point(acc1, ep, col + 8);
  if (ep.out_kind == OutKind::kS32) {
    alignas(32) int32_t tmp[16];
    _mm256_store_si256((__m256i*)tmp, acc0);
    _mm256_store_si256((__m256i*)(tmp + 8), acc1);
    std::memcpy(c, tmp, nr * sizeof(int32_t));
    return;
  }
  const __m256 y0 = ep_to_f32(acc0, ep, col), y1 = ep_to_f32(acc1, ep, col + 8);
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
  // packs interleaves 128-bit lanes; the permute puts the 16 values back in column order.
  const __m256i q16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(ep_to_q(y0, ep), ep_to_q(y1, ep)), 0xD8);
  const __m128i q8 = _mm_packus_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1));
  if (nr == 16) {
    _mm_storeu_si128((__m128i*)c, q8);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128((__m128i*)tmp, q8);
    std::memcpy(c, tmp, nr);
  }
}

// 8 columns.
inline void store_row8(__m256i acc, const QGemmEpilogue& ep, size_t col, size_t nr, void* c) {
  acc = ep_sub_zero_point(acc, ep, col);
  if (ep.out_kind == OutKind::kS32) {
    if (nr == 8) {
      _mm256_storeu_si256((__m256i*)c, acc);
    } else {
      alignas(32) int32_t tmp[8];
      _mm256_store_si256((__m256i*)tmp, acc);
      std::memcpy(c, tmp, nr * sizeof(int32_t));
    }
    return;
  }
  const __m256 y = ep_to_f32(acc, ep, col);
  if (ep.out_kind == OutKind::kF32) {
    if (nr == 8) {
      _mm256_storeu_ps((float*)c, y);
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, y);
      std::memcpy(c, tmp, nr * sizeof(float));
    }
    return;
  }
  const __m256i q = ep_to_q(y, ep);
  const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i q8 = _mm_packus_epi16(q16, q16);
  if (nr == 8) {
    _mm_storel_epi64((__m128i*)c, q8);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128((__m128i*)tmp, q8);
    std::memcpy(c, tmp, nr);
  }
}

}  // namespace avx2
}  // namespace edgeopt

// AVX2 block-sparse GEMM micro-kernels (ukernels/spgemm.h). Per stored block: the NB weights (fp32: one
// or two ymm; int8: the c4 group, one or two ymm) are loaded once and met by MR broadcast activations
// read at the block's k -- the dense kernels' inner step with k taken from the index, so a block costs
// what a dense k step costs plus one index load. MR x NB/8 = 8 accumulators for the main tiles
// (FMA latency 4 x 2 ports needs 8 independent chains); fp32 keeps one sequential chain per output like
// the reference, so the two paths agree bit for bit.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "ukernels/avx2/qgemm-epilogue-avx2.h"
#include "ukernels/spgemm.h"

namespace edgeopt {
namespace {

inline void store_f32(__m256 acc, const float* bias, __m256 lo, __m256 hi, size_t nr, float* c) {
  acc = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc, _mm256_loadu_ps(bias))));
  if (nr >= 8) {
    _mm256_storeu_ps(c, acc);
  } else {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, acc);
    std::memcpy(c, tmp, nr * sizeof(float));
  }
}

template <int MR, int NB>
void f32_tile(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w, const float* a, size_t as,
              const float* bias, float out_min, float out_max, float* c, size_t cs) {
  constexpr int NV = NB / 8;
  const float* ar[MR];
  ar[0] = a;
#pragma GCC unroll 8
  for (int r = 1; r < MR; ++r) ar[r] = size_t(r) < mr ? ar[r - 1] + as : ar[r - 1];
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    __m256 wv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_ps(w + v * 8);
    w += NB;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 va = _mm256_broadcast_ss(ar[r] + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(va, wv[v], acc[r][v]);
    }
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (size_t(r) >= mr) break;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      if (nr > size_t(v) * 8) store_f32(acc[r][v], bias + v * 8, lo, hi, nr - v * 8, c + r * cs + v * 8);
    }
  }
}

// 1 and 2 rows of a 16-column block row: with one chain per output these would wait on the FMA latency
// (2 or 4 chains for 2 FMA ports x 4 cycles); blocks b go to partial sum b % P (P = 4 for one row, 2 for
// two), combined as (p0 + p1) + (p2 + p3) before the bias -- the order ukernels/spgemm.h specifies and the
// reference follows.
void f32_1x16(size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w, const float* a,
              const float* bias, float out_min, float out_max, float* c) {
  __m256 p00 = _mm256_setzero_ps(), p01 = p00, p10 = p00, p11 = p00, p20 = p00, p21 = p00, p30 = p00, p31 = p00;
  size_t b = 0;
  for (; b + 4 <= nnz; b += 4, w += 64) {
    __m256 va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b], k_max));
    p00 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w), p00);
    p01 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 8), p01);
    va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b + 1], k_max));
    p10 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 16), p10);
    p11 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 24), p11);
    va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b + 2], k_max));
    p20 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 32), p20);
    p21 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 40), p21);
    va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b + 3], k_max));
    p30 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 48), p30);
    p31 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 56), p31);
  }
  if (b < nnz) {
    const __m256 va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b], k_max));
    p00 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w), p00);
    p01 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 8), p01);
  }
  if (b + 1 < nnz) {
    const __m256 va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b + 1], k_max));
    p10 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 16), p10);
    p11 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 24), p11);
  }
  if (b + 2 < nnz) {
    const __m256 va = _mm256_broadcast_ss(a + std::min<size_t>(kidx[b + 2], k_max));
    p20 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 32), p20);
    p21 = _mm256_fmadd_ps(va, _mm256_loadu_ps(w + 40), p21);
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  const __m256 c0 = _mm256_add_ps(_mm256_add_ps(p00, p10), _mm256_add_ps(p20, p30));
  const __m256 c1 = _mm256_add_ps(_mm256_add_ps(p01, p11), _mm256_add_ps(p21, p31));
  store_f32(c0, bias, lo, hi, nr, c);
  if (nr > 8) store_f32(c1, bias + 8, lo, hi, nr - 8, c + 8);
}

void f32_2x16(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w, const float* a,
              size_t as, const float* bias, float out_min, float out_max, float* c, size_t cs) {
  const float* a0 = a;
  const float* a1 = mr > 1 ? a + as : a;
  __m256 p00 = _mm256_setzero_ps(), p01 = p00, p10 = p00, p11 = p00;  // row 0: partials 0, 1 (x 2 vectors)
  __m256 q00 = p00, q01 = p00, q10 = p00, q11 = p00;                  // row 1
  size_t b = 0;
  for (; b + 2 <= nnz; b += 2, w += 32) {
    const size_t k0 = std::min<size_t>(kidx[b], k_max), k1 = std::min<size_t>(kidx[b + 1], k_max);
    const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
    const __m256 w2 = _mm256_loadu_ps(w + 16), w3 = _mm256_loadu_ps(w + 24);
    __m256 va = _mm256_broadcast_ss(a0 + k0);
    p00 = _mm256_fmadd_ps(va, w0, p00);
    p01 = _mm256_fmadd_ps(va, w1, p01);
    va = _mm256_broadcast_ss(a1 + k0);
    q00 = _mm256_fmadd_ps(va, w0, q00);
    q01 = _mm256_fmadd_ps(va, w1, q01);
    va = _mm256_broadcast_ss(a0 + k1);
    p10 = _mm256_fmadd_ps(va, w2, p10);
    p11 = _mm256_fmadd_ps(va, w3, p11);
    va = _mm256_broadcast_ss(a1 + k1);
    q10 = _mm256_fmadd_ps(va, w2, q10);
    q11 = _mm256_fmadd_ps(va, w3, q11);
  }
  if (b < nnz) {
    const size_t k0 = std::min<size_t>(kidx[b], k_max);
    const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
    __m256 va = _mm256_broadcast_ss(a0 + k0);
    p00 = _mm256_fmadd_ps(va, w0, p00);
    p01 = _mm256_fmadd_ps(va, w1, p01);
    va = _mm256_broadcast_ss(a1 + k0);
    q00 = _mm256_fmadd_ps(va, w0, q00);
    q01 = _mm256_fmadd_ps(va, w1, q01);
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  store_f32(_mm256_add_ps(p00, p10), bias, lo, hi, nr, c);
  if (nr > 8) store_f32(_mm256_add_ps(p01, p11), bias + 8, lo, hi, nr - 8, c + 8);
  if (mr > 1) {
    store_f32(_mm256_add_ps(q00, q10), bias, lo, hi, nr, c + cs);
    if (nr > 8) store_f32(_mm256_add_ps(q01, q11), bias + 8, lo, hi, nr - 8, c + cs + 8);
  }
}

template <int MR, int NB>
void q_tile(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const int8_t* w, const uint8_t* a, size_t as,
            const QGemmEpilogue& ep, size_t col, void* c, size_t cs) {
  constexpr int NV = NB / 8;
  const uint8_t* ar[MR];
  ar[0] = a;
#pragma GCC unroll 8
  for (int r = 1; r < MR; ++r) ar[r] = size_t(r) < mr ? ar[r - 1] + as : ar[r - 1];
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    __m256i wv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_si256((const __m256i*)(w + v * 32));
    w += NB * kSpQKr;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i va = broadcast4(ar[r] + k);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = dot4(acc[r][v], va, wv[v], ones);
    }
  }
  const size_t row_bytes = cs * (ep.out_kind == OutKind::kU8 ? 1 : 4);
  char* out = static_cast<char*>(c);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (size_t(r) >= mr) break;
    if constexpr (NV == 2) {
      store_row(acc[r][0], acc[r][1], ep, col, nr, out + r * row_bytes);
    } else {
      store_row8(acc[r][0], ep, col, nr, out + r * row_bytes);
    }
  }
}

// The main tiles written out: with the accumulators in an array GCC copies them every block and spills
// two (measured here: 0.6x the dense kernel's speed at full density), as the dense 4x16c4 kernel notes.
void f32_4x16(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w, const float* a, size_t as,
              const float* bias, float out_min, float out_max, float* c, size_t cs) {
  const float* a0 = a;
  const float* a1 = mr > 1 ? a0 + as : a0;
  const float* a2 = mr > 2 ? a1 + as : a1;
  const float* a3 = mr > 3 ? a2 + as : a2;
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
    w += 16;
    __m256 va = _mm256_broadcast_ss(a0 + k);
    c00 = _mm256_fmadd_ps(va, w0, c00);
    c01 = _mm256_fmadd_ps(va, w1, c01);
    va = _mm256_broadcast_ss(a1 + k);
    c10 = _mm256_fmadd_ps(va, w0, c10);
    c11 = _mm256_fmadd_ps(va, w1, c11);
    va = _mm256_broadcast_ss(a2 + k);
    c20 = _mm256_fmadd_ps(va, w0, c20);
    c21 = _mm256_fmadd_ps(va, w1, c21);
    va = _mm256_broadcast_ss(a3 + k);
    c30 = _mm256_fmadd_ps(va, w0, c30);
    c31 = _mm256_fmadd_ps(va, w1, c31);
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  const __m256 r0[4] = {c00, c10, c20, c30}, r1[4] = {c01, c11, c21, c31};
  for (size_t r = 0; r < mr; ++r) {
    store_f32(r0[r], bias, lo, hi, nr, c + r * cs);
    if (nr > 8) store_f32(r1[r], bias + 8, lo, hi, nr - 8, c + r * cs + 8);
  }
}

void f32_8x8(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w, const float* a, size_t as,
             const float* bias, float out_min, float out_max, float* c, size_t cs) {
  const float* a0 = a;
  const float* a1 = mr > 1 ? a0 + as : a0;
  const float* a2 = mr > 2 ? a1 + as : a1;
  const float* a3 = mr > 3 ? a2 + as : a2;
  const float* a4 = mr > 4 ? a3 + as : a3;
  const float* a5 = mr > 5 ? a4 + as : a4;
  const float* a6 = mr > 6 ? a5 + as : a5;
  const float* a7 = mr > 7 ? a6 + as : a6;
  __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    const __m256 w0 = _mm256_loadu_ps(w);
    w += 8;
    c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + k), w0, c0);
    c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(a1 + k), w0, c1);
    c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(a2 + k), w0, c2);
    c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(a3 + k), w0, c3);
    c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(a4 + k), w0, c4);
    c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(a5 + k), w0, c5);
    c6 = _mm256_fmadd_ps(_mm256_broadcast_ss(a6 + k), w0, c6);
    c7 = _mm256_fmadd_ps(_mm256_broadcast_ss(a7 + k), w0, c7);
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  const __m256 rows[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  for (size_t r = 0; r < mr; ++r) store_f32(rows[r], bias, lo, hi, nr, c + r * cs);
}

void q_4x16(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const int8_t* w, const uint8_t* a, size_t as,
            const QGemmEpilogue& ep, size_t col, void* c, size_t cs) {
  const uint8_t* a0 = a;
  const uint8_t* a1 = mr > 1 ? a0 + as : a0;
  const uint8_t* a2 = mr > 2 ? a1 + as : a1;
  const uint8_t* a3 = mr > 3 ? a2 + as : a2;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    const __m256i w0 = _mm256_loadu_si256((const __m256i*)w);
    const __m256i w1 = _mm256_loadu_si256((const __m256i*)(w + 32));
    w += 64;
    __m256i va = broadcast4(a0 + k);
    c00 = dot4(c00, va, w0, ones);
    c01 = dot4(c01, va, w1, ones);
    va = broadcast4(a1 + k);
    c10 = dot4(c10, va, w0, ones);
    c11 = dot4(c11, va, w1, ones);
    va = broadcast4(a2 + k);
    c20 = dot4(c20, va, w0, ones);
    c21 = dot4(c21, va, w1, ones);
    va = broadcast4(a3 + k);
    c30 = dot4(c30, va, w0, ones);
    c31 = dot4(c31, va, w1, ones);
  }
  const size_t row_bytes = cs * (ep.out_kind == OutKind::kU8 ? 1 : 4);
  char* out = static_cast<char*>(c);
  const ColumnEpilogue ce = column_epilogue(ep, col);  // per-column terms once for the tile's rows
  store_row(c00, c01, ce, ep, nr, out);
  if (mr > 1) store_row(c10, c11, ce, ep, nr, out + row_bytes);
  if (mr > 2) store_row(c20, c21, ce, ep, nr, out + 2 * row_bytes);
  if (mr > 3) store_row(c30, c31, ce, ep, nr, out + 3 * row_bytes);
}

void q_8x8(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const int8_t* w, const uint8_t* a, size_t as,
           const QGemmEpilogue& ep, size_t col, void* c, size_t cs) {
  const uint8_t* a0 = a;
  const uint8_t* a1 = mr > 1 ? a0 + as : a0;
  const uint8_t* a2 = mr > 2 ? a1 + as : a1;
  const uint8_t* a3 = mr > 3 ? a2 + as : a2;
  const uint8_t* a4 = mr > 4 ? a3 + as : a3;
  const uint8_t* a5 = mr > 5 ? a4 + as : a4;
  const uint8_t* a6 = mr > 6 ? a5 + as : a5;
  const uint8_t* a7 = mr > 7 ? a6 + as : a6;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  for (size_t b = 0; b < nnz; ++b) {
    const size_t k = std::min<size_t>(kidx[b], k_max);
    const __m256i w0 = _mm256_loadu_si256((const __m256i*)w);
    w += 32;
    c0 = dot4(c0, broadcast4(a0 + k), w0, ones);
    c1 = dot4(c1, broadcast4(a1 + k), w0, ones);
    c2 = dot4(c2, broadcast4(a2 + k), w0, ones);
    c3 = dot4(c3, broadcast4(a3 + k), w0, ones);
    c4 = dot4(c4, broadcast4(a4 + k), w0, ones);
    c5 = dot4(c5, broadcast4(a5 + k), w0, ones);
    c6 = dot4(c6, broadcast4(a6 + k), w0, ones);
    c7 = dot4(c7, broadcast4(a7 + k), w0, ones);
  }
  const size_t row_bytes = cs * (ep.out_kind == OutKind::kU8 ? 1 : 4);
  char* out = static_cast<char*>(c);
  const __m256i rows[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  for (size_t r = 0; r < mr; ++r) store_row8(rows[r], ep, col, nr, out + r * row_bytes);
}

}  // namespace

#define EO_SPGEMM_F32_DEF(MR, NB)                                                                                  \
  void eo_f32_spgemm_minmax_ukernel_##MR##x##NB##__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx,   \
                                                        size_t k_max,                                           \
                                                        const float* w, const float* a, size_t as, const float* b, \
                                                        float lo, float hi, float* c, size_t cs) {                 \
    f32_tile<MR, NB>(mr, nr, nnz, kidx, k_max, w, a, as, b, lo, hi, c, cs);                                               \
  }
#define EO_SPGEMM_Q_DEF(MR, NB)                                                                                      \
  void eo_qu8s8_spgemm_minmax_ukernel_##MR##x##NB##c4__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, \
                                                            size_t k_max,                                            \
                                                            const int8_t* w, const uint8_t* a, size_t as,            \
                                                            const QGemmEpilogue& ep, size_t col, void* c, size_t cs) { \
    q_tile<MR, NB>(mr, nr, nnz, kidx, k_max, w, a, as, ep, col, c, cs);                                                     \
  }
EO_SPGEMM_F32_DEF(1, 8)
EO_SPGEMM_F32_DEF(2, 8)
EO_SPGEMM_F32_DEF(4, 8)
void eo_f32_spgemm_minmax_ukernel_8x8__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                            const float* w,
                                            const float* a, size_t as, const float* b, float lo, float hi, float* c,
                                            size_t cs) {
  f32_8x8(mr, nr, nnz, kidx, k_max, w, a, as, b, lo, hi, c, cs);
}
void eo_f32_spgemm_minmax_ukernel_1x16__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                             const float* w, const float* a, size_t as, const float* b, float lo,
                                             float hi, float* c, size_t cs) {
  for (size_t i = 0; i < mr; ++i) f32_1x16(nr, nnz, kidx, k_max, w, a + i * as, b, lo, hi, c + i * cs);
}
void eo_f32_spgemm_minmax_ukernel_2x16__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                             const float* w, const float* a, size_t as, const float* b, float lo,
                                             float hi, float* c, size_t cs) {
  f32_2x16(mr, nr, nnz, kidx, k_max, w, a, as, b, lo, hi, c, cs);
}
void eo_f32_spgemm_minmax_ukernel_4x16__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                             const float* w,
                                             const float* a, size_t as, const float* b, float lo, float hi, float* c,
                                             size_t cs) {
  f32_4x16(mr, nr, nnz, kidx, k_max, w, a, as, b, lo, hi, c, cs);
}
EO_SPGEMM_Q_DEF(1, 8)
EO_SPGEMM_Q_DEF(2, 8)
EO_SPGEMM_Q_DEF(4, 8)
void eo_qu8s8_spgemm_minmax_ukernel_8x8c4__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                                const int8_t* w, const uint8_t* a, size_t as, const QGemmEpilogue& ep,
                                                size_t col, void* c, size_t cs) {
  q_8x8(mr, nr, nnz, kidx, k_max, w, a, as, ep, col, c, cs);
}
EO_SPGEMM_Q_DEF(1, 16)
EO_SPGEMM_Q_DEF(2, 16)
void eo_qu8s8_spgemm_minmax_ukernel_4x16c4__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                                 const int8_t* w, const uint8_t* a, size_t as, const QGemmEpilogue& ep,
                                                 size_t col, void* c, size_t cs) {
  q_4x16(mr, nr, nnz, kidx, k_max, w, a, as, ep, col, c, cs);
}

}  // namespace edgeopt

// AVX2 float GEMM micro-kernels, f32 or f16 weights (vcvtph2ps straight from memory), see ukernels/f32gemm.h.
// Every output is one sequential FMA chain over k, as in the reference, so the paths agree bit for bit;
// throughput comes from computing 8 independent chains at once (FMA latency 4 x 2 ports), not from
// splitting k. Batch-1 layers are memory-bound: f16 weights halve the bytes streamed per MAC.
#include <immintrin.h>

#include <cstring>

#include "ukernels/f32gemm.h"

namespace edgeopt {
namespace {

inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 load8(const uint16_t* w) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))); }

// acc + bias, clamped (NaN passes: vmaxps/vminps return the second operand when either is NaN), stored.
inline void store16(__m256 acc0, __m256 acc1, const float* bias, __m256 lo, __m256 hi, size_t nr, float* c) {
  acc0 = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc0, _mm256_loadu_ps(bias))));
  acc1 = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc1, _mm256_loadu_ps(bias + 8))));
  if (nr >= 16) {
    _mm256_storeu_ps(c, acc0);
    _mm256_storeu_ps(c + 8, acc1);
  } else {
    alignas(32) float tmp[16];
    _mm256_store_ps(tmp, acc0);
    _mm256_store_ps(tmp + 8, acc1);
    std::memcpy(c, tmp, nr * sizeof(float));
  }
}

template <class W>
void gemm_1x16(size_t nr, size_t k, const float* a, const W* w, const float* bias, __m256 lo, __m256 hi, float* c) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (size_t kk = 0; kk < k; ++kk) {
    const __m256 va = _mm256_broadcast_ss(a + kk);
    acc0 = _mm256_fmadd_ps(va, load8(w + kk * 16), acc0);
    acc1 = _mm256_fmadd_ps(va, load8(w + kk * 16 + 8), acc1);
  }
  store16(acc0, acc1, bias, lo, hi, nr, c);
}

template <class W>
void gemm_1x64(size_t nr, size_t k, const float* a, const W* w, size_t ws, const float* bias, float out_min,
               float out_max, float* c) {
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  if (nr <= 48) {  // edge tile: block by block
    for (size_t b = 0; b * 16 < nr; ++b) {
      const size_t n = nr - b * 16 < 16 ? nr - b * 16 : 16;
      gemm_1x16(n, k, a, w + b * ws, bias + b * 16, lo, hi, c + b * 16);
    }
    return;
  }
  const W *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();
  __m256 c4 = _mm256_setzero_ps(), c5 = _mm256_setzero_ps(), c6 = _mm256_setzero_ps(), c7 = _mm256_setzero_ps();
  for (size_t kk = 0; kk < k; ++kk) {
    const __m256 va = _mm256_broadcast_ss(a + kk);
    const size_t o = kk * 16;
    c0 = _mm256_fmadd_ps(va, load8(w0 + o), c0);
    c1 = _mm256_fmadd_ps(va, load8(w0 + o + 8), c1);
    c2 = _mm256_fmadd_ps(va, load8(w1 + o), c2);
    c3 = _mm256_fmadd_ps(va, load8(w1 + o + 8), c3);
    c4 = _mm256_fmadd_ps(va, load8(w2 + o), c4);
    c5 = _mm256_fmadd_ps(va, load8(w2 + o + 8), c5);
    c6 = _mm256_fmadd_ps(va, load8(w3 + o), c6);
    c7 = _mm256_fmadd_ps(va, load8(w3 + o + 8), c7);
  }
  store16(c0, c1, bias, lo, hi, 16, c);
  store16(c2, c3, bias + 16, lo, hi, 16, c + 16);
  store16(c4, c5, bias + 32, lo, hi, 16, c + 32);
  store16(c6, c7, bias + 48, lo, hi, nr - 48, c + 48);
}

template <class W>
void gemm_4x16(size_t mr, size_t nr, size_t k, const float* a, size_t as, const W* w, const float* bias,
               float out_min, float out_max, float* c, size_t cs) {
  // Rows past mr alias the last real row; their results are not stored.
  const float* a0 = a;
  const float* a1 = mr > 1 ? a0 + as : a0;
  const float* a2 = mr > 2 ? a1 + as : a1;
  const float* a3 = mr > 3 ? a2 + as : a2;
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  for (size_t kk = 0; kk < k; ++kk) {
    const __m256 w0 = load8(w + kk * 16), w1 = load8(w + kk * 16 + 8);
    __m256 va = _mm256_broadcast_ss(a0 + kk);
    c00 = _mm256_fmadd_ps(va, w0, c00);
    c01 = _mm256_fmadd_ps(va, w1, c01);
    va = _mm256_broadcast_ss(a1 + kk);
    c10 = _mm256_fmadd_ps(va, w0, c10);
    c11 = _mm256_fmadd_ps(va, w1, c11);
    va = _mm256_broadcast_ss(a2 + kk);
    c20 = _mm256_fmadd_ps(va, w0, c20);
    c21 = _mm256_fmadd_ps(va, w1, c21);
    va = _mm256_broadcast_ss(a3 + kk);
    c30 = _mm256_fmadd_ps(va, w0, c30);
    c31 = _mm256_fmadd_ps(va, w1, c31);
  }
  const __m256 lo = _mm256_set1_ps(out_min), hi = _mm256_set1_ps(out_max);
  store16(c00, c01, bias, lo, hi, nr, c);
  if (mr > 1) store16(c10, c11, bias, lo, hi, nr, c + cs);
  if (mr > 2) store16(c20, c21, bias, lo, hi, nr, c + 2 * cs);
  if (mr > 3) store16(c30, c31, bias, lo, hi, nr, c + 3 * cs);
}

template <class W>
void gemm_1x64_rows(size_t mr, size_t nr, size_t k, const float* a, size_t as, const W* w, size_t ws,
                    const float* bias, float lo, float hi, float* c, size_t cs) {
  for (size_t i = 0; i < mr; ++i) gemm_1x64(nr, k, a + i * as, w, ws, bias, lo, hi, c + i * cs);
}

}  // namespace

void eo_f32_gemm_minmax_ukernel_1x64__avx2(size_t mr, size_t nr, size_t k, const float* a, size_t as, const float* w,
                                           size_t ws, const float* b, float lo, float hi, float* c, size_t cs) {
  gemm_1x64_rows(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}
void eo_f32_gemm_minmax_ukernel_4x16__avx2(size_t mr, size_t nr, size_t k, const float* a, size_t as, const float* w,
                                           size_t, const float* b, float lo, float hi, float* c, size_t cs) {
  gemm_4x16(mr, nr, k, a, as, w, b, lo, hi, c, cs);
}
void eo_f32_f16w_gemm_minmax_ukernel_1x64__avx2(size_t mr, size_t nr, size_t k, const float* a, size_t as,
                                                const uint16_t* w, size_t ws, const float* b, float lo, float hi,
                                                float* c, size_t cs) {
  gemm_1x64_rows(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}
void eo_f32_f16w_gemm_minmax_ukernel_4x16__avx2(size_t mr, size_t nr, size_t k, const float* a, size_t as,
                                                const uint16_t* w, size_t, const float* b, float lo, float hi,
                                                float* c, size_t cs) {
  gemm_4x16(mr, nr, k, a, as, w, b, lo, hi, c, cs);
}

}  // namespace edgeopt

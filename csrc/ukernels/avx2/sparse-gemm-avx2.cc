// AVX2 block-sparse GEMM micro-kernels (ukernels/spgemm.h). Per stored block: the NB weights (fp32: one
// or two ymm; int8: the c4 group, one or two ymm) are loaded once and met by MR broadcast activations
// read at the block's k -- the dense kernels' inner step with k taken from the index, so a block costs
// what a dense k step costs plus one index load. MR x NB/8 = 8 accumulators for the main tiles
// (FMA latency 4 x 2 ports needs 8 independent chains); fp32 keeps one sequential chain per output like
// the reference, so the two paths agree bit for bit.
#include <immintrin.h>

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
void f32_tile(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, const float* w, const float* a, size_t as,
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
    const size_t k = kidx[b];
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

inline __m256i dot4(__m256i acc, __m256i a, __m256i w, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
}

inline __m256i broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

template <int MR, int NB>
void q_tile(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, const int8_t* w, const uint8_t* a, size_t as,
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
    const size_t k = kidx[b];
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
      avx2::store_row(acc[r][0], acc[r][1], ep, col, nr, out + r * row_bytes);
    } else {
      avx2::store_row8(acc[r][0], ep, col, nr, out + r * row_bytes);
    }
  }
}

}  // namespace

#define EO_SPGEMM_F32_DEF(MR, NB)                                                                                  \
  void eo_f32_spgemm_minmax_ukernel_##MR##x##NB##__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx,   \
                                                        const float* w, const float* a, size_t as, const float* b, \
                                                        float lo, float hi, float* c, size_t cs) {                 \
    f32_tile<MR, NB>(mr, nr, nnz, kidx, w, a, as, b, lo, hi, c, cs);                                               \
  }
#define EO_SPGEMM_Q_DEF(MR, NB)                                                                                      \
  void eo_qu8s8_spgemm_minmax_ukernel_##MR##x##NB##c4__avx2(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, \
                                                            const int8_t* w, const uint8_t* a, size_t as,            \
                                                            const QGemmEpilogue& ep, size_t col, void* c, size_t cs) { \
    q_tile<MR, NB>(mr, nr, nnz, kidx, w, a, as, ep, col, c, cs);                                                     \
  }
EO_SPGEMM_F32_DEF(1, 8)
EO_SPGEMM_F32_DEF(2, 8)
EO_SPGEMM_F32_DEF(4, 8)
EO_SPGEMM_F32_DEF(8, 8)
EO_SPGEMM_F32_DEF(1, 16)
EO_SPGEMM_F32_DEF(2, 16)
EO_SPGEMM_F32_DEF(4, 16)
EO_SPGEMM_Q_DEF(1, 8)
EO_SPGEMM_Q_DEF(2, 8)
EO_SPGEMM_Q_DEF(4, 8)
EO_SPGEMM_Q_DEF(8, 8)
EO_SPGEMM_Q_DEF(1, 16)
EO_SPGEMM_Q_DEF(2, 16)
EO_SPGEMM_Q_DEF(4, 16)

}  // namespace edgeopt

// AVX2 {1,2,4}x16c4 u8 x s8 GEMM micro-kernels with fused epilogue (see ukernels/qgemm.h for the layout and
// the saturation argument). Per group of 4 k: 2 weight loads, 4 broadcasts, 8 x (vpmaddubsw, vpmaddwd
// with ones, vpaddd) -- the MLAS/FBGEMM recipe; 8 accumulators leave registers for the operands. The
// 4-row loop is in assembly (qu8s8-4x16c4-loop-avx2.h: GCC's version of it copied and spilled). Each call
// walks all its column blocks, so a short-K layer pays the call once per row tile, not once per block.
#include <immintrin.h>

#include <cstring>

#include "ukernels/avx2/qgemm-epilogue-avx2.h"
#include "ukernels/avx2/qu8s8-4x16c4-loop-avx2.h"
#include "ukernels/qgemm.h"

namespace edgeopt {
namespace {

inline size_t elem_size(OutKind kind) { return kind == OutKind::kU8 ? 1 : 4; }

// MR (1 or 2) rows, for batch-1..2 (GEMV-like) calls, which are memory-bound: aliasing their missing rows
// onto real ones, as the 4-row kernel does for edge tiles, would quadruple the arithmetic per weight byte.
template <int MR>
inline void gemm_tile(size_t mr, size_t nc, size_t k_padded, const uint8_t* a, size_t a_stride, const int8_t* w,
                      const QGemmEpilogue& ep, size_t col, void* c, size_t c_stride) {
  // Rows past mr alias the last real row: the loop stays branch-free and their results are not stored.
  const uint8_t* ar[MR];
  ar[0] = a;
  for (int r = 1; r < MR; ++r) ar[r] = size_t(r) < mr ? ar[r - 1] + a_stride : ar[r - 1];
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t es = elem_size(ep.out_kind), row_bytes = c_stride * es;
  char* out = static_cast<char*>(c);
  for (;;) {
    __m256i acc[MR][2];
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (size_t k = 0; k < k_padded; k += kQGemmKr) {
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)w);
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(w + 32));
      w += 64;
      for (int r = 0; r < MR; ++r) {
        const __m256i va = broadcast4(ar[r] + k);
        acc[r][0] = dot4(acc[r][0], va, w0, ones);
        acc[r][1] = dot4(acc[r][1], va, w1, ones);
      }
    }
    const size_t nr = nc < size_t(kQGemmNr) ? nc : size_t(kQGemmNr);
    const ColumnEpilogue ce = column_epilogue(ep, col);
    for (int r = 0; r < MR; ++r) {
      if (size_t(r) < mr) store_row(acc[r][0], acc[r][1], ce, ep, nr, out + r * row_bytes);
    }
    if (nc <= size_t(kQGemmNr)) return;
    nc -= kQGemmNr;
    col += kQGemmNr;
    out += kQGemmNr * es;
  }
}

}  // namespace

void eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride) {
  // Rows past mr alias the last real row: the loop stays branch-free and their results are not stored.
  const uint8_t* a0 = a;
  const uint8_t* a1 = mr > 1 ? a0 + a_stride : a0;
  const uint8_t* a2 = mr > 2 ? a1 + a_stride : a1;
  const uint8_t* a3 = mr > 3 ? a2 + a_stride : a2;
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t es = elem_size(ep.out_kind), row_bytes = c_stride * es;
  char* out = static_cast<char*>(c);
  for (;;) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    // A last block with 8 or fewer columns left multiplies only its first 8 (columns 8-15 are not stored).
    w = nc > 8 ? dot_4x16c4(k_padded, a0, a1, a2, a3, w, c00, c01, c10, c11, c20, c21, c30, c31, ones)
               : dot_4x8c4(k_padded, a0, a1, a2, a3, w, c00, c10, c20, c30, ones);
    const size_t nr = nc < size_t(kQGemmNr) ? nc : size_t(kQGemmNr);
    const ColumnEpilogue ce = column_epilogue(ep, col);
    store_row(c00, c01, ce, ep, nr, out);
    if (mr > 1) store_row(c10, c11, ce, ep, nr, out + row_bytes);
    if (mr > 2) store_row(c20, c21, ce, ep, nr, out + 2 * row_bytes);
    if (mr > 3) store_row(c30, c31, ce, ep, nr, out + 3 * row_bytes);
    if (nc <= size_t(kQGemmNr)) return;
    nc -= kQGemmNr;
    col += kQGemmNr;
    out += kQGemmNr * es;
  }
}

void eo_qu8s8_gemm_minmax_ukernel_2x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride) {
  gemm_tile<2>(mr, nc, k_padded, a, a_stride, w, ep, col, c, c_stride);
}

void eo_qu8s8_gemm_minmax_ukernel_1x16c4__avx2(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                               size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t c_stride) {
  gemm_tile<1>(mr, nc, k_padded, a, a_stride, w, ep, col, c, c_stride);
}

}  // namespace edgeopt

// AVX2 {1,2,4}x16c4 implicit-GEMM (igemm) kernels for convolutions: the GEMM kernels' inner step (see
// qu8s8-gemm-4x16c4-avx2.cc), with the reduction walked tap by tap through input-pixel pointers, so a conv
// reads its input in place instead of gathering im2col rows. Per tap: MR pointer loads, then kc / 4 groups
// of MR broadcasts and 2 * MR (vpmaddubsw, vpmaddwd with ones, vpaddd); the 4-row loop is in assembly
// (qu8s8-4x16c4-loop-avx2.h). Each call walks all its column blocks with the same pointers.
#include <immintrin.h>

#include "ukernels/avx2/qgemm-epilogue-avx2.h"
#include "ukernels/avx2/qu8s8-4x16c4-loop-avx2.h"
#include "ukernels/qgemm.h"

namespace edgeopt {
namespace {

inline size_t elem_size(OutKind kind) { return kind == OutKind::kU8 ? 1 : 4; }

// 1 or 2 rows: the ragged last tile of a layer with few output pixels (ResNet's 7x7 stage has 49).
template <int MR>
inline void igemm_tile(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a, const int8_t* w,
                       const QGemmEpilogue& ep, size_t col, void* c, size_t c_stride) {
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t es = elem_size(ep.out_kind), row_bytes = c_stride * es;
  char* out = static_cast<char*>(c);
  for (;;) {
    __m256i acc[MR][2];
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const uint8_t* const* at = a;
    for (size_t t = 0; t < ks; ++t, at += kQGemmMr) {
      for (size_t k = 0; k < kc; k += kQGemmKr) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i*)w);
        const __m256i w1 = _mm256_loadu_si256((const __m256i*)(w + 32));
        w += 64;
        for (int r = 0; r < MR; ++r) {
          const __m256i va = broadcast4(at[r] + k);
          acc[r][0] = dot4(acc[r][0], va, w0, ones);
          acc[r][1] = dot4(acc[r][1], va, w1, ones);
        }
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

void eo_qu8s8_igemm_minmax_ukernel_4x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride) {
  const __m256i ones = _mm256_set1_epi16(1);
  const size_t es = elem_size(ep.out_kind), row_bytes = c_stride * es;
  char* out = static_cast<char*>(c);
  for (;;) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    const uint8_t* const* at = a;
    if (nc > 8) {
      for (size_t t = 0; t < ks; ++t, at += kQGemmMr) {
        w = dot_4x16c4(kc, at[0], at[1], at[2], at[3], w, c00, c01, c10, c11, c20, c21, c30, c31, ones);
      }
    } else {  // a last block with 8 or fewer columns left: only its first 8 (8-15 are not stored)
      for (size_t t = 0; t < ks; ++t, at += kQGemmMr) w = dot_4x8c4(kc, at[0], at[1], at[2], at[3], w, c00, c10, c20, c30, ones);
    }
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

void eo_qu8s8_igemm_minmax_ukernel_2x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride) {
  igemm_tile<2>(mr, nc, kc, ks, a, w, ep, col, c, c_stride);
}

void eo_qu8s8_igemm_minmax_ukernel_1x16c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const uint8_t* const* a,
                                                const int8_t* w, const QGemmEpilogue& ep, size_t col, void* c,
                                                size_t c_stride) {
  igemm_tile<1>(mr, nc, kc, ks, a, w, ep, col, c, c_stride);
}

}  // namespace edgeopt

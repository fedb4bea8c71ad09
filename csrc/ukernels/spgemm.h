// Block-sparse weight x dense activation GEMM micro-kernels: C[i][j] = sum_k A[i][k] * W[j][k]
// where W (N x K) is stored as blocks of NB output columns x KB consecutive k, only the blocks holding a
// non-zero weight. SIMD lanes run over the NB output columns (as in the dense kernels), so the activation
// layout is the dense one (row-major M x K, NHWC pixels for convs) and batch 1 works: a block row is the
// dense kernel's k loop with the k values read through an index.
//
// One "block row" = the blocks of one group of NB columns, in increasing k:
//   kidx[b]      first k of block b (a multiple of KB)
//   w + b*NB*KB  its NB*KB weights: f32 (KB = 1): NB floats, column order.
//                int8 (KB = 4): the 16c4 / 8c4 interleave of ukernels/qgemm.h restricted to one k group:
//                column j, k offset r at (j / 8) * 32 + (j % 8) * 4 + r.
// Accumulation order (both ISA paths, so they agree bit for bit): f32: P partial sums p[q] = +0.0f; for
// each block in storage order p[b % P] = fma(a[kidx[b]], w, p[b % P]); acc = p0 (P = 1), p0 + p1 (P = 2)
// or (p0 + p1) + (p2 + p3) (P = 4); out = clamp(acc + bias). P = 4 for the 1x16 tile, 2 for 2x16, else 1:
// enough independent FMA chains at batch 1 and 2 (a tile's rows are computed like the 1-row tile's when
// it is called with fewer rows). The op picks tiles by row count identically on every ISA path. int8: exact int32 (weights
// |w| <= 63, see qgemm.h), then the QGemmEpilogue of the dense kernels.
// A kernel called with mr below its tile aliases the missing rows onto the last real one (results not
// stored); nr < NB stores only nr columns. `a` points at the first row's k = 0.
// k_max: an index above it is read as k_max. The op passes the largest valid k, so indices from a corrupt
// or since-modified buffer cannot steer a kernel outside the activations (a cmov per block, free next to
// the block's arithmetic) and the per-call buffer check stays O(block rows) instead of O(blocks).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ukernels/qgemm.h"

namespace edgeopt {

constexpr int kSpF32Kr = 1;  // k per fp32 block
constexpr int kSpQKr = 4;    // k per int8 block (one vpmaddubsw/vpmaddwd group)

using F32SpGemmUkernelFn = void (*)(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w,
                                    const float* a, size_t a_stride, const float* bias, float out_min, float out_max,
                                    float* c, size_t c_stride);
using QSpGemmUkernelFn = void (*)(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const int8_t* w,
                                  const uint8_t* a, size_t a_stride, const QGemmEpilogue& ep, size_t col, void* c,
                                  size_t c_stride);

// Block width NB = 8 or 16 columns; tiles of 1, 2, 4 (and 8 for NB = 8) rows. The __ref kernels take any
// mr up to 8.
#define EO_SPGEMM_F32_DECL(MR, NB, ISA)                                                                         \
  void eo_f32_spgemm_minmax_ukernel_##MR##x##NB##__##ISA(size_t, size_t, size_t, const uint32_t*, size_t, const float*, \
                                                         const float*, size_t, const float*, float, float, float*, \
                                                         size_t);
#define EO_SPGEMM_Q_DECL(MR, NB, ISA)                                                                             \
  void eo_qu8s8_spgemm_minmax_ukernel_##MR##x##NB##c4__##ISA(size_t, size_t, size_t, const uint32_t*, size_t, const int8_t*, \
                                                             const uint8_t*, size_t, const QGemmEpilogue&, size_t, \
                                                             void*, size_t);
EO_SPGEMM_F32_DECL(8, 8, ref)
EO_SPGEMM_F32_DECL(8, 16, ref)
EO_SPGEMM_F32_DECL(1, 16, ref)
EO_SPGEMM_F32_DECL(2, 16, ref)
EO_SPGEMM_Q_DECL(8, 8, ref)
EO_SPGEMM_Q_DECL(8, 16, ref)
EO_SPGEMM_F32_DECL(1, 8, avx2)
EO_SPGEMM_F32_DECL(2, 8, avx2)
EO_SPGEMM_F32_DECL(4, 8, avx2)
EO_SPGEMM_F32_DECL(8, 8, avx2)
EO_SPGEMM_F32_DECL(1, 16, avx2)
EO_SPGEMM_F32_DECL(2, 16, avx2)
EO_SPGEMM_F32_DECL(4, 16, avx2)
EO_SPGEMM_Q_DECL(1, 8, avx2)
EO_SPGEMM_Q_DECL(2, 8, avx2)
EO_SPGEMM_Q_DECL(4, 8, avx2)
EO_SPGEMM_Q_DECL(8, 8, avx2)
EO_SPGEMM_Q_DECL(1, 16, avx2)
EO_SPGEMM_Q_DECL(2, 16, avx2)
EO_SPGEMM_Q_DECL(4, 16, avx2)
#undef EO_SPGEMM_F32_DECL
#undef EO_SPGEMM_Q_DECL

// Offset of (column j, k offset r) inside one int8 block of the c4 layout above.
inline size_t spgemm_q_offset(size_t j, size_t r) { return (j / 8) * 32 + (j % 8) * kSpQKr + r; }

}  // namespace edgeopt

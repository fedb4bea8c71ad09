#include "config/dispatch.h"

namespace edgeopt {

const QGemmKernels& qgemm_kernels(Isa isa) {
  static const QGemmKernels ref{{nullptr, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref,
                                 eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref},
                                eo_f32_minmax__ref,
                                eo_f32_qu8_quantize__ref,
                                eo_qu8s8_dwconv_minmax_ukernel_32x2__ref};
  static const QGemmKernels avx2{{nullptr, eo_qu8s8_gemm_minmax_ukernel_1x16c4__avx2, eo_qu8s8_gemm_minmax_ukernel_2x16c4__avx2,
                                  eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2, eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2},
                                 eo_f32_minmax__avx2,
                                 eo_f32_qu8_quantize__avx2,
                                 eo_qu8s8_dwconv_minmax_ukernel_32x2__avx2};
  return isa == Isa::kAvx2 ? avx2 : ref;
}

const FloatGemmKernels& float_gemm_kernels(Isa isa) {
  static const FloatGemmKernels ref{eo_f32_gemm_minmax_ukernel_1x64__ref, eo_f32_gemm_minmax_ukernel_4x16__ref,
                                    eo_f32_f16w_gemm_minmax_ukernel_1x64__ref, eo_f32_f16w_gemm_minmax_ukernel_4x16__ref};
  static const FloatGemmKernels avx2{eo_f32_gemm_minmax_ukernel_1x64__avx2, eo_f32_gemm_minmax_ukernel_4x16__avx2,
                                     eo_f32_f16w_gemm_minmax_ukernel_1x64__avx2,
                                     eo_f32_f16w_gemm_minmax_ukernel_4x16__avx2};
  return isa == Isa::kAvx2 ? avx2 : ref;
}

const PoolKernels& pool_kernels(Isa isa) {
  static const PoolKernels ref{eo_u8_maxpool__ref, eo_f32_maxpool__ref, eo_u8_gavgpool__ref, eo_f32_gavgpool__ref};
  static const PoolKernels avx2{eo_u8_maxpool__avx2, eo_f32_maxpool__avx2, eo_u8_gavgpool__avx2, eo_f32_gavgpool__avx2};
  return isa == Isa::kAvx2 ? avx2 : ref;
}

const SparseGemmKernels& sparse_gemm_kernels(Isa isa) {
  // The reference kernels serve every row count up to 8; the tables still list the same tiles as the
  // avx2 ones so the op tiles (and so rounds) identically on both paths.
  static const SparseGemmKernels ref{
      {eo_f32_spgemm_minmax_ukernel_8x8__ref, eo_f32_spgemm_minmax_ukernel_8x8__ref,
       eo_f32_spgemm_minmax_ukernel_8x8__ref, eo_f32_spgemm_minmax_ukernel_8x8__ref},
      {eo_f32_spgemm_minmax_ukernel_1x16__ref, eo_f32_spgemm_minmax_ukernel_2x16__ref,
       eo_f32_spgemm_minmax_ukernel_8x16__ref, nullptr},
      {eo_qu8s8_spgemm_minmax_ukernel_8x8c4__ref, eo_qu8s8_spgemm_minmax_ukernel_8x8c4__ref,
       eo_qu8s8_spgemm_minmax_ukernel_8x8c4__ref, eo_qu8s8_spgemm_minmax_ukernel_8x8c4__ref},
      {eo_qu8s8_spgemm_minmax_ukernel_8x16c4__ref, eo_qu8s8_spgemm_minmax_ukernel_8x16c4__ref,
       eo_qu8s8_spgemm_minmax_ukernel_8x16c4__ref, nullptr}};
  static const SparseGemmKernels avx2{
      {eo_f32_spgemm_minmax_ukernel_1x8__avx2, eo_f32_spgemm_minmax_ukernel_2x8__avx2,
       eo_f32_spgemm_minmax_ukernel_4x8__avx2, eo_f32_spgemm_minmax_ukernel_8x8__avx2},
      {eo_f32_spgemm_minmax_ukernel_1x16__avx2, eo_f32_spgemm_minmax_ukernel_2x16__avx2,
       eo_f32_spgemm_minmax_ukernel_4x16__avx2, nullptr},
      {eo_qu8s8_spgemm_minmax_ukernel_1x8c4__avx2, eo_qu8s8_spgemm_minmax_ukernel_2x8c4__avx2,
       eo_qu8s8_spgemm_minmax_ukernel_4x8c4__avx2, eo_qu8s8_spgemm_minmax_ukernel_8x8c4__avx2},
      {eo_qu8s8_spgemm_minmax_ukernel_1x16c4__avx2, eo_qu8s8_spgemm_minmax_ukernel_2x16c4__avx2,
       eo_qu8s8_spgemm_minmax_ukernel_4x16c4__avx2, nullptr}};
  return isa == Isa::kAvx2 ? avx2 : ref;
}

}  // namespace edgeopt

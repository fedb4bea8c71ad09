#include "config/dispatch.h"

namespace edgeopt {

const QGemmKernels& qgemm_kernels(Isa isa) {
  static const QGemmKernels ref{{nullptr, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref,
                                 eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref, eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref},
                                eo_f32_minmax__ref,
                                eo_f32_qu8_quantize__ref,
                                eo_qu8s8_dwconv_minmax_ukernel_16x2__ref};
  static const QGemmKernels avx2{{nullptr, eo_qu8s8_gemm_minmax_ukernel_1x16c4__avx2, eo_qu8s8_gemm_minmax_ukernel_2x16c4__avx2,
                                  eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2, eo_qu8s8_gemm_minmax_ukernel_4x16c4__avx2},
                                 eo_f32_minmax__avx2,
                                 eo_f32_qu8_quantize__avx2,
                                 eo_qu8s8_dwconv_minmax_ukernel_16x2__avx2};
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
  static const PoolKernels ref{eo_u8_maxpool__ref, eo_f32_maxpool__ref};
  static const PoolKernels avx2{eo_u8_maxpool__avx2, eo_f32_maxpool__avx2};
  return isa == Isa::kAvx2 ? avx2 : ref;
}

}  // namespace edgeopt

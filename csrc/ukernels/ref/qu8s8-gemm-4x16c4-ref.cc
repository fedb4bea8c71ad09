// Scalar twin of the 4x16c4 kernels: the test oracle and the path for CPUs without AVX2.
#include "ukernels/qgemm.h"
#include "ukernels/ref/epilogue-ref.h"

namespace edgeopt {

void eo_qu8s8_gemm_minmax_ukernel_4x16c4__ref(size_t mr, size_t nc, size_t k_padded, const uint8_t* a,
                                              size_t a_stride, const int8_t* w, const QGemmEpilogue& ep,
                                              size_t col, void* c, size_t c_stride) {
  for (size_t i = 0; i < mr; ++i) {
    for (size_t j = 0; j < nc; ++j) {
      const int8_t* block = w + (j / kQGemmNr) * k_padded * kQGemmNr;
      int32_t acc = 0;
      for (size_t k = 0; k < k_padded; ++k) {
        acc += int32_t(a[i * a_stride + k]) * int32_t(block[qgemm_packed_offset(j % kQGemmNr, k)]);
      }
      store_epilogue_ref(acc, ep, col + j, c, i * c_stride + j);
    }
  }
}

}  // namespace edgeopt

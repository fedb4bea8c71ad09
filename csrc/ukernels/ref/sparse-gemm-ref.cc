// Scalar twins of the block-sparse GEMM kernels (ukernels/spgemm.h): the test oracle and the non-AVX2 path.
#include <algorithm>
#include <cmath>

#include "ukernels/ref/epilogue-ref.h"
#include "ukernels/spgemm.h"

namespace edgeopt {
namespace {

// parts: 1, 2 or 4 partial sums (block b into part b % parts), combined (p0 + p1) + (p2 + p3).
void f32_ref(size_t nb, size_t parts, size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
             const float* w, const float* a, size_t as, const float* bias, float lo, float hi, float* c, size_t cs) {
  for (size_t i = 0; i < mr; ++i) {
    for (size_t j = 0; j < nr; ++j) {
      float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (size_t b = 0; b < nnz; ++b)
        p[b % parts] = std::fma(a[i * as + std::min<size_t>(kidx[b], k_max)], w[b * nb + j], p[b % parts]);
      const float acc = parts == 1 ? p[0] : parts == 2 ? p[0] + p[1] : (p[0] + p[1]) + (p[2] + p[3]);
      float v = acc + bias[j];
      v = lo > v ? lo : v;  // NaN behaviour of vmaxps(lo, v) / vminps(hi, v)
      v = hi < v ? hi : v;
      c[i * cs + j] = v;
    }
  }
}

void q_ref(size_t nb, size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const int8_t* w,
           const uint8_t* a, size_t as, const QGemmEpilogue& ep, size_t col, void* c, size_t cs) {
  for (size_t i = 0; i < mr; ++i) {
    for (size_t j = 0; j < nr; ++j) {
      int32_t acc = 0;
      for (size_t b = 0; b < nnz; ++b) {
        const int8_t* wb = w + b * nb * kSpQKr;
        for (size_t r = 0; r < size_t(kSpQKr); ++r)
          acc += int32_t(a[i * as + std::min<size_t>(kidx[b], k_max) + r]) * int32_t(wb[spgemm_q_offset(j, r)]);
      }
      store_epilogue_ref(acc, ep, col + j, c, i * cs + j);
    }
  }
}

}  // namespace

void eo_f32_spgemm_minmax_ukernel_8x8__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w,
                                           const float* a, size_t as, const float* bias, float lo, float hi, float* c,
                                           size_t cs) {
  f32_ref(8, 1, mr, nr, nnz, kidx, k_max, w, a, as, bias, lo, hi, c, cs);
}
void eo_f32_spgemm_minmax_ukernel_8x16__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, const float* w,
                                            const float* a, size_t as, const float* bias, float lo, float hi, float* c,
                                            size_t cs) {
  f32_ref(16, 1, mr, nr, nnz, kidx, k_max, w, a, as, bias, lo, hi, c, cs);
}
void eo_f32_spgemm_minmax_ukernel_1x16__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                            const float* w, const float* a, size_t as, const float* bias, float lo,
                                            float hi, float* c, size_t cs) {
  f32_ref(16, 4, mr, nr, nnz, kidx, k_max, w, a, as, bias, lo, hi, c, cs);
}
void eo_f32_spgemm_minmax_ukernel_2x16__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                            const float* w, const float* a, size_t as, const float* bias, float lo,
                                            float hi, float* c, size_t cs) {
  f32_ref(16, 2, mr, nr, nnz, kidx, k_max, w, a, as, bias, lo, hi, c, cs);
}
void eo_qu8s8_spgemm_minmax_ukernel_8x8c4__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                               const int8_t* w, const uint8_t* a, size_t as, const QGemmEpilogue& ep,
                                               size_t col, void* c, size_t cs) {
  q_ref(8, mr, nr, nnz, kidx, k_max, w, a, as, ep, col, c, cs);
}
void eo_qu8s8_spgemm_minmax_ukernel_8x16c4__ref(size_t mr, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max,
                                                const int8_t* w, const uint8_t* a, size_t as, const QGemmEpilogue& ep,
                                                size_t col, void* c, size_t cs) {
  q_ref(16, mr, nr, nnz, kidx, k_max, w, a, as, ep, col, c, cs);
}

}  // namespace edgeopt

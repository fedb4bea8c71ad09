// Scalar twins of the float GEMM kernels (f32 and f16 weights): the test oracle and the non-AVX2 path.
// std::fma keeps the reference's rounding identical to vfmadd231ps (see ukernels/f32gemm.h).
#include <cmath>

#include "ukernels/f32gemm.h"

namespace edgeopt {
namespace {

inline float widen(float w) { return w; }
inline float widen(uint16_t w) { return eo_f16_to_f32(w); }

template <class W>
void gemm_ref(size_t mr, size_t nr, size_t k, const float* a, size_t a_stride, const W* w, size_t w_block_stride,
              const float* bias, float out_min, float out_max, float* c, size_t c_stride) {
  for (size_t i = 0; i < mr; ++i) {
    for (size_t j = 0; j < nr; ++j) {
      const W* wb = w + (j / kFGemmNr) * w_block_stride + j % kFGemmNr;
      float acc = 0.0f;
      for (size_t kk = 0; kk < k; ++kk) acc = std::fma(a[i * a_stride + kk], widen(wb[kk * kFGemmNr]), acc);
      float v = acc + bias[j];
      v = out_min > v ? out_min : v;  // same NaN behaviour as vmaxps(min, v) / vminps(max, v)
      v = out_max < v ? out_max : v;
      c[i * c_stride + j] = v;
    }
  }
}

}  // namespace

void eo_f32_gemm_minmax_ukernel_1x64__ref(size_t mr, size_t nr, size_t k, const float* a, size_t as, const float* w,
                                          size_t ws, const float* b, float lo, float hi, float* c, size_t cs) {
  gemm_ref(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}
void eo_f32_gemm_minmax_ukernel_4x16__ref(size_t mr, size_t nr, size_t k, const float* a, size_t as, const float* w,
                                          size_t ws, const float* b, float lo, float hi, float* c, size_t cs) {
  gemm_ref(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}
void eo_f32_f16w_gemm_minmax_ukernel_1x64__ref(size_t mr, size_t nr, size_t k, const float* a, size_t as,
                                               const uint16_t* w, size_t ws, const float* b, float lo, float hi,
                                               float* c, size_t cs) {
  gemm_ref(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}
void eo_f32_f16w_gemm_minmax_ukernel_4x16__ref(size_t mr, size_t nr, size_t k, const float* a, size_t as,
                                               const uint16_t* w, size_t ws, const float* b, float lo, float hi,
                                               float* c, size_t cs) {
  gemm_ref(mr, nr, k, a, as, w, ws, b, lo, hi, c, cs);
}

}  // namespace edgeopt

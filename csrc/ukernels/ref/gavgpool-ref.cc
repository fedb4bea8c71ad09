// Scalar twins of the global average pooling kernels: the definitions of ukernels/gavgpool.h, written out.
#include <cmath>

#include "ukernels/gavgpool.h"

namespace edgeopt {

void eo_u8_gavgpool__ref(size_t pixels, size_t channels, size_t stride, const uint8_t* x, const GAvgPoolParams& p,
                         void* out) {
  for (size_t c = 0; c < channels; ++c) {
    int32_t sum = 0;
    for (size_t i = 0; i < pixels; ++i) sum += x[i * stride + c];
    const float y = float(sum - p.zero_point_sum) * p.scale;
    if (p.out_kind == OutKind::kF32) {
      static_cast<float*>(out)[c] = y;
    } else {
      const float q = std::fmin(std::fmax(y, float(-p.out_zero_point)), float(255 - p.out_zero_point));
      static_cast<uint8_t*>(out)[c] = uint8_t(int32_t(std::nearbyint(q)) + p.out_zero_point);
    }
  }
}

void eo_f32_gavgpool__ref(size_t pixels, size_t channels, size_t stride, const float* x, float* out) {
  for (size_t c = 0; c < channels; ++c) {
    float sum = 0.0f;
    for (size_t i = 0; i < pixels; ++i) sum += x[i * stride + c];
    out[c] = sum / float(pixels);
  }
}

}  // namespace edgeopt

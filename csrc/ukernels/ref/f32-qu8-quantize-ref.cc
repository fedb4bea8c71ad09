// Scalar twins of the activation range scan and quantization.
#include <cmath>
#include <limits>

#include "ukernels/qgemm.h"

namespace edgeopt {

bool eo_f32_minmax__ref(size_t rows, size_t cols, const float* x, size_t x_stride, float* min_out,
                        float* max_out) {
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  bool finite = true;
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      const float v = x[i * x_stride + j];
      finite &= std::isfinite(v);
      lo = std::fmin(lo, v);
      hi = std::fmax(hi, v);
    }
  }
  *min_out = lo;
  *max_out = hi;
  return finite;
}

bool eo_f32_qu8_quantize__ref(size_t rows, size_t cols, const float* x, size_t x_stride, float inv_scale,
                              int32_t zero_point, uint8_t* q, size_t q_stride) {
  bool finite = true;
  const float lo = float(-zero_point), hi = float(255 - zero_point);
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      const float v = x[i * x_stride + j];
      finite &= std::isfinite(v);
      const float t = std::fmin(std::fmax(v * inv_scale, lo), hi);
      q[i * q_stride + j] = uint8_t(int32_t(std::nearbyint(t)) + zero_point);
    }
  }
  return finite;
}

}  // namespace edgeopt

// Scalar twins of the max-pooling kernels.
#include <algorithm>
#include <cmath>

#include "ukernels/maxpool.h"

namespace edgeopt {

void eo_u8_maxpool__ref(size_t channels, size_t taps, const uint8_t* const* rows, uint8_t* out) {
  for (size_t c = 0; c < channels; ++c) {
    uint8_t m = rows[0][c];
    for (size_t t = 1; t < taps; ++t) m = std::max(m, rows[t][c]);
    out[c] = m;
  }
}

void eo_f32_maxpool__ref(size_t channels, size_t taps, const float* const* rows, float* out) {
  for (size_t c = 0; c < channels; ++c) {
    float m = rows[0][c];
    for (size_t t = 1; t < taps; ++t) {
      const float v = rows[t][c];
      m = (v > m || std::isnan(v)) && !std::isnan(m) ? v : m;
    }
    out[c] = m;
  }
}

}  // namespace edgeopt

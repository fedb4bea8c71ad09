// Scalar twins of the max-pooling kernels.
#include <algorithm>
#include <cmath>

#include "ukernels/maxpool.h"

namespace edgeopt {

void eo_u8_maxpool__ref(size_t pixels, size_t channels, size_t rows, const uint8_t* const* row_ptrs, size_t kernel_w,
                        size_t tap_step, size_t pixel_step, uint8_t* out) {
  for (size_t p = 0; p < pixels; ++p) {
    for (size_t c = 0; c < channels; ++c) {
      uint8_t m = 0;
      for (size_t r = 0; r < rows; ++r)
        for (size_t kx = 0; kx < kernel_w; ++kx) m = std::max(m, row_ptrs[r][p * pixel_step + kx * tap_step + c]);
      out[p * channels + c] = m;
    }
  }
}

void eo_f32_maxpool__ref(size_t pixels, size_t channels, size_t rows, const float* const* row_ptrs, size_t kernel_w,
                         size_t tap_step, size_t pixel_step, float* out) {
  for (size_t p = 0; p < pixels; ++p) {
    for (size_t c = 0; c < channels; ++c) {
      float m = row_ptrs[0][p * pixel_step + c];
      for (size_t r = 0; r < rows; ++r) {
        for (size_t kx = 0; kx < kernel_w; ++kx) {
          const float v = row_ptrs[r][p * pixel_step + kx * tap_step + c];
          m = (v > m || std::isnan(v)) && !std::isnan(m) ? v : m;
        }
      }
      out[p * channels + c] = m;
    }
  }
}

}  // namespace edgeopt

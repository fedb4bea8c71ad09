// Max-pooling micro-kernels over NHWC rows, one output row segment per call:
//   out[p * channels + c] = max over r < rows, kx < kernel_w of rows[r][p * pixel_step + kx * tap_step + c]
// for p < pixels, c < channels; steps in elements. Every window element lies inside the input: the op clips
// windows at the borders (max ignores padding, as in torch) and calls edge pixels one at a time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeopt {

using U8MaxpoolFn = void (*)(size_t pixels, size_t channels, size_t rows, const uint8_t* const* row_ptrs,
                             size_t kernel_w, size_t tap_step, size_t pixel_step, uint8_t* out);
using F32MaxpoolFn = void (*)(size_t pixels, size_t channels, size_t rows, const float* const* row_ptrs,
                              size_t kernel_w, size_t tap_step, size_t pixel_step, float* out);

void eo_u8_maxpool__ref(size_t pixels, size_t channels, size_t rows, const uint8_t* const* row_ptrs, size_t kernel_w,
                        size_t tap_step, size_t pixel_step, uint8_t* out);
void eo_u8_maxpool__avx2(size_t pixels, size_t channels, size_t rows, const uint8_t* const* row_ptrs, size_t kernel_w,
                         size_t tap_step, size_t pixel_step, uint8_t* out);
// NaN propagates (any NaN tap gives NaN), as torch's max_pool2d does.
void eo_f32_maxpool__ref(size_t pixels, size_t channels, size_t rows, const float* const* row_ptrs, size_t kernel_w,
                         size_t tap_step, size_t pixel_step, float* out);
void eo_f32_maxpool__avx2(size_t pixels, size_t channels, size_t rows, const float* const* row_ptrs, size_t kernel_w,
                          size_t tap_step, size_t pixel_step, float* out);

}  // namespace edgeopt

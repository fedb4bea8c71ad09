// Max-pooling micro-kernels over NHWC rows: out[c] = max over taps t of rows[t][c], c < channels.
// The op hands over only the taps inside the input (max ignores padding, as in torch), at least one.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeopt {

using U8MaxpoolFn = void (*)(size_t channels, size_t taps, const uint8_t* const* rows, uint8_t* out);
using F32MaxpoolFn = void (*)(size_t channels, size_t taps, const float* const* rows, float* out);

void eo_u8_maxpool__ref(size_t channels, size_t taps, const uint8_t* const* rows, uint8_t* out);
void eo_u8_maxpool__avx2(size_t channels, size_t taps, const uint8_t* const* rows, uint8_t* out);
// NaN propagates (any NaN tap gives NaN), as torch's max_pool2d does.
void eo_f32_maxpool__ref(size_t channels, size_t taps, const float* const* rows, float* out);
void eo_f32_maxpool__avx2(size_t channels, size_t taps, const float* const* rows, float* out);

}  // namespace edgeopt

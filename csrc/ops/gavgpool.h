// Global average pooling of u8 NHWC activations (the mean of each channel over an image), into f32 for a
// float head or into u8 for a quantized one; the rounding is defined in ukernels/gavgpool.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/qgemm_tiles.h"

namespace edgeopt {

// Most pixels an image may have: their sum of 255s must fit int32.
constexpr size_t kGAvgPoolMaxPixels = size_t(INT32_MAX) / 255;

struct GlobalAvgPoolCall {
  size_t batch = 0, pixels = 0, channels = 0;
  const uint8_t* x = nullptr;  // batch x pixels x channels, contiguous
  U8QuantParams x_params{1.0f, 0};
  OutKind out_kind = OutKind::kF32;  // kF32 or kU8
  U8QuantParams out_params{1.0f, 0};  // kU8 only
  void* out = nullptr;                // batch x channels, contiguous
  int num_threads = 1;
};

void global_avgpool_u8(const GlobalAvgPoolCall& call);

}  // namespace edgeopt

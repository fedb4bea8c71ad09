// Global average pooling of NHWC activations (the mean of each channel over an image): u8 input into f32
// for a float head or into u8 for a quantized one, or f32 input into f32; the results are defined exactly
// in ukernels/gavgpool.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/qgemm_tiles.h"

namespace edgeopt {

// Most pixels an image may have: their sum of 255s must fit int32.
constexpr size_t kGAvgPoolMaxPixels = size_t(INT32_MAX) / 255;

struct GlobalAvgPoolCall {
  size_t batch = 0, pixels = 0, channels = 0;
  bool x_u8 = true;            // x is uint8 (quantized with x_params) or float32
  const void* x = nullptr;     // batch x pixels x channels, contiguous
  U8QuantParams x_params{1.0f, 0};
  OutKind out_kind = OutKind::kF32;   // kF32, or kU8 for a uint8 x
  U8QuantParams out_params{1.0f, 0};  // kU8 only
  void* out = nullptr;                // batch x channels, contiguous
  int num_threads = 1;
};

void global_avgpool_nhwc(const GlobalAvgPoolCall& call);

}  // namespace edgeopt

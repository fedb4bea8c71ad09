// Global average pooling of u8 NHWC activations: the mean over all pixels of one image, per channel, in
// front of a CNN's head. The channel sums are exact (int32); the mean is defined as one float product:
//   v[c] = sum_p x[p][c] - pixels * x_zero_point                 (exact)
//   f32: out[c] = float(v[c]) * scale                           (scale = x_scale / pixels)
//   u8 : out[c] = rint(clamp(float(v[c]) * scale, -zp, 255 - zp)) + zp
//                                                              (scale = x_scale / (pixels * out_scale))
// with `scale` rounded to float once by the op; rint rounds half to even.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ukernels/qgemm.h"

namespace edgeopt {

struct GAvgPoolParams {
  int32_t zero_point_sum;  // pixels * x_zero_point
  float scale;
  OutKind out_kind;  // kF32 or kU8
  int32_t out_zero_point;
};

// x: `pixels` pixels of `stride` channels each (NHWC rows of one image); pools channels [0, channels) of
// them (the caller offsets x and out to pool a channel range). pixels * 255 must fit int32.
using U8GAvgPoolFn = void (*)(size_t pixels, size_t channels, size_t stride, const uint8_t* x,
                              const GAvgPoolParams& p, void* out);

// float32 NHWC: out[c] = (sum_p x[p][c], added in pixel order in float) / float(pixels).
using F32GAvgPoolFn = void (*)(size_t pixels, size_t channels, size_t stride, const float* x, float* out);

void eo_u8_gavgpool__ref(size_t pixels, size_t channels, size_t stride, const uint8_t* x, const GAvgPoolParams& p,
                         void* out);
void eo_u8_gavgpool__avx2(size_t pixels, size_t channels, size_t stride, const uint8_t* x, const GAvgPoolParams& p,
                          void* out);

void eo_f32_gavgpool__ref(size_t pixels, size_t channels, size_t stride, const float* x, float* out);
void eo_f32_gavgpool__avx2(size_t pixels, size_t channels, size_t stride, const float* x, float* out);

}  // namespace edgeopt

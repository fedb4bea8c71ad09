// The scalar epilogue of the quantized kernels, written once so every __ref kernel agrees with it
// (and, through the tests, every SIMD kernel too).
#pragma once

#include <cmath>

#include "ukernels/qgemm.h"

namespace edgeopt {

inline void store_epilogue_ref(int32_t acc, const QGemmEpilogue& ep, size_t col, void* c, size_t index) {
  const int32_t v = acc - ep.a_zero_point * ep.w_colsum[col];
  if (ep.out_kind == OutKind::kS32) {
    static_cast<int32_t*>(c)[index] = v;
    return;
  }
  if (u8_fused_epilogue(ep)) {
    const float s = (ep.a_scale * ep.w_scale[col]) * ep.out_inv_scale;
    const float b = std::fma(ep.bias[col], ep.out_inv_scale, float(ep.out_zero_point));
    const float q = std::fmin(std::fmax(std::fma(float(v), s, b), u8_out_lo(ep)), u8_out_hi(ep));
    static_cast<uint8_t*>(c)[index] = uint8_t(std::nearbyint(q));
    return;
  }
  float y = std::fma(float(v), ep.a_scale * ep.w_scale[col], ep.bias[col]);
  if (ep.residual != nullptr) y += ep.residual[residual_index(ep, c) + index];
  y = std::fmin(std::fmax(y, ep.out_min), ep.out_max);
  if (ep.out_kind == OutKind::kF32) {
    static_cast<float*>(c)[index] = y;
    return;
  }
  float q = y * ep.out_inv_scale;
  q = std::fmin(std::fmax(q, float(-ep.out_zero_point)), float(255 - ep.out_zero_point));
  static_cast<uint8_t*>(c)[index] = uint8_t(int32_t(std::nearbyint(q)) + ep.out_zero_point);
}

}  // namespace edgeopt

// Checks shared by the int8 layer bindings (qlinear, qconv): input dtype, static input parameters,
// output kind and its parameters, clamp bounds. Fills the fields every int8 call struct has.
#pragma once

#include <cmath>

#include "bindings/validate.h"
#include "ops/qgemm_tiles.h"

namespace edgeopt::bind {

template <class Call>
void fill_quant_args(Call& call, const py::array& x, py::array& out, bool dynamic, float x_scale, int x_zero_point,
                     float out_min, float out_max, float out_scale, int out_zero_point, int num_threads) {
  if (has_dtype<float>(x)) {
    call.x_f32 = static_cast<const float*>(x.data());
  } else if (has_dtype<uint8_t>(x)) {
    call.x_u8 = static_cast<const uint8_t*>(x.data());
    if (dynamic) value_error("a uint8 input carries its own quantization parameters; dynamic must be False");
  } else {
    type_error("input must be float32 or uint8, got " + dtype_name(x));
  }
  call.dynamic = dynamic;
  if (!dynamic) {
    if (!(x_scale > 0.0f) || !std::isfinite(x_scale)) value_error("input scale must be positive and finite");
    if (x_zero_point < 0 || x_zero_point > 255) value_error("input zero point must be in [0, 255]");
  }
  call.x_params = {x_scale, x_zero_point};
  if (has_dtype<float>(out)) {
    call.out_kind = OutKind::kF32;
  } else if (has_dtype<uint8_t>(out)) {
    call.out_kind = OutKind::kU8;
    if (!(out_scale > 0.0f) || !std::isfinite(out_scale)) value_error("output scale must be positive and finite");
    if (out_zero_point < 0 || out_zero_point > 255) value_error("output zero point must be in [0, 255]");
  } else if (has_dtype<int32_t>(out)) {
    call.out_kind = OutKind::kS32;
  } else {
    type_error("output must be float32, uint8 or int32, got " + dtype_name(out));
  }
  if (!out.writeable()) value_error("output array is read-only");
  if (!(out_min <= out_max)) value_error("clamp bounds must satisfy min <= max (and not be NaN)");
  call.out_min = out_min;
  call.out_max = out_max;
  call.out_params = {out_scale, out_zero_point};
  call.out = out.mutable_data();
  call.num_threads = num_threads;
}

// The rows of a linear call: x (m, k) and out (m, n), rows possibly strided, elements adjacent.
template <class Call>
void fill_linear_rows(Call& call, const py::array& x, const py::array& out, size_t k, size_t n) {
  call.x_stride = row_stride_elems(x, "input");
  if (size_t(x.shape(1)) != k)
    value_error("input has " + std::to_string(x.shape(1)) + " features, the layer expects " + std::to_string(k));
  call.m = size_t(x.shape(0));
  call.out_stride = row_stride_elems(out, "output");
  if (size_t(out.shape(0)) != call.m || size_t(out.shape(1)) != n)
    value_error("output must have shape (" + std::to_string(call.m) + ", " + std::to_string(n) + ")");
}

}  // namespace edgeopt::bind

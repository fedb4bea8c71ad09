// Argument checks shared by the binding files: arrays are taken as they are (no forcecast), and a wrong
// dtype, shape or layout becomes a Python error that says what was expected.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstddef>
#include <string>

#include "ops/float_linear.h"
#include "ops/qlinear.h"

namespace edgeopt::bind {

namespace py = pybind11;

[[noreturn]] inline void type_error(const std::string& msg) { throw py::type_error("edgeopt: " + msg); }
[[noreturn]] inline void value_error(const std::string& msg) { throw py::value_error("edgeopt: " + msg); }

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Equivalence, not identity: an unpickled float32 dtype is a different object but the same type.
template <class T>
bool has_dtype(const py::array& a) {
  return py::isinstance<py::array_t<T>>(a);
}

template <class T>
void require_dtype(const py::array& a, const char* what) {
  if (!has_dtype<T>(a))
    type_error(std::string(what) + " must be " + py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
               dtype_name(a));
}

inline void require_c_contiguous(const py::array& a, const char* what) {
  if (!(a.flags() & py::array::c_style)) value_error(std::string(what) + " must be C-contiguous");
}

// Rows may be strided; elements within a row must be adjacent. Returns the row stride in elements.
inline size_t row_stride_elems(const py::array& a, const char* what) {
  if (a.ndim() != 2) value_error(std::string(what) + " must be 2-D, got " + std::to_string(a.ndim()) + "-D");
  const auto item = a.itemsize();
  if (a.shape(1) > 1 && a.strides(1) != item) value_error(std::string(what) + " must have a contiguous last dimension");
  if (a.strides(0) % item != 0 || a.strides(0) < 0) value_error(std::string(what) + " has an unsupported row stride");
  const size_t stride = size_t(a.strides(0) / item);
  if (a.shape(0) > 1 && stride < size_t(a.shape(1))) value_error(std::string(what) + " rows overlap");
  return a.shape(0) > 1 ? stride : size_t(a.shape(1));
}

// An optional float32 bias of n values: nullptr for None. `keep` holds the array while the pointer is used.
inline const float* optional_bias(const py::object& bias, size_t n, py::array& keep) {
  if (bias.is_none()) return nullptr;
  keep = bias.cast<py::array>();
  require_dtype<float>(keep, "bias");
  require_c_contiguous(keep, "bias");
  if (keep.ndim() != 1 || size_t(keep.shape(0)) != n) value_error("bias must have shape (out_features,)");
  return static_cast<const float*>(keep.data());
}

// The arguments of a float linear call: x (m, k) float32 in, out (m, n) float32, clamp.
inline FloatLinearCall make_call(const py::array& x, size_t k, py::array& out, size_t n, float out_min,
                                 float out_max, int num_threads) {
  FloatLinearCall call;
  if (!has_dtype<float>(x)) type_error("input must be float32, got " + dtype_name(x));
  call.x_stride = row_stride_elems(x, "input");
  if (size_t(x.shape(1)) != k)
    value_error("input has " + std::to_string(x.shape(1)) + " features, the layer expects " + std::to_string(k));
  call.m = size_t(x.shape(0));
  call.x = static_cast<const float*>(x.data());
  if (!has_dtype<float>(out)) type_error("output must be float32, got " + dtype_name(out));
  if (!out.writeable()) value_error("output array is read-only");
  call.out_stride = row_stride_elems(out, "output");
  if (size_t(out.shape(0)) != call.m || size_t(out.shape(1)) != n)
    value_error("output must have shape (" + std::to_string(call.m) + ", " + std::to_string(n) + ")");
  if (!(out_min <= out_max)) value_error("clamp bounds must satisfy min <= max (and not be NaN)");
  call.out_min = out_min;
  call.out_max = out_max;
  call.out = static_cast<float*>(out.mutable_data());
  call.num_threads = num_threads;
  return call;
}

// The arguments of an int8 linear call (qlinear, the block-sparse qlinear): input f32 or u8 with k
// features, output (m, n) f32/u8/s32, quantization parameters, clamp.
inline QLinearCall make_qlinear_call(const py::array& x, size_t k, size_t n, py::array& out, bool dynamic,
                                     float x_scale, int x_zero_point, float out_min, float out_max, float out_scale,
                                     int out_zero_point, int num_threads) {
  QLinearCall call;
  const bool x_is_f32 = has_dtype<float>(x);
  const bool x_is_u8 = has_dtype<uint8_t>(x);
  if (!x_is_f32 && !x_is_u8) type_error("input must be float32 or uint8, got " + dtype_name(x));
  call.x_stride = row_stride_elems(x, "input");
  if (size_t(x.shape(1)) != k)
    value_error("input has " + std::to_string(x.shape(1)) + " features, the layer expects " + std::to_string(k));
  call.m = size_t(x.shape(0));
  if (x_is_f32) {
    call.x_f32 = static_cast<const float*>(x.data());
  } else {
    call.x_u8 = static_cast<const uint8_t*>(x.data());
    if (dynamic) value_error("a uint8 input carries its own quantization parameters; dynamic must be False");
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
  call.out_stride = row_stride_elems(out, "output");
  if (size_t(out.shape(0)) != call.m || size_t(out.shape(1)) != n)
    value_error("output must have shape (" + std::to_string(call.m) + ", " + std::to_string(n) + ")");
  if (!(out_min <= out_max)) value_error("clamp bounds must satisfy min <= max (and not be NaN)");
  call.out_min = out_min;
  call.out_max = out_max;
  call.out_params = {out_scale, out_zero_point};
  call.out = out.mutable_data();
  call.num_threads = num_threads;
  return call;
}

}  // namespace edgeopt::bind

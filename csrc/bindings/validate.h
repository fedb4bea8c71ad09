// Argument checks shared by the binding files: arrays are taken as they are (no forcecast), and a wrong
// dtype, shape or layout becomes a Python error that says what was expected.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/float_linear.h"
#include "pack/pack_header.h"

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
  if (a.shape(0) == 0) return size_t(a.shape(1));  // no rows: numpy gives empty arrays zero strides
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
  const float* b = static_cast<const float*>(keep.data());
  // NaN would not stay NaN in every epilogue (the int8 ones fold the bias with the clamp): refuse it here.
  for (size_t j = 0; j < n; ++j)
    if (!std::isfinite(b[j])) value_error("bias " + std::to_string(j) + " is not finite");
  return b;
}

// The once-per-load check of a packed buffer's checksum (per-call views only check the header).
inline void verify_checksum(const py::array& packed) {
  try {
    verify_pack_checksum(static_cast<const uint8_t*>(packed.data()), size_t(packed.nbytes()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
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

// Runs the core call f() with the GIL released; a std::domain_error from it (NaN or Inf in a quantized
// layer's input) becomes a ValueError.
template <class F>
auto call_without_gil(F&& f) {
  py::gil_scoped_release release;
  try {
    return f();
  } catch (const std::domain_error& e) {
    py::gil_scoped_acquire acquire;
    throw py::value_error(e.what());
  }
}

}  // namespace edgeopt::bind

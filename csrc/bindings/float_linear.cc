// pybind11 bindings of the float-weight ops (fp32 / fp16 packed weights, fused low rank); registered from
// module.cc. Same rules as there: arrays are taken as they are (no forcecast), wrong dtype or layout is
// a clear Python error, the GIL is released around the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "bindings/validate.h"
#include "ops/float_linear.h"
#include "ops/qs8_low_rank.h"
#include "pack/float_packed.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;

namespace {

bool is_float16(const py::array& a) { return a.dtype().kind() == 'f' && a.itemsize() == 2; }

FloatPackedView float_view(const py::array& packed, const char* what = "packed weights") {
  if (!has_dtype<uint8_t>(packed)) type_error(std::string(what) + " must be uint8, got " + dtype_name(packed));
  if (packed.ndim() != 1) value_error(std::string(what) + " must be a 1-D uint8 buffer");
  require_c_contiguous(packed, what);
  try {
    return view_float_packed(static_cast<const uint8_t*>(packed.data()), size_t(packed.size()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::array_t<uint8_t> fw_pack(const py::array& w, const py::object& bias) {
  FloatWeightType type;
  if (has_dtype<float>(w)) {
    type = FloatWeightType::kF32;
  } else if (is_float16(w)) {
    type = FloatWeightType::kF16;
  } else {
    type_error("weight must be float32 or float16, got " + dtype_name(w));
  }
  if (w.ndim() != 2) value_error("weight must be 2-D (out_features, in_features)");
  require_c_contiguous(w, "weight");
  const size_t n = size_t(w.shape(0)), k = size_t(w.shape(1));
  py::array bias_arr;
  const float* bias_ptr = optional_bias(bias, n, bias_arr);
  if (n == 0 || k == 0) value_error("cannot pack an empty weight matrix");
  py::array_t<uint8_t> out(float_packed_size(type, n, k));
  try {
    pack_float_weights(type, w.data(), bias_ptr, n, k, out.mutable_data(), size_t(out.size()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

py::dict fw_packed_info(const py::array& packed) {
  const FloatPackedView v = float_view(packed);
  try {
    validate_float_contents(v);  // once per load: a buffer from a file must meet every kernel assumption
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  verify_checksum(packed);  // after the contents: their messages say more about what is wrong
  py::dict d;
  d["version"] = v.header.version;
  d["format"] = v.header.format;
  d["weight_dtype"] = v.type == FloatWeightType::kF16 ? "fp16" : "fp32";
  d["out_features"] = v.n();
  d["in_features"] = v.k();
  d["has_bias"] = bool(v.header.has_bias);
  return d;
}

py::tuple fw_unpack(const py::array& packed) {
  const FloatPackedView v = float_view(packed);
  py::array w = v.type == FloatWeightType::kF16 ? py::array(py::dtype("float16"), {v.n(), v.k()})
                                                : py::array(py::dtype::of<float>(), {v.n(), v.k()});
  py::array_t<float> bias(v.n());
  unpack_float_weights(v, w.mutable_data(), bias.mutable_data());
  return py::make_tuple(w, bias);
}

void fw_linear_py(const py::array& x, const py::array& packed, py::array& out, float out_min, float out_max,
                  int num_threads) {
  const FloatPackedView w = float_view(packed);
  const FloatLinearCall call = make_call(x, w.k(), out, w.n(), out_min, out_max, num_threads);
  if (call.m == 0) return;
  py::gil_scoped_release release;
  float_linear(w, call);
}

void low_rank_linear_py(const py::array& x, const py::array& packed_v, const py::array& packed_u, py::array& out,
                        float out_min, float out_max, int num_threads) {
  const FloatPackedView v = float_view(packed_v, "packed V");
  const FloatPackedView u = float_view(packed_u, "packed U");
  if (u.k() != v.n())
    value_error("low-rank factors do not chain: V^T is " + std::to_string(v.n()) + "x" + std::to_string(v.k()) +
                ", U is " + std::to_string(u.n()) + "x" + std::to_string(u.k()) + " (U's columns must equal the rank)");
  if (v.header.has_bias) value_error("packed V carries a bias; the layer bias belongs to U");
  const FloatLinearCall call = make_call(x, v.k(), out, u.n(), out_min, out_max, num_threads);
  if (call.m == 0) return;
  py::gil_scoped_release release;
  low_rank_linear(v, u, call);
}

Qs8PackedView qs8_view(const py::array& packed, const char* what) {
  if (!has_dtype<uint8_t>(packed)) type_error(std::string(what) + " must be uint8, got " + dtype_name(packed));
  if (packed.ndim() != 1) value_error(std::string(what) + " must be a 1-D uint8 buffer");
  require_c_contiguous(packed, what);
  try {
    return view_qs8_packed(static_cast<const uint8_t*>(packed.data()), size_t(packed.size()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(std::string(e.what()) + " (" + what + ")");
  }
}

void qs8_low_rank_linear_py(const py::array& x, const py::array& packed_v, const py::array& packed_u, py::array& out,
                            float out_min, float out_max, int num_threads) {
  const Qs8PackedView v = qs8_view(packed_v, "packed V");
  const Qs8PackedView u = qs8_view(packed_u, "packed U");
  if (u.k() != v.n())
    value_error("low-rank factors do not chain: V^T is " + std::to_string(v.n()) + "x" + std::to_string(v.k()) +
                ", U is " + std::to_string(u.n()) + "x" + std::to_string(u.k()) + " (U's columns must equal the rank)");
  if (v.header.has_bias) value_error("packed V carries a bias; the layer bias belongs to U");
  const FloatLinearCall fc = make_call(x, v.k(), out, u.n(), out_min, out_max, num_threads);
  if (fc.m == 0) return;
  Qs8LowRankCall call;
  call.x = fc.x;
  call.m = fc.m;
  call.x_stride = fc.x_stride;
  call.out_min = fc.out_min;
  call.out_max = fc.out_max;
  call.out = fc.out;
  call.out_stride = fc.out_stride;
  call.num_threads = fc.num_threads;
  call_without_gil([&] { qs8_low_rank_linear(v, u, call); });
}

}  // namespace

void register_float_linear(py::module_& m) {
  m.def("fw_pack", &fw_pack, py::arg("weight"), py::arg("bias") = py::none(),
        "Pack float weights (out_features, in_features), float32 or float16 (the dtype picks the format), "
        "with an optional float32 bias.");
  m.def("fw_unpack", &fw_unpack, py::arg("packed"), "Inverse of fw_pack: (weight, bias).");
  m.def("fw_packed_info", &fw_packed_info, py::arg("packed"), "Validate a packed float buffer and describe it.");
  m.def("fw_linear", &fw_linear_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("num_threads") = 1,
        "out = clamp(x @ W^T + bias). x: (M, K) float32; out: (M, N) float32. fp16 weights are widened in the "
        "kernel; accumulation is fp32.");
  m.def("low_rank_linear", &low_rank_linear_py, py::arg("x"), py::arg("packed_v"), py::arg("packed_u"),
        py::arg("out"), py::arg("out_min") = -INFINITY, py::arg("out_max") = INFINITY, py::arg("num_threads") = 1,
        "out = clamp((x @ V) @ U^T + bias), fused; packed_v holds V^T (rank, K), packed_u holds U (N, rank) "
        "and the bias. Bit-identical to two fw_linear calls.");
  m.def("qs8_low_rank_linear", &qs8_low_rank_linear_py, py::arg("x"), py::arg("packed_v"), py::arg("packed_u"),
        py::arg("out"), py::arg("out_min") = -INFINITY, py::arg("out_max") = INFINITY, py::arg("num_threads") = 1,
        "Low rank with int8 factors (qs8_pack buffers; V^T without bias, U with the bias), dynamic u8 activations "
        "at both stages; bit-identical to two dynamic qlinear calls.");
}

// pybind11 bindings of the block-sparse layers; registered from module.cc. Same rules as
// there: arrays are taken as they are (no forcecast), a wrong dtype or layout is a clear Python error,
// the GIL is released around the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include <cmath>
#include <stdexcept>
#include <string>

#include "bindings/conv_args.h"
#include "bindings/quant_args.h"
#include "bindings/validate.h"
#include "ops/sparse_conv.h"
#include "ops/sparse_linear.h"
#include "pack/sparse_packed.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;

namespace {

SparsePackedView sparse_view(const py::array& packed) {
  if (!has_dtype<uint8_t>(packed)) type_error("packed weights must be uint8, got " + dtype_name(packed));
  if (packed.ndim() != 1) value_error("packed weights must be a 1-D uint8 buffer");
  require_c_contiguous(packed, "packed weights");
  try {
    return view_sparse_packed(static_cast<const uint8_t*>(packed.data()), size_t(packed.size()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::array_t<uint8_t> sp_pack(const py::array& w, const py::object& scale, const py::object& bias, int block_cols) {
  bool is_int8;
  if (has_dtype<float>(w)) {
    is_int8 = false;
  } else if (has_dtype<int8_t>(w)) {
    is_int8 = true;
  } else {
    type_error("weight must be float32 or int8, got " + dtype_name(w));
  }
  if (w.ndim() != 2) value_error("weight must be 2-D (out_features, in_features)");
  require_c_contiguous(w, "weight");
  const size_t n = size_t(w.shape(0)), k = size_t(w.shape(1));
  if (n == 0 || k == 0) value_error("cannot pack an empty weight matrix");
  if (block_cols != 8 && block_cols != 16) value_error("block_cols must be 8 or 16, got " + std::to_string(block_cols));
  const float* scale_ptr = nullptr;
  py::array scale_arr;
  if (is_int8) {
    if (scale.is_none()) value_error("int8 weights need their per-channel scale");
    scale_arr = scale.cast<py::array>();
    require_dtype<float>(scale_arr, "scale");
    require_c_contiguous(scale_arr, "scale");
    if (scale_arr.ndim() != 1 || size_t(scale_arr.shape(0)) != n) value_error("scale must have shape (out_features,)");
    scale_ptr = static_cast<const float*>(scale_arr.data());
  } else if (!scale.is_none()) {
    value_error("float32 weights take no scale");
  }
  py::array bias_arr;
  const float* bias_ptr = optional_bias(bias, n, bias_arr);
  try {
    const size_t bytes = sparse_packed_size(is_int8, w.data(), n, k, size_t(block_cols));
    py::array_t<uint8_t> out(bytes);
    pack_sparse_weights(is_int8, w.data(), scale_ptr, bias_ptr, n, k, size_t(block_cols), out.mutable_data(), bytes);
    return out;
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::dict sp_packed_info(const py::array& packed) {
  const SparsePackedView v = sparse_view(packed);
  try {
    validate_sparse_contents(v);  // once per load: a buffer from a file must meet every kernel assumption
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  verify_checksum(packed);  // after the contents: their messages say more about what is wrong
  py::dict d;
  d["version"] = v.header.version;
  d["format"] = v.header.format;
  d["weight_dtype"] = v.is_int8 ? "int8" : "fp32";
  d["out_features"] = v.n();
  d["in_features"] = v.k();
  d["has_bias"] = bool(v.header.has_bias);
  d["block"] = py::make_tuple(v.nb(), v.kr());
  d["blocks"] = v.nnz();
  d["total_blocks"] = v.block_rows() * (v.k_padded() / v.kr());
  d["density"] = double(v.nnz()) / double(v.block_rows() * (v.k_padded() / v.kr()));
  d["bytes"] = v.header.total_bytes;
  return d;
}

py::tuple sp_unpack(const py::array& packed) {
  const SparsePackedView v = sparse_view(packed);
  py::array w = v.is_int8 ? py::array(py::dtype::of<int8_t>(), {v.n(), v.k()})
                          : py::array(py::dtype::of<float>(), {v.n(), v.k()});
  py::array_t<float> scale(v.n()), bias(v.n());
  unpack_sparse_weights(v, w.mutable_data(), scale.mutable_data(), bias.mutable_data());
  if (!v.is_int8) return py::make_tuple(w, py::none(), bias);
  return py::make_tuple(w, scale, bias);
}

void sp_linear_py(const py::array& x, const py::array& packed, py::array& out, float out_min, float out_max,
                  int num_threads) {
  const SparsePackedView w = sparse_view(packed);
  if (w.is_int8) value_error("sp_linear takes fp32 sparse weights; int8 ones go to sp_qlinear");
  const FloatLinearCall call = make_call(x, w.k(), out, w.n(), out_min, out_max, num_threads);
  if (call.m == 0) return;
  py::gil_scoped_release release;
  sparse_float_linear(w, call);
}

py::tuple sp_qlinear_py(const py::array& x, const py::array& packed, py::array& out, bool dynamic, float x_scale,
                        int x_zero_point, float out_min, float out_max, float out_scale, int out_zero_point,
                        int num_threads) {
  const SparsePackedView w = sparse_view(packed);
  if (!w.is_int8) value_error("sp_qlinear takes int8 sparse weights; fp32 ones go to sp_linear");
  QLinearCall call;
  fill_quant_args(call, x, out, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                  num_threads);
  fill_linear_rows(call, x, out, w.k(), w.n());
  if (call.m == 0) return py::make_tuple(dynamic ? 1.0f : x_scale, dynamic ? 0 : x_zero_point);  // no rows
  const U8QuantParams used = call_without_gil([&] { return sparse_qlinear(w, call); });
  return py::make_tuple(used.scale, used.zero_point);
}

py::tuple sp_conv2d_py(const py::array& x, const py::array& packed, py::array& out, Pair kernel, Pair stride,
                       Pair padding, Pair dilation, bool dynamic, float x_scale, int x_zero_point, float out_min,
                       float out_max, float out_scale, int out_zero_point, int num_threads,
                       const py::object& residual) {
  const SparsePackedView w = sparse_view(packed);
  SparseConvCall call;
  call.g = conv_geometry(x, out, kernel, stride, padding, dilation, 1);
  if (w.is_int8) {
    fill_quant_args(call, x, out, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                    num_threads);
  } else {
    if (!has_dtype<float>(x)) type_error("input must be float32 for fp32 sparse weights, got " + dtype_name(x));
    if (!has_dtype<float>(out)) type_error("output must be float32 for fp32 sparse weights, got " + dtype_name(out));
    if (!out.writeable()) value_error("output array is read-only");
    if (!(out_min <= out_max)) value_error("clamp bounds must satisfy min <= max (and not be NaN)");
    call.x_f32 = static_cast<const float*>(x.data());
    call.out = out.mutable_data();
    call.out_min = out_min;
    call.out_max = out_max;
    call.num_threads = num_threads;
  }
  const ConvGeometry& g = call.g;
  if (w.k() != g.kernel_h * g.kernel_w * g.in_c || w.n() != g.out_c)
    value_error("weights are " + std::to_string(w.n()) + " x " + std::to_string(w.k()) + "; the call needs " +
                std::to_string(g.out_c) + " x " + std::to_string(g.kernel_h * g.kernel_w * g.in_c) +
                " (out_channels x kh*kw*in_channels)");
  py::array residual_arr;
  call.residual = optional_residual(residual, out, call.out_kind, residual_arr);
  if (call.residual != nullptr && (!w.is_int8 || w.nb() != 16))
    value_error("a residual is added by int8 sparse weights in 16-column blocks only (block_cols=16)");
  if (g.batch == 0) return py::make_tuple(dynamic ? 1.0f : x_scale, dynamic ? 0 : x_zero_point);  // no images
  const U8QuantParams used = call_without_gil([&] { return sparse_conv2d(w, call); });
  return py::make_tuple(used.scale, used.zero_point);
}

}  // namespace

void register_sparse(py::module_& m) {
  m.def("sp_pack", &sp_pack, py::arg("weight"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("block_cols") = 8,
        "Pack a pruned weight (out_features, in_features) as block-sparse: float32 in block_cols x 1 blocks, or "
        "int8 in [-63, 63] (with per-channel scale) in block_cols x 4 blocks; blocks with a non-zero weight are kept.");
  m.def("sp_unpack", &sp_unpack, py::arg("packed"), "Inverse of sp_pack: (dense weight, scale or None, bias).");
  m.def("sp_packed_info", &sp_packed_info, py::arg("packed"), "Validate a packed sparse buffer and describe it.");
  m.def("sp_linear", &sp_linear_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("num_threads") = 1,
        "out = clamp(x @ W^T + bias) with fp32 block-sparse W. x: (M, K) float32; out: (M, N) float32.");
  m.def("sp_qlinear", &sp_qlinear_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("dynamic"),
        py::arg("x_scale") = 1.0f, py::arg("x_zero_point") = 0, py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
        py::arg("num_threads") = 1,
        "qlinear with int8 block-sparse W: out = epilogue(quant_u8(x) @ W^T); out float32, uint8 or int32 (exact). "
        "Returns the input (scale, zero_point) used.");
  m.def("sp_conv2d", &sp_conv2d_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("dynamic") = false,
        py::arg("x_scale") = 1.0f, py::arg("x_zero_point") = 0, py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
        py::arg("num_threads") = 1, py::arg("residual") = py::none(),
        "NHWC block-sparse convolution (groups 1): weights sp_pack'ed as (out_channels, kh*kw*in_channels) in "
        "(ky, kx, c) order; fp32 (x, out float32) or int8 (x float32 or uint8; out float32, uint8 or int32). "
        "residual (int8, 16-column blocks): float32 of the output's shape, added before the clamp. "
        "Returns the input (scale, zero_point) used.");
}

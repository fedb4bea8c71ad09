// pybind11 bindings of the int8 convolution (ops/qconv.h, ops/qdwconv.h); registered from module.cc. Activations are NHWC numpy arrays; the Python modules do the NCHW / channels-last
// bookkeeping.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/conv_args.h"
#include "bindings/packed_args.h"
#include "bindings/quant_args.h"
#include "bindings/validate.h"
#include "ops/qconv.h"
#include "ops/qdwconv.h"
#include "pack/qdw_packed.h"
#include "pack/qs8_packed.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;

namespace {

// weight: (out_channels, K) int8 with K = kh*kw*cin_per_group in (ky, kx, c) order.
py::array_t<uint8_t> qconv_pack(const py::array& w, const py::array& scale, const py::object& bias, int64_t groups) {
  require_dtype<int8_t>(w, "weight");
  require_dtype<float>(scale, "scale");
  require_c_contiguous(w, "weight");
  require_c_contiguous(scale, "scale");
  if (w.ndim() != 2) value_error("conv weight must be given as 2-D (out_channels, kh*kw*in_channels/groups)");
  const size_t n = size_t(w.shape(0)), k = size_t(w.shape(1));
  if (groups < 1 || n % size_t(groups) != 0) value_error("out_channels must be a multiple of groups");
  if (scale.ndim() != 1 || size_t(scale.shape(0)) != n) value_error("scale must have shape (out_channels,)");
  py::array keep;
  const float* bias_ptr = optional_bias(bias, n, keep);
  if (n == 0 || k == 0) value_error("cannot pack an empty weight");
  const size_t ng = n / size_t(groups), each = qs8_packed_size(ng, k);
  py::array_t<uint8_t> out(each * size_t(groups));
  const int8_t* wp = static_cast<const int8_t*>(w.data());
  const float* sp = static_cast<const float*>(scale.data());
  for (int64_t g = 0; g < groups; ++g) {
    rethrow_as_value_error([&] {
      pack_qs8_weights(wp + size_t(g) * ng * k, sp + size_t(g) * ng, bias_ptr ? bias_ptr + size_t(g) * ng : nullptr, ng,
                       k, out.mutable_data() + size_t(g) * each, each);
      return 0;
    });
  }
  return out;
}

// weight: (channels, kh*kw) int8 in [-127, 127].
py::array_t<uint8_t> qdw_pack(const py::array& w, const py::array& scale, const py::object& bias) {
  require_dtype<int8_t>(w, "weight");
  require_dtype<float>(scale, "scale");
  require_c_contiguous(w, "weight");
  require_c_contiguous(scale, "scale");
  if (w.ndim() != 2) value_error("depthwise weight must be given as 2-D (channels, kh*kw)");
  const size_t c = size_t(w.shape(0)), taps = size_t(w.shape(1));
  if (scale.ndim() != 1 || size_t(scale.shape(0)) != c) value_error("scale must have shape (channels,)");
  py::array keep;
  const float* bias_ptr = optional_bias(bias, c, keep);
  if (c == 0 || taps == 0) value_error("cannot pack an empty weight");
  py::array_t<uint8_t> out(qdw_packed_size(c, taps));
  rethrow_as_value_error([&] {
    pack_qdw_weights(static_cast<const int8_t*>(w.data()), static_cast<const float*>(scale.data()), bias_ptr, c, taps,
                     out.mutable_data(), size_t(out.size()));
    return 0;
  });
  return out;
}

// Validates a conv pack (either layout) completely and returns (weight 2-D, scale, bias), as packed.
py::tuple qconv_unpack(const py::array& packed, int64_t groups, bool validate) {
  if (is_depthwise_pack(packed)) {
    const QdwPackedView v = dw_view(packed);
    if (validate) rethrow_as_value_error([&] { validate_qdw_contents(v); return 0; });
    py::array_t<int8_t> w({v.channels(), v.taps()});
    py::array_t<float> scale(v.channels()), bias(v.channels());
    unpack_qdw_weights(v, w.mutable_data(), scale.mutable_data(), bias.mutable_data());
    return py::make_tuple(w, scale, bias);
  }
  const std::vector<Qs8PackedView> views = group_views(packed, groups);
  const size_t ng = views[0].n(), k = views[0].k();
  py::array_t<int8_t> w({ng * views.size(), k});
  py::array_t<float> scale(ng * views.size()), bias(ng * views.size());
  for (size_t g = 0; g < views.size(); ++g) {
    if (validate) rethrow_as_value_error([&] { validate_qs8_contents(views[g]); return 0; });
    unpack_qs8_weights(views[g], w.mutable_data() + g * ng * k, scale.mutable_data() + g * ng,
                       bias.mutable_data() + g * ng);
  }
  return py::make_tuple(w, scale, bias);
}

py::tuple qconv2d_py(const py::array& x, const py::array& packed, py::array& out, Pair kernel, Pair stride,
                     Pair padding, Pair dilation, int64_t groups, bool dynamic, float x_scale, int x_zero_point,
                     float out_min, float out_max, float out_scale, int out_zero_point, int num_threads,
                     const py::object& residual) {
  QConvCall call;
  fill_quant_args(call, x, out, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                  num_threads);
  call.g = conv_geometry(x, out, kernel, stride, padding, dilation, groups);
  const ConvGeometry& g = call.g;
  py::array residual_arr;
  if (!residual.is_none()) {
    residual_arr = residual.cast<py::array>();
    require_dtype<float>(residual_arr, "residual");
    require_c_contiguous(residual_arr, "residual");
    if (residual_arr.ndim() != 4 || !std::equal(out.shape(), out.shape() + 4, residual_arr.shape()))
      value_error("residual must have the output's shape (N, OH, OW, out_channels)");
    if (call.out_kind == OutKind::kS32) value_error("a residual cannot be added to the exact int32 output");
    call.residual = static_cast<const float*>(residual_arr.data());
  }
  const size_t taps = g.kernel_h * g.kernel_w;
  U8QuantParams used;
  if (is_depthwise_pack(packed)) {
    const QdwPackedView w = dw_view(packed);
    if (g.groups != g.in_c || g.out_c != g.in_c || w.channels() != g.in_c || w.taps() != taps)
      value_error("depthwise weights are for " + std::to_string(w.channels()) + " channels x " +
                  std::to_string(w.taps()) + " taps; the call has groups=" + std::to_string(g.groups) + ", " +
                  std::to_string(g.in_c) + " -> " + std::to_string(g.out_c) + " channels, " + std::to_string(taps) +
                  " taps");
    if (g.kernel_h > 32) value_error("depthwise filters taller than 32 rows are not supported");
    used = call_without_gil([&] { return qdwconv2d(w, call); });
  } else {
    const std::vector<Qs8PackedView> views = group_views(packed, groups);
    const size_t k = taps * (g.in_c / g.groups);
    if (views[0].k() != k || views[0].n() * g.groups != g.out_c)
      value_error("weights are for " + std::to_string(views[0].n() * g.groups) + " outputs x " +
                  std::to_string(views[0].k()) + " inputs per group; the call needs " + std::to_string(g.out_c) +
                  " x " + std::to_string(k));
    used = call_without_gil([&] { return qconv2d(views.data(), call); });
  }
  return py::make_tuple(used.scale, used.zero_point);
}

}  // namespace

void register_qconv(py::module_& m) {
  m.attr("QDW_WEIGHT_MAX") = int(kQDwWeightMax);
  m.def("qconv_pack", &qconv_pack, py::arg("weight"), py::arg("scale"), py::arg("bias") = py::none(),
        py::arg("groups") = 1,
        "Pack conv weights given as (out_channels, kh*kw*in_channels/groups) int8 in [-63, 63], (ky, kx, c) order.");
  m.def("qdw_pack", &qdw_pack, py::arg("weight"), py::arg("scale"), py::arg("bias") = py::none(),
        "Pack depthwise weights given as (channels, kh*kw) int8 in [-127, 127].");
  m.def("qconv_unpack", &qconv_unpack, py::arg("packed"), py::arg("groups") = 1, py::arg("validate") = true,
        "Inverse of qconv_pack / qdw_pack: (weight 2-D, scale, bias); validate=True checks every packed value.");
  m.def("qconv2d", &qconv2d_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("kernel"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("dynamic"),
        py::arg("x_scale") = 1.0f, py::arg("x_zero_point") = 0, py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
        py::arg("num_threads") = 1, py::arg("residual") = py::none(),
        "NHWC int8 convolution: x (N, H, W, C) float32 or uint8, out (N, OH, OW, OC) float32, uint8 or int32 "
        "(int32 = exact integer result); residual: optional float32 of out's shape added before the clamp. "
        "Returns the input (scale, zero_point) used.");
}

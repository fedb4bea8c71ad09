// pybind11 bindings of the NHWC pooling ops: max pooling (ops/maxpool.h, float32 or uint8) and global
// average pooling of uint8 activations (ops/gavgpool.h); registered from module.cc.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings/conv_args.h"
#include "bindings/validate.h"
#include "ops/gavgpool.h"
#include "ops/maxpool.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;

namespace {

void maxpool2d_py(const py::array& x, py::array& out, Pair kernel, Pair stride, Pair padding, Pair dilation,
                  int num_threads) {
  require_nhwc(x, "input");
  require_nhwc(out, "output");
  MaxPoolCall call;
  call.u8 = has_dtype<uint8_t>(x);
  if (!call.u8 && !has_dtype<float>(x)) type_error("input must be float32 or uint8, got " + dtype_name(x));
  if (out.dtype().not_equal(x.dtype())) type_error("output must have the input's dtype");
  if (!out.writeable()) value_error("output array is read-only");
  check_window(kernel, stride, padding, dilation);
  for (int i = 0; i < 2; ++i)
    if (padding[i] > kernel[i] / 2) value_error("padding must be at most half the kernel size (as in torch)");
  call.batch = size_t(x.shape(0));
  call.in_h = size_t(x.shape(1));
  call.in_w = size_t(x.shape(2));
  call.channels = size_t(x.shape(3));
  call.out_h = size_t(out.shape(1));
  call.out_w = size_t(out.shape(2));
  if (size_t(out.shape(0)) != call.batch || size_t(out.shape(3)) != call.channels)
    value_error("output must have the input's batch and channels");
  call.kernel_h = size_t(kernel[0]);
  call.kernel_w = size_t(kernel[1]);
  call.stride_h = size_t(stride[0]);
  call.stride_w = size_t(stride[1]);
  call.pad_h = size_t(padding[0]);
  call.pad_w = size_t(padding[1]);
  call.dilation_h = size_t(dilation[0]);
  call.dilation_w = size_t(dilation[1]);
  if (first_empty_window(call.in_h, call.out_h, call.kernel_h, call.stride_h, call.pad_h, call.dilation_h) != call.out_h ||
      first_empty_window(call.in_w, call.out_w, call.kernel_w, call.stride_w, call.pad_w, call.dilation_w) != call.out_w)
    value_error("output size leaves a pooling window entirely outside the input");
  call.x = x.data();
  call.out = out.mutable_data();
  call.num_threads = num_threads;
  if (call.batch == 0 || call.channels == 0) return;
  py::gil_scoped_release release;
  maxpool2d_nhwc(call);
}

void global_avgpool_py(const py::array& x, py::array& out, float x_scale, int x_zero_point, float out_scale,
                       int out_zero_point, int num_threads) {
  require_nhwc(x, "input");
  require_c_contiguous(out, "output");
  if (!out.writeable()) value_error("output array is read-only");
  GlobalAvgPoolCall call;
  call.x_u8 = has_dtype<uint8_t>(x);
  if (!call.x_u8 && !has_dtype<float>(x)) type_error("input must be uint8 or float32, got " + dtype_name(x));
  call.batch = size_t(x.shape(0));
  call.pixels = size_t(x.shape(1)) * size_t(x.shape(2));
  call.channels = size_t(x.shape(3));
  if (out.ndim() != 2 || size_t(out.shape(0)) != call.batch || size_t(out.shape(1)) != call.channels)
    value_error("output must have shape (" + std::to_string(call.batch) + ", " + std::to_string(call.channels) + ")");
  if (call.pixels == 0) value_error("cannot average an empty image");
  if (call.pixels > kGAvgPoolMaxPixels)
    value_error("images of more than " + std::to_string(kGAvgPoolMaxPixels) + " pixels are not supported");
  if (call.x_u8) {
    if (!(x_scale > 0.0f) || !std::isfinite(x_scale)) value_error("input scale must be positive and finite");
    if (x_zero_point < 0 || x_zero_point > 255) value_error("input zero point must be in [0, 255]");
    call.x_params = {x_scale, x_zero_point};
  }
  if (has_dtype<float>(out)) {
    call.out_kind = OutKind::kF32;
  } else if (has_dtype<uint8_t>(out) && call.x_u8) {
    call.out_kind = OutKind::kU8;
    if (!(out_scale > 0.0f) || !std::isfinite(out_scale)) value_error("output scale must be positive and finite");
    if (out_zero_point < 0 || out_zero_point > 255) value_error("output zero point must be in [0, 255]");
    call.out_params = {out_scale, out_zero_point};
  } else {
    type_error(std::string("output must be float32") + (call.x_u8 ? " or uint8" : " for a float32 input") + ", got " +
               dtype_name(out));
  }
  call.x = x.data();
  call.out = out.mutable_data();
  call.num_threads = num_threads;
  if (call.batch == 0 || call.channels == 0) return;
  py::gil_scoped_release release;
  global_avgpool_nhwc(call);
}

}  // namespace

void register_pool(py::module_& m) {
  m.def("maxpool2d", &maxpool2d_py, py::arg("x"), py::arg("out"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("num_threads") = 1,
        "NHWC max pooling, float32 or uint8 (max commutes with u8 quantization, so a quantized activation pools "
        "as it is); out's spatial size decides floor or ceil mode.");
  m.def("global_avgpool", &global_avgpool_py, py::arg("x"), py::arg("out"), py::arg("x_scale") = 1.0f,
        py::arg("x_zero_point") = 0, py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
        py::arg("num_threads") = 1,
        "Mean over each image's pixels of NHWC x (N, H, W, C): uint8 x quantized with (x_scale, x_zero_point) "
        "into out (N, C) float32, or uint8 quantized with (out_scale, out_zero_point) (one float product of the "
        "exact channel sum, rint half to even); float32 x into float32 (pixel-order float sum / pixels).");
}

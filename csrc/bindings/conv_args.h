// Checks shared by the NHWC conv and pooling bindings (qconv, sparse conv, max pool): array layout,
// window parameters, and the conv geometry a call's arrays and parameters describe.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

#include "bindings/validate.h"
#include "ops/qconv.h"

namespace edgeopt::bind {

using Pair = std::array<int64_t, 2>;

inline void require_nhwc(const py::array& a, const char* what) {
  if (a.ndim() != 4) value_error(std::string(what) + " must be 4-D (N, H, W, C), got " + std::to_string(a.ndim()) + "-D");
  require_c_contiguous(a, what);
}

// The optional float residual a conv's epilogue adds before its clamp: float32, C-contiguous, the output's
// NHWC shape, not with the exact int32 output. `holder` keeps the array alive for the call.
inline const float* optional_residual(const py::object& residual, const py::array& out, OutKind out_kind,
                                      py::array& holder) {
  if (residual.is_none()) return nullptr;
  holder = residual.cast<py::array>();
  require_dtype<float>(holder, "residual");
  require_c_contiguous(holder, "residual");
  if (holder.ndim() != 4 || !std::equal(out.shape(), out.shape() + 4, holder.shape()))
    value_error("residual must have the output's shape (N, OH, OW, out_channels)");
  if (out_kind == OutKind::kS32) value_error("a residual cannot be added to the exact int32 output");
  return static_cast<const float*>(holder.data());
}

inline void check_window(const Pair& kernel, const Pair& stride, const Pair& padding, const Pair& dilation) {
  for (int i = 0; i < 2; ++i) {
    if (kernel[i] < 1 || stride[i] < 1 || dilation[i] < 1 || padding[i] < 0)
      value_error("kernel, stride and dilation must be >= 1 and padding >= 0");
  }
}

// The geometry of a conv from x (N, H, W, C) to out (N, OH, OW, OC), both NHWC and C-contiguous; checks
// groups and that out's spatial size is the one the parameters give.
inline ConvGeometry conv_geometry(const py::array& x, const py::array& out, const Pair& kernel, const Pair& stride,
                                  const Pair& padding, const Pair& dilation, int64_t groups) {
  require_nhwc(x, "input");
  require_nhwc(out, "output");
  check_window(kernel, stride, padding, dilation);
  ConvGeometry g;
  g.batch = size_t(x.shape(0));
  g.in_h = size_t(x.shape(1));
  g.in_w = size_t(x.shape(2));
  g.in_c = size_t(x.shape(3));
  g.out_c = size_t(out.shape(3));
  g.kernel_h = size_t(kernel[0]);
  g.kernel_w = size_t(kernel[1]);
  g.stride_h = size_t(stride[0]);
  g.stride_w = size_t(stride[1]);
  g.pad_h = size_t(padding[0]);
  g.pad_w = size_t(padding[1]);
  g.dilation_h = size_t(dilation[0]);
  g.dilation_w = size_t(dilation[1]);
  if (groups < 1 || g.in_c % size_t(groups) != 0 || g.out_c % size_t(groups) != 0)
    value_error("in and out channels must be multiples of groups");
  g.groups = size_t(groups);
  if (g.out_h() == 0 || g.out_w() == 0)
    value_error("input " + std::to_string(g.in_h) + "x" + std::to_string(g.in_w) +
                " is smaller than the (dilated) kernel even with padding");
  if (size_t(out.shape(0)) != g.batch || size_t(out.shape(1)) != g.out_h() || size_t(out.shape(2)) != g.out_w())
    value_error("output must have shape (" + std::to_string(g.batch) + ", " + std::to_string(g.out_h()) + ", " +
                std::to_string(g.out_w()) + ", out_channels)");
  return g;
}

}  // namespace edgeopt::bind

// The node kinds of an execution plan. Each one calls an op function of csrc/ops exactly as the module
// that described it does (same call struct, same values), which is what makes a plan bit-identical to
// the module-by-module path; nodes only add shape inference and the plan's buffers.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "ops/qconv.h"
#include "ops/qgemm_tiles.h"
#include "pack/qdw_packed.h"
#include "pack/qs8_packed.h"
#include "runtime/plan.h"

namespace edgeopt::runtime {

// What a quantized layer does with its input and output (the fields of QConvCall / QLinearCall that do
// not depend on the shapes).
struct QuantIO {
  DType in_dtype = DType::kF32;
  bool dynamic = false;
  U8QuantParams x_params{1.0f, 0};
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  DType out_dtype = DType::kF32;
  U8QuantParams out_params{1.0f, 0};
};

struct ConvWindow {
  size_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  size_t dilation_h = 1, dilation_w = 1;
};

// qconv2d (dense, grouped) or qdwconv2d (depthwise), with an optional f32 residual as second input.
std::unique_ptr<Node> make_qconv_node(std::vector<Qs8PackedView> group_weights, size_t groups, const ConvWindow& win,
                                      const QuantIO& q, bool has_residual);
std::unique_ptr<Node> make_qdwconv_node(const QdwPackedView& weights, const ConvWindow& win, const QuantIO& q,
                                        bool has_residual);
// qlinear over rows (n, 1, 1, k) -> (n, 1, 1, out_features).
std::unique_ptr<Node> make_qlinear_node(const Qs8PackedView& weights, const QuantIO& q);
// maxpool2d_nhwc, u8 or f32; torch's output size (floor or ceil mode).
std::unique_ptr<Node> make_maxpool_node(const ConvWindow& win, bool ceil_mode, DType dtype);
// global_avgpool_u8: u8 NHWC (n, h, w, c) in its quantization parameters -> (n, 1, 1, c), f32 or u8.
std::unique_ptr<Node> make_global_avgpool_node(U8QuantParams x_params, DType out_dtype, U8QuantParams out_params);
// torch.flatten(x, 1) of an NCHW-logical tensor: NHWC (n, h, w, c) -> rows (n, 1, 1, c*h*w) in (c, h, w) order.
std::unique_ptr<Node> make_flatten_node(DType dtype);

// torch's max_pool2d output size along one axis (as edgeopt.nn.pool.pool_output_size).
size_t pool_output_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation, bool ceil_mode);

}  // namespace edgeopt::runtime

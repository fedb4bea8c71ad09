// Quantized 2-D convolution on NHWC (channels-last) activations.
//
// General convs run as a GEMM per group: output pixels are the rows, kh*kw*cin_per_group the reduction.
// A 1x1 stride-1 conv reads its input rows in place; any other conv gathers the rows of one tile at a
// time into a per-thread buffer (im2col of a tile, never of the whole input), padding taps filled with the
// input zero point so they contribute exactly nothing after the zero-point correction.
// Depthwise convs (one filter per channel) have their own op: ops/qdwconv.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/qgemm_tiles.h"
#include "pack/qs8_packed.h"

namespace edgeopt {

struct ConvGeometry {
  size_t batch = 0, in_h = 0, in_w = 0, in_c = 0, out_c = 0;
  size_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  size_t dilation_h = 1, dilation_w = 1, groups = 1;
  // 0 when the (padded) input is smaller than the dilated kernel.
  size_t out_h() const;
  size_t out_w() const;
};

struct QConvCall {
  ConvGeometry g;
  // batch x in_h x in_w x in_c, contiguous: float (quantized here) or u8 (quantized with x_params).
  const float* x_f32 = nullptr;
  const uint8_t* x_u8 = nullptr;
  bool dynamic = false;
  U8QuantParams x_params{1.0f, 0};
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  OutKind out_kind = OutKind::kF32;
  U8QuantParams out_params{1.0f, 0};
  void* out = nullptr;  // batch x out_h x out_w x out_c, contiguous
  // Optional f32 tensor of the output's shape added before the clamp (ResNet's identity path); not
  // with an int32 output.
  const float* residual = nullptr;
  int num_threads = 1;
};

// Filter heights qconv2d takes (it keeps one input-row pointer per filter row on the stack).
constexpr size_t kQConvMaxKernelH = 32;

// group_weights: g.groups packs, pack i holding output channels [i*out_c/groups, (i+1)*out_c/groups) with
// reduction kernel_h*kernel_w*(in_c/groups) in (ky, kx, c) order. Returns the input parameters used.
// Throws std::domain_error for NaN/Inf inputs, std::invalid_argument for filters taller than kQConvMaxKernelH.
U8QuantParams qconv2d(const Qs8PackedView* group_weights, const QConvCall& call);

// The input of a conv call as u8 NHWC: the caller's bytes, or the float input quantized into kInput
// scratch. `xp` in: the static parameters; out: the parameters used. Throws like quantize_activations.
const uint8_t* input_u8(const QConvCall& call, int threads, U8QuantParams* xp);

}  // namespace edgeopt

// Block-sparse 2-D convolution on NHWC activations, fp32 or int8, groups = 1.
//
// The weight is the (out_c) x (kernel_h * kernel_w * in_c) GEMM matrix in (ky, kx, c) order, packed
// block-sparse (pack/sparse_packed.h). Implicit GEMM: for an output pixel whose taps are all inside the
// input, the block-sparse kernel reads the input in place -- each stored block's k is translated once per
// call into an offset from the pixel's top-left input value, and consecutive pixels of an output row are
// rows stride_w * in_c apart. Only border pixels (some taps in the padding) are gathered (im2col of
// those rows only, padding taps = 0 for fp32, the input zero point for int8). int8 needs in_c % 4 == 0
// for the in-place path (a 4-k block must be 4 adjacent channels of one tap); otherwise every pixel is
// gathered. Results equal sparse_*linear on the im2col matrix bit for bit.
#pragma once

#include "ops/qconv.h"
#include "ops/sparse_linear.h"
#include "pack/sparse_packed.h"

namespace edgeopt {

struct SparseConvCall {
  ConvGeometry g;                // groups must be 1
  const float* x_f32 = nullptr;  // batch x in_h x in_w x in_c, contiguous (fp32 weights: always float)
  const uint8_t* x_u8 = nullptr; // int8 weights only: u8 input quantized with x_params
  bool dynamic = false;
  U8QuantParams x_params{1.0f, 0};
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  OutKind out_kind = OutKind::kF32;  // fp32 weights: kF32 only
  U8QuantParams out_params{1.0f, 0};
  void* out = nullptr;  // batch x out_h x out_w x out_c, contiguous
  // Optional f32 tensor of the output's shape added before the clamp (a ResNet block's identity path):
  // int8 weights in 16-column blocks, float32 or uint8 output.
  const float* residual = nullptr;
  int num_threads = 1;
};

// Returns the input parameters used (int8) or x_params (fp32). Throws std::domain_error for NaN/Inf
// inputs to an int8 conv, std::invalid_argument for a geometry the weights do not fit.
U8QuantParams sparse_conv2d(const SparsePackedView& w, const SparseConvCall& call);

}  // namespace edgeopt

// Quantized depthwise 2-D convolution (groups == in_channels == out_channels) on NHWC activations: its own
// kernel fed by an indirection buffer of input row pointers, built per output row.
#pragma once

#include "ops/qconv.h"
#include "pack/qdw_packed.h"

namespace edgeopt {

// Depthwise: groups == in_c == out_c; the pack has in_c channels of kernel_h*kernel_w taps (ky, kx order).
// Returns the input parameters used; throws std::domain_error for NaN/Inf inputs.
U8QuantParams qdwconv2d(const QdwPackedView& w, const QConvCall& call);

}  // namespace edgeopt

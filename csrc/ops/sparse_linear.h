// Block-sparse linear layers (issue 5): y = clamp(x @ W^T + bias) with W in the block-sparse packed
// layouts of pack/sparse_packed.h, fp32 (FloatLinearCall) or int8 (QLinearCall: the same dynamic/static
// u8 activations and epilogue as the dense qlinear).
#pragma once

#include "ops/float_linear.h"
#include "ops/qlinear.h"
#include "pack/sparse_packed.h"

namespace edgeopt {

void sparse_float_linear(const SparsePackedView& w, const FloatLinearCall& call);
U8QuantParams sparse_qlinear(const SparsePackedView& w, const QLinearCall& call);

}  // namespace edgeopt

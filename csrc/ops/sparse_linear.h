// Block-sparse linear layers: y = clamp(x @ W^T + bias) with W in the block-sparse packed
// layouts of pack/sparse_packed.h, fp32 (FloatLinearCall) or int8 (QLinearCall: the same dynamic/static
// u8 activations and epilogue as the dense qlinear).
#pragma once

#include "ops/float_linear.h"
#include "ops/qlinear.h"
#include "pack/sparse_packed.h"

namespace edgeopt {

// The tile kernel for up to `rows` rows from a SparseGemmKernels row table ([0] 1, [1] 2, [2] 4, [3] 8
// rows; nullptr = none): the largest tile <= rows; *tile receives its row count.
template <class Fn>
Fn sparse_tile_kernel(const Fn* table, size_t rows, size_t* tile) {
  for (int i = 3; i >= 0; --i) {
    if (table[i] != nullptr && (size_t(1) << i) <= rows) {
      *tile = size_t(1) << i;
      return table[i];
    }
  }
  *tile = 1;
  return table[0];
}

void sparse_float_linear(const SparsePackedView& w, const FloatLinearCall& call);
U8QuantParams sparse_qlinear(const SparsePackedView& w, const QLinearCall& call);

}  // namespace edgeopt

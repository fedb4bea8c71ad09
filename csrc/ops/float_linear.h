// Float linear layers on packed f32/f16 weights: y = clamp(x @ W^T + bias), and the fused low-rank
// y = clamp((x @ V) @ U^T + bias) with the rank-r intermediate kept in cache.
#pragma once

#include <cstddef>

#include "pack/float_packed.h"

namespace edgeopt {

struct FloatLinearCall {
  const float* x = nullptr;  // m rows of k values, x_stride elements apart
  size_t m = 0;
  size_t x_stride = 0;
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  float* out = nullptr;  // m rows of n values, out_stride elements apart
  size_t out_stride = 0;
  int num_threads = 1;
};

void float_linear(const FloatPackedView& w, const FloatLinearCall& call);

// Serial: rows x [col0, col1) of the output on the calling thread. col0 is a multiple of 16 (64 for a
// single row, to keep the 1x64 kernel's tiles whole); col1 is a multiple of 16 or n.
void float_gemm_tile(const FloatPackedView& w, const float* x, size_t x_stride, size_t rows, size_t col0, size_t col1,
                     float out_min, float out_max, float* out, size_t out_stride);

// Low rank: v holds V^T (r x K, no bias), u holds U (N x r, with the layer's bias); u.k() must equal v.n().
// Results are bit-identical to float_linear(v) followed by float_linear(u) (same kernels, same chains):
// only where the intermediate lives changes. Rows are processed in blocks whose intermediate fits in L1;
// with too few blocks to feed every thread (batch 1), the two stages run as two parallel phases instead.
void low_rank_linear(const FloatPackedView& v, const FloatPackedView& u, const FloatLinearCall& call);

}  // namespace edgeopt

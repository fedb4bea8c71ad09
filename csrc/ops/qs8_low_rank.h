// Low-rank layer with int8 factors on the existing u8 x s8 kernels (ops/qlinear.h):
//   t = dequant(quant_u8(x) @ Vq^T)          (rank r, float, dynamic per-tensor activation parameters)
//   y = clamp(dequant(quant_u8(t) @ Uq^T) + bias)
// One native call, t in a per-thread scratch buffer. The second stage quantizes t with parameters from
// the whole of t (as two QuantLinear layers in sequence would), so the stages cannot be interleaved by
// row blocks without changing the numbers; the result is bit-identical to the two layers run apart.
#pragma once

#include "ops/qlinear.h"

namespace edgeopt {

struct Qs8LowRankCall {
  const float* x = nullptr;
  size_t m = 0;
  size_t x_stride = 0;
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  float* out = nullptr;
  size_t out_stride = 0;
  int num_threads = 1;
};

// v: V^T packed (r x K, no bias), u: U packed (N x r, with bias). Throws std::invalid_argument if they do
// not chain, std::domain_error on NaN/Inf input (as qlinear).
void qs8_low_rank_linear(const Qs8PackedView& v, const Qs8PackedView& u, const Qs8LowRankCall& call);

}  // namespace edgeopt

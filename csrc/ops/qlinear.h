// Quantized linear layer: y = epilogue(quant_u8(x) @ W_s8^T), tiled and threaded over the micro-kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/qgemm_tiles.h"
#include "pack/qs8_packed.h"
#include "ukernels/qgemm.h"

namespace edgeopt {

struct QLinearCall {
  // Input, m rows of k values with x_stride elements between rows: float (quantized here) or u8.
  const float* x_f32 = nullptr;
  const uint8_t* x_u8 = nullptr;
  size_t m = 0;
  size_t x_stride = 0;
  bool dynamic = true;     // f32 input: derive the u8 parameters from this call's min/max
  U8QuantParams x_params{1.0f, 0};  // f32 static input, or u8 input: the parameters to use / in use
  float out_min = -__builtin_inff();
  float out_max = __builtin_inff();
  OutKind out_kind = OutKind::kF32;
  U8QuantParams out_params{1.0f, 0};  // u8 output only
  void* out = nullptr;
  size_t out_stride = 0;  // elements
  int num_threads = 1;
};

// Runs the layer; returns the activation parameters it used. Throws std::domain_error if a float
// input holds NaN or Inf (quantizing them would give silent garbage).
U8QuantParams qlinear(const Qs8PackedView& w, const QLinearCall& call);

}  // namespace edgeopt

// Packed s8 weights for the 16c4 GEMM kernels: one plain byte buffer, self-describing.
//
//   [64-byte header][int32 colsum x n_padded][f32 scale x n_padded][f32 bias x n_padded][blocks]
//   blocks: n_padded/16 blocks of k_padded*16 bytes in the 16c4 layout (ukernels/qgemm.h).
// The header carries magic, format version and dims, so a buffer from another version or for another
// kernel layout is refused with a clear error instead of being read wrongly.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pack/pack_header.h"

namespace edgeopt {

constexpr uint32_t kPackFormatQs8Gemm16c4 = 1;
// Accumulators and zero-point corrections stay inside int32 for K up to this bound (255*63*K < 2^31).
constexpr size_t kQs8MaxK = 131072;

// Dims are copied out of the header when it is validated, so a buffer changed afterwards (another thread
// writing the tensor) cannot steer the kernels out of bounds.
struct Qs8PackedView {
  PackHeader header;
  const int32_t* colsum;
  const float* scale;
  const float* bias;
  const int8_t* blocks;
  size_t n() const { return header.n; }
  size_t k() const { return header.k; }
  size_t k_padded() const { return header.k_padded; }
  size_t n_padded() const { return header.n_padded; }
  size_t block_bytes() const { return size_t(header.k_padded) * header.nr; }
};

size_t qs8_packed_size(size_t n, size_t k);
// w: n x k row-major int8 in [-kQGemmWeightMax, kQGemmWeightMax]; scale: n per-channel scales;
// bias: n values or nullptr. Throws std::invalid_argument on out-of-range weights or dims.
void pack_qs8_weights(const int8_t* w, const float* scale, const float* bias, size_t n, size_t k, uint8_t* out,
                      size_t out_bytes);
// Validates the header against the buffer; throws std::invalid_argument saying what is wrong.
Qs8PackedView view_qs8_packed(const uint8_t* buf, size_t bytes);
// Checks what the header cannot: every weight in [-63, 63], padding zero, column sums consistent,
// scales finite and positive, biases finite. O(n*k); meant for buffers loaded from files.
void validate_qs8_contents(const Qs8PackedView& v);
// Inverse of the packing, for inspection and tests: w n x k, scale n, bias n.
void unpack_qs8_weights(const Qs8PackedView& v, int8_t* w, float* scale, float* bias);

}  // namespace edgeopt

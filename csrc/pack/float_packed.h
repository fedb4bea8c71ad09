// Packed float weights (f32 or f16) for the float GEMM kernels: one plain byte buffer, self-describing.
//
//   [64-byte PackHeader][f32 bias x n_padded][blocks]
//   blocks: n_padded/16 blocks of k*16 elements (f32 or binary16) in the k-major "16" layout of
//   ukernels/f32gemm.h; padding columns have zero weights and zero bias.
// Same header struct, magic and version as the int8 buffers (pack/qs8_packed.h) but their own format
// ids, so a buffer of one kind handed to the other kind's op is refused by name.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pack/qs8_packed.h"

namespace edgeopt {

constexpr uint32_t kPackFormatF32Gemm16 = 0x0632;  // f32 weights, "16" layout
constexpr uint32_t kPackFormatF16Gemm16 = 0x0616;  // IEEE binary16 weights, "16" layout
// f16 packs keep k*16 elements per block addressable with 32-bit math and 16M elements of bias.
constexpr size_t kFloatPackMaxDim = size_t(1) << 24;

enum class FloatWeightType : int { kF32 = 0, kF16 = 1 };

struct FloatPackedView {
  PackHeader header;
  FloatWeightType type;
  const float* bias;   // n_padded values
  const void* blocks;  // const float* or const uint16_t* by type
  size_t n() const { return header.n; }
  size_t k() const { return header.k; }
  size_t n_padded() const { return header.n_padded; }
  size_t block_elems() const { return size_t(header.k) * header.nr; }
  size_t elem_bytes() const { return type == FloatWeightType::kF16 ? 2 : 4; }
};

size_t float_packed_size(FloatWeightType type, size_t n, size_t k);
// w: n x k row-major (float, or uint16_t binary16 bit patterns for kF16); bias: n values or nullptr.
// Throws std::invalid_argument on empty or oversized dims or non-finite weights/biases.
void pack_float_weights(FloatWeightType type, const void* w, const float* bias, size_t n, size_t k, uint8_t* out,
                        size_t out_bytes);
// Validates the header against the buffer (any float format); throws std::invalid_argument saying what is wrong.
FloatPackedView view_float_packed(const uint8_t* buf, size_t bytes);
// What the header cannot say: weights and biases finite, padding zero. O(n*k); for buffers loaded from files.
void validate_float_contents(const FloatPackedView& v);
// Inverse of the packing: w n x k (float or uint16_t by type), bias n.
void unpack_float_weights(const FloatPackedView& v, void* w, float* bias);

}  // namespace edgeopt

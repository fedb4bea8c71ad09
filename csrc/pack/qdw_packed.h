// Packed s8 depthwise-conv weights for the 32x2 kernels (ukernels/qdwconv.h): one self-describing buffer.
//
//   [64-byte header][int32 weight sum x c_padded][f32 scale x c_padded][f32 bias x c_padded][int16 blocks]
//   blocks: c_padded/32 blocks of taps_padded*32 int16 values in the layout of qdw_packed_index.
// Header fields: n = channels, k = taps (kh*kw), nr = 32, kr = 2 (taps per vpmaddwd), weight_max = 127.
// Sums, scales and biases are in channel order; the kernels' lane order exists only inside the blocks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pack/pack_header.h"

namespace edgeopt {

// 0x0D16 was the 16-channel layout of earlier builds (read back by nothing: such packs are refused with a
// message saying so).
constexpr uint32_t kPackFormatQs8Dwconv32x2 = 0x0D32;
constexpr uint32_t kPackFormatQs8Dwconv16x2Retired = 0x0D16;

struct QdwPackedView {
  PackHeader header;
  const int32_t* wsum;
  const float* scale;
  const float* bias;
  const int16_t* blocks;
  size_t channels() const { return header.n; }
  size_t taps() const { return header.k; }
  size_t taps_padded() const { return header.k_padded; }
};

size_t qdw_packed_size(size_t channels, size_t taps);
// w: channels x taps row-major int8 in [-127, 127]; scale: per channel; bias: per channel or nullptr.
void pack_qdw_weights(const int8_t* w, const float* scale, const float* bias, size_t channels, size_t taps,
                      uint8_t* out, size_t out_bytes);
QdwPackedView view_qdw_packed(const uint8_t* buf, size_t bytes);
// O(channels * taps) checks for buffers from files: ranges, zero padding, weight sums, finite scales/biases.
void validate_qdw_contents(const QdwPackedView& v);
void unpack_qdw_weights(const QdwPackedView& v, int8_t* w, float* scale, float* bias);

}  // namespace edgeopt

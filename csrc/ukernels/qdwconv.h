// Depthwise int8 convolution micro-kernels: u8 activations x s8 weights, one filter per channel.
//
// The GEMM's vpmaddubsw trick (and its [-63, 63] weight limit) does not pay here: each weight meets one
// input value per output pixel, so there is nothing to amortize a 4-k interleave over. Instead inputs
// and weights are widened to int16 and two taps are combined per vpmaddwd (FBGEMM's recipe): u8 * s8
// products and their pair sums fit in int32 exactly, so weights use the full [-127, 127] range.
//
// Packed weights ("16x2"): per block of 16 channels, per pair of taps (taps padded to even with zero
// weights), 32 int16 values in the order the AVX2 unpack instructions produce: see qdw_packed_index.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ukernels/qgemm.h"

namespace edgeopt {

constexpr int kQDwChannelTile = 16;  // channels per packed block (two ymm of int32 accumulators)
constexpr int kQDwWeightMax = 127;

// Index of the weight of (channel c within its 16-channel block, tap t) inside the block.
// A block holds taps_padded / 2 groups of 32 int16; within a group, vector 0 holds channels 0-3 and 8-11,
// vector 1 channels 4-7 and 12-15 (the lanes of _mm256_unpack{lo,hi}_epi16), each as (tap t, tap t+1) pairs.
inline size_t qdw_packed_index(size_t c, size_t t) {
  const size_t lane = c / 8, within = c % 8, vec = within / 4, pos = within % 4;
  return (t / 2) * 32 + vec * 16 + lane * 8 + pos * 2 + t % 2;
}

// Computes `pixels` output pixels of `channels` channels each.
// rows: taps_padded pointers per pixel (pixel-major); each points at channel 0 of the input pixel of that
//   tap, or at a row of zero-point bytes for padding; a pixel's next pointers follow its last one.
//   Rows must hold `channels` readable bytes (the kernels do not read past them).
// w: the packed blocks (channel block b at b * taps_padded * 16 int16 values).
// ep: the GEMM epilogue, indexed by channel; w_colsum holds each channel's weight sum.
// out: pixel p's output at out + p * out_stride elements of the type ep.out_kind names.
using QDwconvUkernelFn = void (*)(size_t pixels, size_t channels, size_t taps_padded, const uint8_t* const* rows,
                                  const int16_t* w, const QGemmEpilogue& ep, void* out, size_t out_stride);

void eo_qu8s8_dwconv_minmax_ukernel_16x2__ref(size_t pixels, size_t channels, size_t taps_padded,
                                              const uint8_t* const* rows, const int16_t* w, const QGemmEpilogue& ep,
                                              void* out, size_t out_stride);
void eo_qu8s8_dwconv_minmax_ukernel_16x2__avx2(size_t pixels, size_t channels, size_t taps_padded,
                                               const uint8_t* const* rows, const int16_t* w, const QGemmEpilogue& ep,
                                               void* out, size_t out_stride);

}  // namespace edgeopt

// Depthwise int8 convolution micro-kernels: u8 activations x s8 weights, one filter per channel.
//
// Exact for full 8-bit weights ([-127, 127]): inputs are widened to int16 and two taps meet per vpmaddwd
// (u8 x s8 products and their pair sums fit int32). The GEMM's vpmaddubsw would need [-63, 63] weights,
// and depthwise int8 loses accuracy fastest when its weights lose a bit.
//
// The widening avoids the shuffle port: 32 channels are loaded as bytes and split into even and odd
// channels with an AND and a 16-bit shift (ports 0/1/5), then one vpunpck{l,h}wd per vector pairs two taps
// (port 5). Per 64 MACs: 4 shuffles, 4 split ops, 4 vpmaddwd, 4 vpaddd, where widening by vpmovzxbw costs
// 8 shuffles; on Skylake-class cores with one shuffle port that is 5.3 cycles instead of 8.
// The four int32 accumulators of a 32-channel block then hold the channels in "lane order":
//   vector 0: channels 0, 2, 4, 6 | 16, 18, 20, 22   (even, low  half of each 128-bit lane)
//   vector 1: channels 8,10,12,14 | 24, 26, 28, 30   (even, high half)
//   vector 2: channels 1, 3, 5, 7 | 17, 19, 21, 23   (odd,  low)
//   vector 3: channels 9,11,13,15 | 25, 27, 29, 31   (odd,  high)
// and a u8 result packs back to NHWC byte order with vpackssdw and a shift-or, without a permute.
// The first 16 channels of a block sit in the low 128 bits of each vector, so a 16-channel tail runs the
// same layout on xmm registers.
//
// Packed weights ("32x2"): per block of 32 channels, per pair of taps (taps padded to even with zero
// weights), 64 int16 values: the four vectors above, each lane holding the (tap t, tap t+1) pair.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ukernels/qgemm.h"

namespace edgeopt {

constexpr int kQDwChannelTile = 32;  // channels per packed block
constexpr int kQDwWeightMax = 127;

// Position (0..31) of channel c (0..31 within its block) in the lane order above: vector * 8 + lane.
inline size_t qdw_lane_position(size_t c) {
  const size_t parity = c % 2, i = c / 2, half = i / 8, j = i % 8;
  return (parity * 2 + j / 4) * 8 + half * 4 + j % 4;
}

// Index of the weight of (channel c within its block, tap t) inside the block's int16 values.
inline size_t qdw_packed_index(size_t c, size_t t) { return (t / 2) * 64 + qdw_lane_position(c) * 2 + t % 2; }

// What a depthwise call needs besides the weights, built once per call by the op.
// gemm: the shared int8 epilogue, indexed by absolute channel (the __ref kernel and the f32 / s32 /
//   residual outputs use it; w_colsum holds each channel's weight sum).
// acc_init, scale, bias: per channel in lane order within each 32-channel block (padded to whole blocks):
//   -a_zero_point * w_sum (the accumulators start there), a_scale * w_scale, bias.
// q_min, q_max: the u8 output clamp with the activation clamp folded in (see the .cc files).
struct QDwEpilogue {
  QGemmEpilogue gemm;
  const int32_t* acc_init;
  const float* scale;
  const float* bias;
  float q_min, q_max;
};

// Computes `pixels` output pixels of one output row, channels [channel0, channel0 + channels).
// taps: taps_padded pointers, tap t of pixel 0 at channel 0 (in (ky, kx) order; padding taps point at a
//   row of zero-point bytes, the pair-padding tap anywhere readable). Pixel p reads tap t at
//   taps[t] + p * pixel_step + channel; every such row holds the call's channels.
// channel0: a multiple of 32. w: all packed blocks (block b at b * taps_padded * 32 int16 values).
// out: pixel 0, channel 0 of the output row; pixel p at out + p * out_stride elements (of ep.gemm.out_kind).
using QDwconvUkernelFn = void (*)(size_t pixels, size_t channel0, size_t channels, size_t taps_padded,
                                  const uint8_t* const* taps, size_t pixel_step, const int16_t* w,
                                  const QDwEpilogue& ep, void* out, size_t out_stride);

void eo_qu8s8_dwconv_minmax_ukernel_32x2__ref(size_t pixels, size_t channel0, size_t channels, size_t taps_padded,
                                              const uint8_t* const* taps, size_t pixel_step, const int16_t* w,
                                              const QDwEpilogue& ep, void* out, size_t out_stride);
void eo_qu8s8_dwconv_minmax_ukernel_32x2__avx2(size_t pixels, size_t channel0, size_t channels, size_t taps_padded,
                                               const uint8_t* const* taps, size_t pixel_step, const int16_t* w,
                                               const QDwEpilogue& ep, void* out, size_t out_stride);

}  // namespace edgeopt

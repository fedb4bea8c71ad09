// AVX2 global average pooling: 32 channels per step, split into even and odd channels with an AND and a
// 16-bit shift (no shuffle) and summed in 16-bit lanes, flushed into int32 every 256 pixels (256 x 255
// fits 16 bits unsigned). The sums come out in the depthwise kernel's lane order (ukernels/qdwconv.h),
// which the u8 result packs back to byte order without a permute; f32 results are unpacked to channel
// order first. A channel tail narrower than 32 goes through a zero-filled row copy.
// float32 input: 8 channels per vector, each lane summing its channel in pixel order.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "ukernels/avx2/lane-order-avx2.h"
#include "ukernels/gavgpool.h"

namespace edgeopt {
namespace {

struct Sums {
  __m256i v0, v1, v2, v3;
};

template <bool kTail>
Sums sum32(size_t pixels, size_t stride, const uint8_t* x, size_t valid) {
  const __m256i low_bytes = _mm256_set1_epi16(0x00FF), zero = _mm256_setzero_si256();
  Sums s{zero, zero, zero, zero};
  for (size_t p0 = 0; p0 < pixels; p0 += 256) {
    const size_t p1 = std::min(pixels, p0 + 256);
    __m256i even = zero, odd = zero;
    for (size_t p = p0; p < p1; ++p) {
      __m256i v;
      if (kTail) {
        alignas(32) uint8_t buf[32] = {};
        std::memcpy(buf, x + p * stride, valid);
        v = _mm256_load_si256((const __m256i*)buf);
      } else {
        v = _mm256_loadu_si256((const __m256i*)(x + p * stride));
      }
      even = _mm256_add_epi16(even, _mm256_and_si256(v, low_bytes));
      odd = _mm256_add_epi16(odd, _mm256_srli_epi16(v, 8));
    }
    s.v0 = _mm256_add_epi32(s.v0, _mm256_unpacklo_epi16(even, zero));
    s.v1 = _mm256_add_epi32(s.v1, _mm256_unpackhi_epi16(even, zero));
    s.v2 = _mm256_add_epi32(s.v2, _mm256_unpacklo_epi16(odd, zero));
    s.v3 = _mm256_add_epi32(s.v3, _mm256_unpackhi_epi16(odd, zero));
  }
  return s;
}

__m256 mean(__m256i sum, __m256i zero_point_sum, __m256 scale) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum, zero_point_sum)), scale);
}

// n <= 32 channels of one block written from its lane-order sums.
void store_block(const Sums& s, const GAvgPoolParams& p, size_t n, void* out) {
  const __m256i zps = _mm256_set1_epi32(p.zero_point_sum);
  const __m256 scale = _mm256_set1_ps(p.scale);
  if (p.out_kind == OutKind::kF32) {
    const ChannelOrder ch = lane_order_to_channels(s.v0, s.v1, s.v2, s.v3);
    alignas(32) float tmp[32];
    _mm256_store_ps(tmp, mean(ch.c0, zps, scale));
    _mm256_store_ps(tmp + 8, mean(ch.c8, zps, scale));
    _mm256_store_ps(tmp + 16, mean(ch.c16, zps, scale));
    _mm256_store_ps(tmp + 24, mean(ch.c24, zps, scale));
    std::memcpy(out, tmp, n * sizeof(float));
    return;
  }
  const __m256 lo = _mm256_set1_ps(float(-p.out_zero_point)), hi = _mm256_set1_ps(float(255 - p.out_zero_point));
  auto quantize = [&](__m256i v) {
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(mean(v, zps, scale), lo), hi));
  };
  store_bytes(static_cast<uint8_t*>(out), lane_order_to_bytes(quantize(s.v0), quantize(s.v1), quantize(s.v2),
                                                              quantize(s.v3), _mm256_set1_epi16(int16_t(p.out_zero_point))),
              n);
}

}  // namespace

void eo_u8_gavgpool__avx2(size_t pixels, size_t channels, size_t stride, const uint8_t* x, const GAvgPoolParams& p,
                          void* out) {
  const size_t elem = p.out_kind == OutKind::kU8 ? 1 : 4;
  size_t c = 0;
  for (; c + 32 <= channels; c += 32) store_block(sum32<false>(pixels, stride, x + c, 32), p, 32, static_cast<char*>(out) + c * elem);
  if (c < channels)
    store_block(sum32<true>(pixels, stride, x + c, channels - c), p, channels - c, static_cast<char*>(out) + c * elem);
}

void eo_f32_gavgpool__avx2(size_t pixels, size_t channels, size_t stride, const float* x, float* out) {
  const __m256 n = _mm256_set1_ps(float(pixels));
  size_t c = 0;
  for (; c + 8 <= channels; c += 8) {  // each lane adds its channel in pixel order, as the scalar twin does
    __m256 s = _mm256_setzero_ps();
    for (size_t p = 0; p < pixels; ++p) s = _mm256_add_ps(s, _mm256_loadu_ps(x + p * stride + c));
    _mm256_storeu_ps(out + c, _mm256_div_ps(s, n));
  }
  if (c < channels) {
    const size_t m = channels - c;
    alignas(32) float buf[8] = {};
    __m256 s = _mm256_setzero_ps();
    for (size_t p = 0; p < pixels; ++p) {
      std::memcpy(buf, x + p * stride + c, m * sizeof(float));
      s = _mm256_add_ps(s, _mm256_load_ps(buf));
    }
    _mm256_store_ps(buf, _mm256_div_ps(s, n));
    std::memcpy(out + c, buf, m * sizeof(float));
  }
}

}  // namespace edgeopt

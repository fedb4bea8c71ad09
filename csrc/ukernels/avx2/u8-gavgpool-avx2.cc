// AVX2 global average pooling: 32 channels per step, split into even and odd channels with an AND and a
// 16-bit shift (no shuffle) and summed in 16-bit lanes, flushed into int32 every 256 pixels (256 x 255
// fits 16 bits unsigned). The sums come out in the depthwise kernel's lane order (ukernels/qdwconv.h),
// which the u8 result packs back to byte order without a permute; f32 results are unpacked to channel
// order first. A channel tail narrower than 32 goes through a zero-filled row copy.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

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
    const __m256i lo02 = _mm256_unpacklo_epi32(s.v0, s.v2), hi02 = _mm256_unpackhi_epi32(s.v0, s.v2);
    const __m256i lo13 = _mm256_unpacklo_epi32(s.v1, s.v3), hi13 = _mm256_unpackhi_epi32(s.v1, s.v3);
    alignas(32) float tmp[32];
    _mm256_store_ps(tmp, mean(_mm256_permute2x128_si256(lo02, hi02, 0x20), zps, scale));       // 0-7
    _mm256_store_ps(tmp + 8, mean(_mm256_permute2x128_si256(lo13, hi13, 0x20), zps, scale));   // 8-15
    _mm256_store_ps(tmp + 16, mean(_mm256_permute2x128_si256(lo02, hi02, 0x31), zps, scale));  // 16-23
    _mm256_store_ps(tmp + 24, mean(_mm256_permute2x128_si256(lo13, hi13, 0x31), zps, scale));  // 24-31
    std::memcpy(out, tmp, n * sizeof(float));
    return;
  }
  const __m256 lo = _mm256_set1_ps(float(-p.out_zero_point)), hi = _mm256_set1_ps(float(255 - p.out_zero_point));
  auto quantize = [&](__m256i v) {
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(mean(v, zps, scale), lo), hi));
  };
  const __m256i zp16 = _mm256_set1_epi16(int16_t(p.out_zero_point));
  const __m256i even = _mm256_add_epi16(_mm256_packs_epi32(quantize(s.v0), quantize(s.v1)), zp16);
  const __m256i odd = _mm256_add_epi16(_mm256_packs_epi32(quantize(s.v2), quantize(s.v3)), zp16);
  const __m256i bytes = _mm256_or_si256(even, _mm256_slli_epi16(odd, 8));
  if (n == 32) {
    _mm256_storeu_si256((__m256i*)out, bytes);
  } else {
    alignas(32) uint8_t tmp[32];
    _mm256_store_si256((__m256i*)tmp, bytes);
    std::memcpy(out, tmp, n);
  }
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

}  // namespace edgeopt

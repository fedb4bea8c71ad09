// The "lane order" of 32 channels that the depthwise and global-average-pool kernels accumulate in
// (ukernels/qdwconv.h): bytes split into even and odd channels with an AND and a 16-bit shift, then
// widened by one unpack per vector. These helpers take four lane-order int32 vectors back to bytes or to
// channel order. Included only by files compiled with AVX2.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace edgeopt {

// Four lane-order vectors of int32 values q with q + zero_point in [0, 255] -> 32 bytes in channel order:
// vpackssdw puts channel 2i (even) and 2i + 1 (odd) in 16-bit lane i of two vectors; a shift and an OR
// then interleave them, with no permute.
inline __m256i lane_order_to_bytes(__m256i q0, __m256i q1, __m256i q2, __m256i q3, __m256i zero_point16) {
  const __m256i even = _mm256_add_epi16(_mm256_packs_epi32(q0, q1), zero_point16);
  const __m256i odd = _mm256_add_epi16(_mm256_packs_epi32(q2, q3), zero_point16);
  return _mm256_or_si256(even, _mm256_slli_epi16(odd, 8));
}

inline __m128i lane_order_to_bytes(__m128i q0, __m128i q1, __m128i q2, __m128i q3, __m128i zero_point16) {
  const __m128i even = _mm_add_epi16(_mm_packs_epi32(q0, q1), zero_point16);
  const __m128i odd = _mm_add_epi16(_mm_packs_epi32(q2, q3), zero_point16);
  return _mm_or_si128(even, _mm_slli_epi16(odd, 8));
}

// Four lane-order vectors -> channels 0-7, 8-15, 16-23, 24-31 (two unpacks and a lane permute each).
struct ChannelOrder {
  __m256i c0, c8, c16, c24;
};

inline ChannelOrder lane_order_to_channels(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i lo02 = _mm256_unpacklo_epi32(v0, v2), hi02 = _mm256_unpackhi_epi32(v0, v2);
  const __m256i lo13 = _mm256_unpacklo_epi32(v1, v3), hi13 = _mm256_unpackhi_epi32(v1, v3);
  return {_mm256_permute2x128_si256(lo02, hi02, 0x20), _mm256_permute2x128_si256(lo13, hi13, 0x20),
          _mm256_permute2x128_si256(lo02, hi02, 0x31), _mm256_permute2x128_si256(lo13, hi13, 0x31)};
}

// Stores n <= 32 bytes of v (all 32 with one store).
inline void store_bytes(uint8_t* o, __m256i v, size_t n) {
  if (n == 32) {
    _mm256_storeu_si256((__m256i*)o, v);
  } else {
    alignas(32) uint8_t tmp[32];
    _mm256_store_si256((__m256i*)tmp, v);
    std::memcpy(o, tmp, n);
  }
}

}  // namespace edgeopt

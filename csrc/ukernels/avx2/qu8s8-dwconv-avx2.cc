// AVX2 depthwise int8 kernel: 16 channels per step, two taps per vpmaddwd (see ukernels/qdwconv.h).
// Per tap pair: 2 widening loads (vpmovzxbw), 2 unpacks, 2 vpmaddwd against pre-interleaved weights,
// 2 vpaddd. A channel tail narrower than 16 is copied into a zero-filled 16-byte row first, so no load
// runs past the caller's rows.
#include <immintrin.h>

#include <cstring>

#include "ukernels/avx2/qgemm-epilogue-avx2.h"
#include "ukernels/qdwconv.h"

namespace edgeopt {
namespace {

inline __m256i widen16(const uint8_t* p) { return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p)); }

// Accumulates one block of 16 channels over all taps; `offset` is the block's first channel.
template <bool kTail>
inline void block_dot(const uint8_t* const* taps, size_t taps_padded, size_t offset, size_t valid,
                      const int16_t* w, __m256i* out0, __m256i* out1) {
  __m256i acc_lo = _mm256_setzero_si256(), acc_hi = _mm256_setzero_si256();
  for (size_t t = 0; t < taps_padded; t += 2) {
    __m256i x0, x1;
    if (kTail) {
      alignas(16) uint8_t b0[16] = {}, b1[16] = {};
      std::memcpy(b0, taps[t] + offset, valid);
      std::memcpy(b1, taps[t + 1] + offset, valid);
      x0 = widen16(b0);
      x1 = widen16(b1);
    } else {
      x0 = widen16(taps[t] + offset);
      x1 = widen16(taps[t + 1] + offset);
    }
    const __m256i w_lo = _mm256_loadu_si256((const __m256i*)w);
    const __m256i w_hi = _mm256_loadu_si256((const __m256i*)(w + 16));
    w += 32;
    acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w_lo));
    acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w_hi));
  }
  // acc_lo holds channels 0-3 | 8-11, acc_hi 4-7 | 12-15: put them back in order.
  *out0 = _mm256_permute2x128_si256(acc_lo, acc_hi, 0x20);
  *out1 = _mm256_permute2x128_si256(acc_lo, acc_hi, 0x31);
}

// block_dot for two pixels at once: each weight load serves both.
inline void block_dot2(const uint8_t* const* taps_a, const uint8_t* const* taps_b, size_t taps_padded, size_t offset,
                       const int16_t* w, __m256i* a0, __m256i* a1, __m256i* b0, __m256i* b1) {
  __m256i a_lo = _mm256_setzero_si256(), a_hi = a_lo, b_lo = a_lo, b_hi = a_lo;
  for (size_t t = 0; t < taps_padded; t += 2) {
    const __m256i w_lo = _mm256_loadu_si256((const __m256i*)w);
    const __m256i w_hi = _mm256_loadu_si256((const __m256i*)(w + 16));
    w += 32;
    const __m256i xa0 = widen16(taps_a[t] + offset), xa1 = widen16(taps_a[t + 1] + offset);
    const __m256i xb0 = widen16(taps_b[t] + offset), xb1 = widen16(taps_b[t + 1] + offset);
    a_lo = _mm256_add_epi32(a_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa0, xa1), w_lo));
    a_hi = _mm256_add_epi32(a_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa0, xa1), w_hi));
    b_lo = _mm256_add_epi32(b_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xb0, xb1), w_lo));
    b_hi = _mm256_add_epi32(b_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xb0, xb1), w_hi));
  }
  *a0 = _mm256_permute2x128_si256(a_lo, a_hi, 0x20);
  *a1 = _mm256_permute2x128_si256(a_lo, a_hi, 0x31);
  *b0 = _mm256_permute2x128_si256(b_lo, b_hi, 0x20);
  *b1 = _mm256_permute2x128_si256(b_lo, b_hi, 0x31);
}

}  // namespace

void eo_qu8s8_dwconv_minmax_ukernel_16x2__avx2(size_t pixels, size_t channels, size_t taps_padded,
                                               const uint8_t* const* rows, const int16_t* w, const QGemmEpilogue& ep,
                                               void* out, size_t out_stride) {
  const size_t elem = ep.out_kind == OutKind::kU8 ? 1 : 4;
  const size_t block_w = taps_padded * kQDwChannelTile;
  const size_t full = channels / kQDwChannelTile * kQDwChannelTile;
  size_t p = 0;
  // Two pixels per pass over a channel block: the weights and the column terms of the epilogue are
  // loaded once for both.
  for (; p + 2 <= pixels; p += 2) {
    const uint8_t* const* taps_a = rows + p * taps_padded;
    const uint8_t* const* taps_b = taps_a + taps_padded;
    char* oa = static_cast<char*>(out) + p * out_stride * elem;
    char* ob = oa + out_stride * elem;
    __m256i a0, a1, b0, b1;
    for (size_t c = 0; c < full; c += kQDwChannelTile) {
      block_dot2(taps_a, taps_b, taps_padded, c, w + (c / kQDwChannelTile) * block_w, &a0, &a1, &b0, &b1);
      const ColumnEpilogue ce = column_epilogue(ep, c);
      store_row(a0, a1, ce, ep, kQDwChannelTile, oa + c * elem);
      store_row(b0, b1, ce, ep, kQDwChannelTile, ob + c * elem);
    }
    if (full < channels) {
      const int16_t* wb = w + (full / kQDwChannelTile) * block_w;
      block_dot<true>(taps_a, taps_padded, full, channels - full, wb, &a0, &a1);
      store_row(a0, a1, ep, full, channels - full, oa + full * elem);
      block_dot<true>(taps_b, taps_padded, full, channels - full, wb, &b0, &b1);
      store_row(b0, b1, ep, full, channels - full, ob + full * elem);
    }
  }
  for (; p < pixels; ++p) {
    const uint8_t* const* taps = rows + p * taps_padded;
    char* o = static_cast<char*>(out) + p * out_stride * elem;
    __m256i acc0, acc1;
    for (size_t c = 0; c < full; c += kQDwChannelTile) {
      block_dot<false>(taps, taps_padded, c, kQDwChannelTile, w + (c / kQDwChannelTile) * block_w, &acc0, &acc1);
      store_row(acc0, acc1, ep, c, kQDwChannelTile, o + c * elem);
    }
    if (full < channels) {
      block_dot<true>(taps, taps_padded, full, channels - full, w + (full / kQDwChannelTile) * block_w, &acc0, &acc1);
      store_row(acc0, acc1, ep, full, channels - full, o + full * elem);
    }
  }
}

}  // namespace edgeopt

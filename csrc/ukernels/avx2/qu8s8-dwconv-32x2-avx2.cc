// AVX2 depthwise int8 kernel: 32 channels per step in the lane order of ukernels/qdwconv.h, two taps per
// vpmaddwd; 16-channel tails on xmm registers in the same layout, narrower tails copied into zero-filled
// 16-byte rows first (no load runs past the caller's rows).
//
// u8 output (the path a quantized model runs) stays in lane order: the per-channel epilogue terms come
// from the op in that order, so no shuffle undoes the even/odd split before vpackssdw. Its clamp is the
// shared epilogue's two clamps in one: for y = fma(acc, scale, bias), the shared epilogue computes
//   q = clamp(clamp(y, out_min, out_max) * inv, -zp, 255 - zp),
// and because rounding a product is monotonic, clamp(y, lo, hi) * inv == clamp(y * inv, lo * inv, hi * inv)
// exactly, so q = clamp(y * inv, max(out_min * inv, -zp), min(out_max * inv, 255 - zp)) bit for bit (the
// op computes those two bounds; max before min keeps the degenerate cases equal too).
// f32 and s32 outputs and fused residuals put the accumulators back in channel order (two unpacks and a
// lane permute per 16 channels) and use the shared epilogue; the accumulators already hold the zero-point
// correction, so it runs with a zero point of 0.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "ukernels/avx2/lane-order-avx2.h"
#include "ukernels/avx2/qgemm-epilogue-avx2.h"
#include "ukernels/qdwconv.h"

namespace edgeopt {
namespace {

// The lane-order accumulators of 32 (ymm) or 16 (xmm) channels.
struct Acc32 {
  __m256i v0, v1, v2, v3;
};
struct Acc16 {
  __m128i v0, v1, v2, v3;
};

// acc += the products of one 32-channel block over all taps; offset: this pixel's byte offset (pixel *
// pixel_step + first channel of the block) from each tap pointer.
// valid < 32: only that many channels exist, copied into zero-filled rows first.
// kTaps > 0: taps_padded as a constant (3x3 filters: the loop unrolls; 11% fewer instructions on
// MobileNetV2's 3x3 layers, none on 5x5, where the loop overhead is already small against 13 tap pairs).
template <bool kTail, size_t kTaps = 0>
__attribute__((always_inline)) inline void dot32(Acc32& a, const uint8_t* const* taps, size_t taps_padded,
                                                 size_t offset, size_t valid, const int16_t* w) {
  const __m256i low_bytes = _mm256_set1_epi16(0x00FF);
  if (kTaps > 0) taps_padded = kTaps;
  for (size_t t = 0; t < taps_padded; t += 2) {
    __m256i x0, x1;
    if (kTail) {
      alignas(32) uint8_t b0[32] = {}, b1[32] = {};
      std::memcpy(b0, taps[t] + offset, valid);
      std::memcpy(b1, taps[t + 1] + offset, valid);
      x0 = _mm256_load_si256((const __m256i*)b0);
      x1 = _mm256_load_si256((const __m256i*)b1);
    } else {
      x0 = _mm256_loadu_si256((const __m256i*)(taps[t] + offset));
      x1 = _mm256_loadu_si256((const __m256i*)(taps[t + 1] + offset));
    }
    const __m256i e0 = _mm256_and_si256(x0, low_bytes), e1 = _mm256_and_si256(x1, low_bytes);
    const __m256i o0 = _mm256_srli_epi16(x0, 8), o1 = _mm256_srli_epi16(x1, 8);
    a.v0 = _mm256_add_epi32(a.v0, _mm256_madd_epi16(_mm256_unpacklo_epi16(e0, e1), _mm256_loadu_si256((const __m256i*)w)));
    a.v1 = _mm256_add_epi32(a.v1, _mm256_madd_epi16(_mm256_unpackhi_epi16(e0, e1), _mm256_loadu_si256((const __m256i*)(w + 16))));
    a.v2 = _mm256_add_epi32(a.v2, _mm256_madd_epi16(_mm256_unpacklo_epi16(o0, o1), _mm256_loadu_si256((const __m256i*)(w + 32))));
    a.v3 = _mm256_add_epi32(a.v3, _mm256_madd_epi16(_mm256_unpackhi_epi16(o0, o1), _mm256_loadu_si256((const __m256i*)(w + 48))));
    // keep one accumulation chain per vector: unrolled, GCC would otherwise sum the products as a tree and
    // spill them (measured: stack stores and reloads in the 3x3 loop)
    __asm__("" : "+x"(a.v0), "+x"(a.v1), "+x"(a.v2), "+x"(a.v3));
    w += 64;
  }
}

// The same for 16 channels on xmm registers: the low 128 bits of every packed vector. valid < 16: only
// that many channels exist, copied into zero-filled rows first.
template <bool kTail>
__attribute__((always_inline)) inline void dot16(Acc16& a, const uint8_t* const* taps, size_t taps_padded,
                                                 size_t offset, size_t valid, const int16_t* w) {
  const __m128i low_bytes = _mm_set1_epi16(0x00FF);
  for (size_t t = 0; t < taps_padded; t += 2) {
    __m128i x0, x1;
    if (kTail) {
      alignas(16) uint8_t b0[16] = {}, b1[16] = {};
      std::memcpy(b0, taps[t] + offset, valid);
      std::memcpy(b1, taps[t + 1] + offset, valid);
      x0 = _mm_load_si128((const __m128i*)b0);
      x1 = _mm_load_si128((const __m128i*)b1);
    } else {
      x0 = _mm_loadu_si128((const __m128i*)(taps[t] + offset));
      x1 = _mm_loadu_si128((const __m128i*)(taps[t + 1] + offset));
    }
    const __m128i e0 = _mm_and_si128(x0, low_bytes), e1 = _mm_and_si128(x1, low_bytes);
    const __m128i o0 = _mm_srli_epi16(x0, 8), o1 = _mm_srli_epi16(x1, 8);
    a.v0 = _mm_add_epi32(a.v0, _mm_madd_epi16(_mm_unpacklo_epi16(e0, e1), _mm_loadu_si128((const __m128i*)w)));
    a.v1 = _mm_add_epi32(a.v1, _mm_madd_epi16(_mm_unpackhi_epi16(e0, e1), _mm_loadu_si128((const __m128i*)(w + 16))));
    a.v2 = _mm_add_epi32(a.v2, _mm_madd_epi16(_mm_unpacklo_epi16(o0, o1), _mm_loadu_si128((const __m128i*)(w + 32))));
    a.v3 = _mm_add_epi32(a.v3, _mm_madd_epi16(_mm_unpackhi_epi16(o0, o1), _mm_loadu_si128((const __m128i*)(w + 48))));
    w += 64;
  }
}

// The constants of the u8 epilogue, set up once per call.
struct U8Consts {
  __m256 inv, q_min, q_max;
  __m256i zero_point16;
};

__attribute__((always_inline)) inline __m256i requantize(__m256i acc, __m256 scale, __m256 bias, const U8Consts& k) {
  const __m256 q = _mm256_mul_ps(_mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), scale, bias), k.inv);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, k.q_min), k.q_max));
}

__attribute__((always_inline)) inline __m128i requantize(__m128i acc, __m128 scale, __m128 bias, const U8Consts& k) {
  const __m128 q = _mm_mul_ps(_mm_fmadd_ps(_mm_cvtepi32_ps(acc), scale, bias), _mm256_castps256_ps128(k.inv));
  return _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(q, _mm256_castps256_ps128(k.q_min)), _mm256_castps256_ps128(k.q_max)));
}

// u8 epilogue of 32 lane-order channels starting at absolute channel c (a multiple of 32), n <= 32 stored.
__attribute__((always_inline)) inline void store_u8(const Acc32& a, const QDwEpilogue& ep, const U8Consts& k,
                                                    size_t c, size_t n, uint8_t* o) {
  const float* s = ep.scale + c;
  const float* b = ep.bias + c;
  const __m256i q0 = requantize(a.v0, _mm256_loadu_ps(s), _mm256_loadu_ps(b), k);
  const __m256i q1 = requantize(a.v1, _mm256_loadu_ps(s + 8), _mm256_loadu_ps(b + 8), k);
  const __m256i q2 = requantize(a.v2, _mm256_loadu_ps(s + 16), _mm256_loadu_ps(b + 16), k);
  const __m256i q3 = requantize(a.v3, _mm256_loadu_ps(s + 24), _mm256_loadu_ps(b + 24), k);
  store_bytes(o, lane_order_to_bytes(q0, q1, q2, q3, k.zero_point16), n);
}

// The same for 16 channels (xmm accumulators), n <= 16 of them stored.
__attribute__((always_inline)) inline void store_u8(const Acc16& a, const QDwEpilogue& ep, const U8Consts& k,
                                                    size_t c, size_t n, uint8_t* o) {
  const float* s = ep.scale + c;
  const float* b = ep.bias + c;
  const __m128i q0 = requantize(a.v0, _mm_loadu_ps(s), _mm_loadu_ps(b), k);
  const __m128i q1 = requantize(a.v1, _mm_loadu_ps(s + 8), _mm_loadu_ps(b + 8), k);
  const __m128i q2 = requantize(a.v2, _mm_loadu_ps(s + 16), _mm_loadu_ps(b + 16), k);
  const __m128i q3 = requantize(a.v3, _mm_loadu_ps(s + 24), _mm_loadu_ps(b + 24), k);
  const __m128i bytes = lane_order_to_bytes(q0, q1, q2, q3, _mm256_castsi256_si128(k.zero_point16));
  if (n == 16) {
    _mm_storeu_si128((__m128i*)o, bytes);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128((__m128i*)tmp, bytes);
    std::memcpy(o, tmp, n);
  }
}

// Channel order again, then the shared epilogue (ep0: the call's epilogue with a zero point of 0).
// out_c: the output element of absolute channel c.
inline void store_natural(const Acc32& a, const QGemmEpilogue& ep0, size_t c, size_t n, char* out_c,
                          size_t elem) {
  const ChannelOrder ch = lane_order_to_channels(a.v0, a.v1, a.v2, a.v3);
  store_row(ch.c0, ch.c8, ep0, c, std::min<size_t>(n, 16), out_c);
  if (n > 16) store_row(ch.c16, ch.c24, ep0, c + 16, n - 16, out_c + 16 * elem);
}

inline void store_natural(const Acc16& a, const QGemmEpilogue& ep0, size_t c, size_t n, char* out_c) {
  const __m128i lo02 = _mm_unpacklo_epi32(a.v0, a.v2), hi02 = _mm_unpackhi_epi32(a.v0, a.v2);
  const __m128i lo13 = _mm_unpacklo_epi32(a.v1, a.v3), hi13 = _mm_unpackhi_epi32(a.v1, a.v3);
  store_row(_mm256_set_m128i(hi02, lo02), _mm256_set_m128i(hi13, lo13), ep0, c, n, out_c);
}

}  // namespace

namespace {

// One pixel's channels [c, c + n) of the block starting at c: 32-wide (kWide) or 16-wide, kTail when the
// rows hold fewer channels than the width.
template <bool kWide, bool kTail, size_t kTaps = 0>
__attribute__((always_inline)) inline void pixel_block(const uint8_t* const* taps, size_t taps_padded, size_t offset,
                                                       const int16_t* wb, const QDwEpilogue& ep,
                                                       const QGemmEpilogue& ep0, const U8Consts& k, bool fast_u8,
                                                       size_t c, size_t n, char* oc, size_t elem) {
  const int32_t* init = ep.acc_init + c;
  if (kWide) {
    Acc32 a{_mm256_loadu_si256((const __m256i*)init), _mm256_loadu_si256((const __m256i*)(init + 8)),
                   _mm256_loadu_si256((const __m256i*)(init + 16)), _mm256_loadu_si256((const __m256i*)(init + 24))};
    dot32<kTail, kTaps>(a, taps, taps_padded, offset, n, wb);
    if (fast_u8) {
      store_u8(a, ep, k, c, n, reinterpret_cast<uint8_t*>(oc));
    } else {
      store_natural(a, ep0, c, n, oc, elem);
    }
  } else {
    Acc16 a{_mm_loadu_si128((const __m128i*)init), _mm_loadu_si128((const __m128i*)(init + 8)),
                   _mm_loadu_si128((const __m128i*)(init + 16)), _mm_loadu_si128((const __m128i*)(init + 24))};
    dot16<kTail>(a, taps, taps_padded, offset, n, wb);
    if (fast_u8) {
      store_u8(a, ep, k, c, n, reinterpret_cast<uint8_t*>(oc));
    } else {
      store_natural(a, ep0, c, n, oc);
    }
  }
}

}  // namespace

namespace {

template <size_t kTaps>
void dwconv(size_t pixels, size_t channel0, size_t channels, size_t taps_padded, const uint8_t* const* taps,
            size_t pixel_step, const int16_t* w, const QDwEpilogue& ep, void* out, size_t out_stride) {
  if (kTaps > 0) taps_padded = kTaps;
  const bool fast_u8 = ep.gemm.out_kind == OutKind::kU8 && ep.gemm.residual == nullptr;
  const size_t elem = ep.gemm.out_kind == OutKind::kU8 ? 1 : 4;
  QGemmEpilogue ep0 = ep.gemm;
  ep0.a_zero_point = 0;
  const U8Consts k{_mm256_set1_ps(ep.gemm.out_inv_scale), _mm256_set1_ps(ep.q_min), _mm256_set1_ps(ep.q_max),
                   _mm256_set1_epi16(int16_t(ep.gemm.out_zero_point))};
  const size_t block_w = taps_padded * kQDwChannelTile;
  const size_t end = channel0 + channels;
  char* const o = static_cast<char*>(out);
  for (size_t c = channel0; c < end; c += kQDwChannelTile) {
    const int16_t* wb = w + (c / kQDwChannelTile) * block_w;
    const size_t n = std::min<size_t>(kQDwChannelTile, end - c);
    for (size_t p = 0; p < pixels; ++p) {
      const size_t offset = p * pixel_step + c;
      char* oc = o + (p * out_stride + c) * elem;
      if (n == 32) {
        pixel_block<true, false, kTaps>(taps, taps_padded, offset, wb, ep, ep0, k, fast_u8, c, n, oc, elem);
      } else if (n == 16) {
        pixel_block<false, false>(taps, taps_padded, offset, wb, ep, ep0, k, fast_u8, c, n, oc, elem);
      } else if (n < 16) {
        pixel_block<false, true>(taps, taps_padded, offset, wb, ep, ep0, k, fast_u8, c, n, oc, elem);
      } else {
        pixel_block<true, true>(taps, taps_padded, offset, wb, ep, ep0, k, fast_u8, c, n, oc, elem);
      }
    }
  }
}

}  // namespace

void eo_qu8s8_dwconv_minmax_ukernel_32x2__avx2(size_t pixels, size_t channel0, size_t channels, size_t taps_padded,
                                               const uint8_t* const* taps, size_t pixel_step, const int16_t* w,
                                               const QDwEpilogue& ep, void* out, size_t out_stride) {
  if (taps_padded == 10) {
    dwconv<10>(pixels, channel0, channels, taps_padded, taps, pixel_step, w, ep, out, out_stride);
  } else {
    dwconv<0>(pixels, channel0, channels, taps_padded, taps, pixel_step, w, ep, out, out_stride);
  }
}

}  // namespace edgeopt

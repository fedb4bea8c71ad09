// AVX2 max pooling: 32 u8 or 8 f32 channels per instruction; tails through a small buffer so nothing
// is read or written past a row.
#include <immintrin.h>

#include <cstring>

#include "ukernels/maxpool.h"

namespace edgeopt {

void eo_u8_maxpool__avx2(size_t channels, size_t taps, const uint8_t* const* rows, uint8_t* out) {
  size_t c = 0;
  for (; c + 32 <= channels; c += 32) {
    __m256i m = _mm256_loadu_si256((const __m256i*)(rows[0] + c));
    for (size_t t = 1; t < taps; ++t) m = _mm256_max_epu8(m, _mm256_loadu_si256((const __m256i*)(rows[t] + c)));
    _mm256_storeu_si256((__m256i*)(out + c), m);
  }
  if (c < channels) {
    const size_t n = channels - c;
    alignas(32) uint8_t buf[32] = {};
    std::memcpy(buf, rows[0] + c, n);
    __m256i m = _mm256_load_si256((const __m256i*)buf);
    for (size_t t = 1; t < taps; ++t) {
      std::memcpy(buf, rows[t] + c, n);
      m = _mm256_max_epu8(m, _mm256_load_si256((const __m256i*)buf));
    }
    _mm256_store_si256((__m256i*)buf, m);
    std::memcpy(out + c, buf, n);
  }
}

namespace {

// max that propagates NaN from either side, like the scalar twin: NaN lanes of m stay, NaN lanes of v win.
inline __m256 max_nan(__m256 m, __m256 v) {
  const __m256 mx = _mm256_max_ps(v, m);  // returns m where either is NaN
  const __m256 v_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  const __m256 m_nan = _mm256_cmp_ps(m, m, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_blendv_ps(mx, v, v_nan), m, m_nan);
}

}  // namespace

void eo_f32_maxpool__avx2(size_t channels, size_t taps, const float* const* rows, float* out) {
  size_t c = 0;
  for (; c + 8 <= channels; c += 8) {
    __m256 m = _mm256_loadu_ps(rows[0] + c);
    for (size_t t = 1; t < taps; ++t) m = max_nan(m, _mm256_loadu_ps(rows[t] + c));
    _mm256_storeu_ps(out + c, m);
  }
  if (c < channels) {
    const size_t n = channels - c;
    alignas(32) float buf[8] = {};
    std::memcpy(buf, rows[0] + c, n * sizeof(float));
    __m256 m = _mm256_load_ps(buf);
    for (size_t t = 1; t < taps; ++t) {
      std::memcpy(buf, rows[t] + c, n * sizeof(float));
      m = max_nan(m, _mm256_load_ps(buf));
    }
    _mm256_store_ps(buf, m);
    std::memcpy(out + c, buf, n * sizeof(float));
  }
}

}  // namespace edgeopt

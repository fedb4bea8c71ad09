// AVX2 activation range scan and u8 quantization; bit-exact twins of the __ref versions.
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "ukernels/qgemm.h"

namespace edgeopt {
namespace {

// All-ones lanes where the exponent bits are all set: +-Inf or NaN.
inline __m256i nonfinite_mask(__m256 v) {
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exp_mask), exp_mask);
}

inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

}  // namespace

bool eo_f32_minmax__avx2(size_t rows, size_t cols, const float* x, size_t x_stride, float* min_out,
                         float* max_out) {
  const float inf = std::numeric_limits<float>::infinity();
  __m256 vlo = _mm256_set1_ps(inf), vhi = _mm256_set1_ps(-inf);
  __m256i bad = _mm256_setzero_si256();
  float lo = inf, hi = -inf;
  bool finite = true;
  for (size_t i = 0; i < rows; ++i) {
    const float* row = x + i * x_stride;
    size_t j = 0;
    for (; j + 8 <= cols; j += 8) {
      const __m256 v = _mm256_loadu_ps(row + j);
      bad = _mm256_or_si256(bad, nonfinite_mask(v));
      vlo = _mm256_min_ps(vlo, v);
      vhi = _mm256_max_ps(vhi, v);
    }
    for (; j < cols; ++j) {
      finite &= std::isfinite(row[j]);
      lo = std::fmin(lo, row[j]);
      hi = std::fmax(hi, row[j]);
    }
  }
  finite &= _mm256_testz_si256(bad, bad);
  *min_out = std::fmin(lo, hmin(vlo));
  *max_out = std::fmax(hi, hmax(vhi));
  return finite;
}

bool eo_f32_qu8_quantize__avx2(size_t rows, size_t cols, const float* x, size_t x_stride, float inv_scale,
                               int32_t zero_point, uint8_t* q, size_t q_stride) {
  const __m256 vinv = _mm256_set1_ps(inv_scale);
  const float lo = float(-zero_point), hi = float(255 - zero_point);
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  const __m256i vzp = _mm256_set1_epi32(zero_point);
  __m256i bad = _mm256_setzero_si256();
  bool finite = true;
  for (size_t i = 0; i < rows; ++i) {
    const float* row = x + i * x_stride;
    uint8_t* out = q + i * q_stride;
    size_t j = 0;
    for (; j + 16 <= cols; j += 16) {
      const __m256 v0 = _mm256_loadu_ps(row + j), v1 = _mm256_loadu_ps(row + j + 8);
      bad = _mm256_or_si256(bad, _mm256_or_si256(nonfinite_mask(v0), nonfinite_mask(v1)));
      const __m256i i0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v0, vinv), vlo), vhi)), vzp);
      const __m256i i1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v1, vinv), vlo), vhi)), vzp);
      const __m256i i16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xD8);
      _mm_storeu_si128((__m128i*)(out + j),
                       _mm_packus_epi16(_mm256_castsi256_si128(i16), _mm256_extracti128_si256(i16, 1)));
    }
    for (; j < cols; ++j) {
      const float v = row[j];
      finite &= std::isfinite(v);
      const float t = std::fmin(std::fmax(v * inv_scale, lo), hi);
      out[j] = uint8_t(int32_t(std::nearbyint(t)) + zero_point);
    }
  }
  return finite && _mm256_testz_si256(bad, bad);
}

}  // namespace edgeopt

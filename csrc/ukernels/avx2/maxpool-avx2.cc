// AVX2 max pooling: 64 u8 or 16 f32 channels per step (two vectors in flight), then one vector, then a
// tail through a small buffer so nothing is read or written past a row.
#include <immintrin.h>

#include <cstring>

#include "ukernels/maxpool.h"

namespace edgeopt {
namespace {

struct U8Ops {
  using T = uint8_t;
  using V = __m256i;
  static constexpr size_t kLanes = 32;
  static V load(const T* p) { return _mm256_loadu_si256((const __m256i*)p); }
  static void store(T* p, V v) { _mm256_storeu_si256((__m256i*)p, v); }
  static V max(V m, V v) { return _mm256_max_epu8(m, v); }
};

struct F32Ops {
  using T = float;
  using V = __m256;
  static constexpr size_t kLanes = 8;
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  // max that propagates NaN from either side, like the scalar twin: NaN lanes of m stay, NaN lanes of v win.
  static V max(V m, V v) {
    const __m256 mx = _mm256_max_ps(v, m);  // returns m where either is NaN
    const __m256 v_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    const __m256 m_nan = _mm256_cmp_ps(m, m, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_blendv_ps(mx, v, v_nan), m, m_nan);
  }
};

// kKernelW > 0: the window width as a constant (the 2x2 and 3x3 pools of the models, fully unrolled).
template <class Ops, size_t kKernelW>
void maxpool_rows(size_t pixels, size_t channels, size_t rows, const typename Ops::T* const* row_ptrs, size_t kernel_w,
                  size_t tap_step, size_t pixel_step, typename Ops::T* out) {
  using T = typename Ops::T;
  using V = typename Ops::V;
  constexpr size_t L = Ops::kLanes;
  if (kKernelW > 0) kernel_w = kKernelW;
  for (size_t p = 0; p < pixels; ++p) {
    const size_t base = p * pixel_step;
    T* o = out + p * channels;
    size_t c = 0;
    for (; c + 2 * L <= channels; c += 2 * L) {
      V m0 = Ops::load(row_ptrs[0] + base + c), m1 = Ops::load(row_ptrs[0] + base + c + L);
      for (size_t r = 0; r < rows; ++r) {
        const T* src = row_ptrs[r] + base + c;
        for (size_t kx = 0; kx < kernel_w; ++kx, src += tap_step) {
          m0 = Ops::max(m0, Ops::load(src));
          m1 = Ops::max(m1, Ops::load(src + L));
        }
      }
      Ops::store(o + c, m0);
      Ops::store(o + c + L, m1);
    }
    for (; c + L <= channels; c += L) {
      V m = Ops::load(row_ptrs[0] + base + c);
      for (size_t r = 0; r < rows; ++r) {
        const T* src = row_ptrs[r] + base + c;
        for (size_t kx = 0; kx < kernel_w; ++kx, src += tap_step) m = Ops::max(m, Ops::load(src));
      }
      Ops::store(o + c, m);
    }
    if (c < channels) {
      const size_t n = channels - c;
      alignas(32) T buf[L] = {};
      std::memcpy(buf, row_ptrs[0] + base + c, n * sizeof(T));
      V m = Ops::load(buf);
      for (size_t r = 0; r < rows; ++r) {
        const T* src = row_ptrs[r] + base + c;
        for (size_t kx = 0; kx < kernel_w; ++kx, src += tap_step) {
          std::memcpy(buf, src, n * sizeof(T));
          m = Ops::max(m, Ops::load(buf));
        }
      }
      Ops::store(buf, m);
      std::memcpy(o + c, buf, n * sizeof(T));
    }
  }
}

template <class Ops>
void maxpool(size_t pixels, size_t channels, size_t rows, const typename Ops::T* const* row_ptrs, size_t kernel_w,
             size_t tap_step, size_t pixel_step, typename Ops::T* out) {
  if (kernel_w == 3) {
    maxpool_rows<Ops, 3>(pixels, channels, rows, row_ptrs, kernel_w, tap_step, pixel_step, out);
  } else if (kernel_w == 2) {
    maxpool_rows<Ops, 2>(pixels, channels, rows, row_ptrs, kernel_w, tap_step, pixel_step, out);
  } else {
    maxpool_rows<Ops, 0>(pixels, channels, rows, row_ptrs, kernel_w, tap_step, pixel_step, out);
  }
}

}  // namespace

void eo_u8_maxpool__avx2(size_t pixels, size_t channels, size_t rows, const uint8_t* const* row_ptrs, size_t kernel_w,
                         size_t tap_step, size_t pixel_step, uint8_t* out) {
  maxpool<U8Ops>(pixels, channels, rows, row_ptrs, kernel_w, tap_step, pixel_step, out);
}

void eo_f32_maxpool__avx2(size_t pixels, size_t channels, size_t rows, const float* const* row_ptrs, size_t kernel_w,
                          size_t tap_step, size_t pixel_step, float* out) {
  maxpool<F32Ops>(pixels, channels, rows, row_ptrs, kernel_w, tap_step, pixel_step, out);
}

}  // namespace edgeopt

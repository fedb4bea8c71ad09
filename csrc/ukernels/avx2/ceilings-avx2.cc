#include <immintrin.h>

#include "ukernels/ceilings.h"

namespace edgeopt {

// Twelve named accumulators (an array would be spilled to the stack and measure store forwarding).
// The empty asm with "+x" makes each value opaque per iteration, so the chains cannot be folded away.
#define EO_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

float eo_ceiling_f32_fma__avx2(size_t iterations) {
#define EO_DECL(i) __m256 acc##i = _mm256_set1_ps(float(i) * 1e-3f);
  EO_CHAINS(EO_DECL)
#undef EO_DECL
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-4f);
  for (size_t it = 0; it < iterations; ++it) {
#define EO_STEP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
    EO_CHAINS(EO_STEP)
#undef EO_STEP
    __asm__ volatile("" : "+x"(acc0), "+x"(acc1), "+x"(acc2), "+x"(acc3), "+x"(acc4), "+x"(acc5));
    __asm__ volatile("" : "+x"(acc6), "+x"(acc7), "+x"(acc8), "+x"(acc9), "+x"(acc10), "+x"(acc11));
  }
  __m256 s = _mm256_setzero_ps();
#define EO_SUM(i) s = _mm256_add_ps(s, acc##i);
  EO_CHAINS(EO_SUM)
#undef EO_SUM
  return _mm256_cvtss_f32(s);
}

int32_t eo_ceiling_s8_madd__avx2(size_t iterations) {
  // The GEMM kernels' inner step without their loads: activation broadcasts x weight vectors, each
  // product through vpmaddubsw, vpmaddwd with ones, vpaddd. Operands are made opaque every iteration so
  // no product can be computed once and reused (which would time vpaddd alone). 3 x 2 products keep
  // everything in the 16 ymm registers (GCC spills accumulators at 4 x 2).
  __m256i a0 = _mm256_set1_epi8(3), a1 = _mm256_set1_epi8(5), a2 = _mm256_set1_epi8(7);
  __m256i w0 = _mm256_set1_epi8(-2), w1 = _mm256_set1_epi8(4);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  for (size_t it = 0; it < iterations; ++it) {
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(w0), "+x"(w1));
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, w0), ones));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(_mm256_maddubs_epi16(a0, w1), ones));
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(_mm256_maddubs_epi16(a1, w0), ones));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(_mm256_maddubs_epi16(a1, w1), ones));
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(_mm256_maddubs_epi16(a2, w0), ones));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(_mm256_maddubs_epi16(a2, w1), ones));
  }
  const __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c00, c01), _mm256_add_epi32(c10, c11)),
                                     _mm256_add_epi32(c20, c21));
  return _mm256_cvtsi256_si32(s);
}

#undef EO_CHAINS

int64_t eo_ceiling_read__avx2(const uint8_t* p, size_t bytes) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 128 <= bytes; i += 128) {
    s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i*)(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i*)(p + i + 32)));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i*)(p + i + 64)));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i*)(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  return _mm256_extract_epi64(s, 0) + _mm256_extract_epi64(s, 1) + _mm256_extract_epi64(s, 2) +
         _mm256_extract_epi64(s, 3);
}

}  // namespace edgeopt

// Machine ceilings measured by the benchmarks in the same run as the kernels they judge: dependent-free
// chains of the instructions our kernels are built from. Not kernels; AVX2 only, no reference twins.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeopt {

// Each returns a value derived from all lanes so the compiler cannot drop the work.
float eo_ceiling_f32_fma__avx2(size_t iterations);      // 12 chains x 8 lanes x 2 flops per iteration
int32_t eo_ceiling_s8_madd__avx2(size_t iterations);    // 6 products x 32 int8 MACs per iteration
int64_t eo_ceiling_read__avx2(const uint8_t* p, size_t bytes);  // bytes multiple of 128

constexpr size_t kCeilingChains = 12;  // fp32 FMA chains
constexpr size_t kCeilingS8MacsPerIteration = 6 * 32;

}  // namespace edgeopt

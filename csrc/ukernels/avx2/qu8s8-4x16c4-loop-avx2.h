// The inner loop of the 4-row 16c4 kernels (dense GEMM and implicit-GEMM conv), in inline assembly.
//
// Why assembly: written with intrinsics, GCC 12 keeps the eight accumulators but adds register copies
// (2 per k group in the conv kernel) and, in the GEMM kernel, stack stores of two accumulators every
// iteration (read off the disassembly). Each k group should be exactly 4 broadcasts and 8 x (vpmaddubsw,
// vpmaddwd with ones, vpaddd): the 16 vpmaddubsw/vpmaddwd are the p0/p1 work (8 cycles), and on a
// 4-wide Skylake-class core the loop is otherwise rename-bound, so every extra uop costs time. Here the
// weights are vpmaddubsw's memory operand (base + displacement, so it stays micro-fused) instead of
// separate loads, and two k groups share one loop counter update: 58 fused uops per 16 cycles of p0/p1
// work (3.6 per cycle).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace edgeopt {

// One k group: row pointer register R (offset OFF bytes), weight displacement W (bytes), accumulators
// C0/C1. Operand names refer to the asm statement in dot_4x16c4.
#define EO_4X16C4_ROW(R, OFF, W, C0, C1)                  \
  "vpbroadcastd " #OFF "(%[" #R "],%[k]), %[va]\n\t"      \
  "vpmaddubsw " #W "(%[w]), %[va], %[t0]\n\t"             \
  "vpmaddubsw " #W "+32(%[w]), %[va], %[t1]\n\t"          \
  "vpmaddwd %[ones], %[t0], %[t0]\n\t"                    \
  "vpmaddwd %[ones], %[t1], %[t1]\n\t"                    \
  "vpaddd %[t0], %[" #C0 "], %[" #C0 "]\n\t"              \
  "vpaddd %[t1], %[" #C1 "], %[" #C1 "]\n\t"
#define EO_4X16C4_GROUP(OFF, W)                 \
  EO_4X16C4_ROW(a0, OFF, W, c00, c01)           \
  EO_4X16C4_ROW(a1, OFF, W, c10, c11)           \
  EO_4X16C4_ROW(a2, OFF, W, c20, c21)           \
  EO_4X16C4_ROW(a3, OFF, W, c30, c31)

// c{r}{0,1} += the 16c4 dot products of rows a0..a3 (kc bytes each, kc a multiple of 4) with the packed
// weights at w (kc / 4 groups of 64 bytes); returns w advanced past them. Exact for weights in [-63, 63].
__attribute__((always_inline)) inline const int8_t* dot_4x16c4(size_t kc, const uint8_t* a0, const uint8_t* a1,
                                                              const uint8_t* a2, const uint8_t* a3, const int8_t* w,
                                                              __m256i& c00, __m256i& c01, __m256i& c10, __m256i& c11,
                                                              __m256i& c20, __m256i& c21, __m256i& c30, __m256i& c31,
                                                              __m256i ones) {
  size_t k = 0;
  __m256i va, t0, t1;
  const size_t kc_pairs = kc & ~size_t(7);
  if (kc_pairs != 0) {
    __asm__(
        "1:\n\t"
        EO_4X16C4_GROUP(0, 0)
        EO_4X16C4_GROUP(4, 64)
        "add $8, %[k]\n\t"
        "sub $-128, %[w]\n\t"
        "cmp %[kc], %[k]\n\t"
        "jb 1b\n\t"
        : [k] "+r"(k), [w] "+r"(w), [va] "=&x"(va), [t0] "=&x"(t0), [t1] "=&x"(t1), [c00] "+x"(c00),
          [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30),
          [c31] "+x"(c31)
        : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [kc] "r"(kc_pairs), [ones] "x"(ones)
        : "cc", "memory");
  }
  if (kc & 4) {
    __asm__(
        EO_4X16C4_GROUP(0, 0)
        "add $64, %[w]\n\t"
        : [w] "+r"(w), [va] "=&x"(va), [t0] "=&x"(t0), [t1] "=&x"(t1), [c00] "+x"(c00), [c01] "+x"(c01),
          [c10] "+x"(c10), [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31)
        : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [k] "r"(k), [ones] "x"(ones)
        : "memory");
  }
  return w;
}

// The first 8 columns of a block only (the packed block's first 32 bytes of every 64-byte k group): the
// last block of a layer whose output channels end 1-8 columns into it (MobileNetV2's 24-channel 1x1
// convs) does half the multiplies. Per k group 4 broadcasts and 4 x (vpmaddubsw, vpmaddwd, vpaddd).
#define EO_4X8C4_ROW(R, OFF, W, C0)                       \
  "vpbroadcastd " #OFF "(%[" #R "],%[k]), %[va]\n\t"      \
  "vpmaddubsw " #W "(%[w]), %[va], %[t0]\n\t"             \
  "vpmaddwd %[ones], %[t0], %[t0]\n\t"                    \
  "vpaddd %[t0], %[" #C0 "], %[" #C0 "]\n\t"
#define EO_4X8C4_GROUP(OFF, W)       \
  EO_4X8C4_ROW(a0, OFF, W, c00)      \
  EO_4X8C4_ROW(a1, OFF, W, c10)      \
  EO_4X8C4_ROW(a2, OFF, W, c20)      \
  EO_4X8C4_ROW(a3, OFF, W, c30)

// c{r}0 += the dot products of rows a0..a3 (kc bytes each, kc a multiple of 4) with columns 0-7 of the
// packed block at w; returns w advanced past the whole block's kc / 4 groups. Exact as dot_4x16c4.
__attribute__((always_inline)) inline const int8_t* dot_4x8c4(size_t kc, const uint8_t* a0, const uint8_t* a1,
                                                             const uint8_t* a2, const uint8_t* a3, const int8_t* w,
                                                             __m256i& c00, __m256i& c10, __m256i& c20, __m256i& c30,
                                                             __m256i ones) {
  size_t k = 0;
  __m256i va, t0;
  const size_t kc_pairs = kc & ~size_t(7);
  if (kc_pairs != 0) {
    __asm__(
        "1:\n\t"
        EO_4X8C4_GROUP(0, 0)
        EO_4X8C4_GROUP(4, 64)
        "add $8, %[k]\n\t"
        "sub $-128, %[w]\n\t"
        "cmp %[kc], %[k]\n\t"
        "jb 1b\n\t"
        : [k] "+r"(k), [w] "+r"(w), [va] "=&x"(va), [t0] "=&x"(t0), [c00] "+x"(c00), [c10] "+x"(c10),
          [c20] "+x"(c20), [c30] "+x"(c30)
        : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [kc] "r"(kc_pairs), [ones] "x"(ones)
        : "cc", "memory");
  }
  if (kc & 4) {
    __asm__(
        EO_4X8C4_GROUP(0, 0)
        "add $64, %[w]\n\t"
        : [w] "+r"(w), [va] "=&x"(va), [t0] "=&x"(t0), [c00] "+x"(c00), [c10] "+x"(c10), [c20] "+x"(c20),
          [c30] "+x"(c30)
        : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [k] "r"(k), [ones] "x"(ones)
        : "memory");
  }
  return w;
}

#undef EO_4X8C4_GROUP
#undef EO_4X8C4_ROW
#undef EO_4X16C4_GROUP
#undef EO_4X16C4_ROW

}  // namespace edgeopt

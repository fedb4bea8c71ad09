// Kernel tables: one per ISA, chosen through config/cpu.h. Ops call through the table and never test
// CPU features themselves.
#pragma once

#include "config/cpu.h"
#include "ukernels/f32gemm.h"
#include "ukernels/gavgpool.h"
#include "ukernels/maxpool.h"
#include "ukernels/qdwconv.h"
#include "ukernels/qgemm.h"
#include "ukernels/spgemm.h"

namespace edgeopt {

struct QGemmKernels {
  // gemm_by_rows[r] computes tiles of up to r rows (r = 1..kQGemmMr); [kQGemmMr] is the main tile.
  QGemmUkernelFn gemm_by_rows[kQGemmMr + 1];
  F32MinMaxFn minmax;
  F32QuantizeU8Fn quantize;
  QDwconvUkernelFn dwconv;
};

const QGemmKernels& qgemm_kernels(Isa isa);
inline const QGemmKernels& qgemm_kernels() { return qgemm_kernels(active_isa()); }

// Float GEMM with f32 or f16 packed weights (ukernels/f32gemm.h): a 1-row kernel for batch 1 and a
// 4-row kernel for the rest, per weight type.
struct FloatGemmKernels {
  F32GemmUkernelFn f32_1x64;
  F32GemmUkernelFn f32_4x16;
  F16wGemmUkernelFn f16w_1x64;
  F16wGemmUkernelFn f16w_4x16;
};

const FloatGemmKernels& float_gemm_kernels(Isa isa);
inline const FloatGemmKernels& float_gemm_kernels() { return float_gemm_kernels(active_isa()); }

// NHWC pooling: max (ops/maxpool.h), global average (ops/gavgpool.h).
struct PoolKernels {
  U8MaxpoolFn u8_max;
  F32MaxpoolFn f32_max;
  U8GAvgPoolFn u8_gavg;
  F32GAvgPoolFn f32_gavg;
};

const PoolKernels& pool_kernels(Isa isa);
inline const PoolKernels& pool_kernels() { return pool_kernels(active_isa()); }

// Block-sparse GEMM (ukernels/spgemm.h), per block width (8 or 16 columns) and row tile:
// [0] 1 row, [1] 2 rows, [2] 4 rows, [3] 8 rows (nullptr: no such tile; use the next smaller).
struct SparseGemmKernels {
  F32SpGemmUkernelFn f32_nb8[4];
  F32SpGemmUkernelFn f32_nb16[4];
  QSpGemmUkernelFn q_nb8[4];
  QSpGemmUkernelFn q_nb16[4];
};

const SparseGemmKernels& sparse_gemm_kernels(Isa isa);
inline const SparseGemmKernels& sparse_gemm_kernels() { return sparse_gemm_kernels(active_isa()); }

}  // namespace edgeopt

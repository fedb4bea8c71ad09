// Kernel tables: one per ISA, chosen through config/cpu.h. Ops call through the table and never test
// CPU features themselves.
#pragma once

#include "config/cpu.h"
#include "ukernels/qgemm.h"

namespace edgeopt {

struct QGemmKernels {
  // gemm_by_rows[r] computes tiles of up to r rows (r = 1..kQGemmMr); [kQGemmMr] is the main tile.
  QGemmUkernelFn gemm_by_rows[kQGemmMr + 1];
  F32MinMaxFn minmax;
  F32QuantizeU8Fn quantize;
};

const QGemmKernels& qgemm_kernels(Isa isa);
inline const QGemmKernels& qgemm_kernels() { return qgemm_kernels(active_isa()); }

}  // namespace edgeopt

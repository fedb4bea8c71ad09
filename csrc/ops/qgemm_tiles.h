// What the int8 layers (qlinear, qconv) share: activation quantization, the epilogue set-up, and the
// tiled, threaded GEMM over 16c4-packed weights. Each layer only says where its activation rows come from.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "config/dispatch.h"
#include "ops/parallel.h"
#include "pack/qs8_packed.h"
#include "ukernels/qgemm.h"

namespace edgeopt {

struct U8QuantParams {
  float scale;
  int32_t zero_point;
};

// Affine u8 parameters covering [min(lo, 0), max(hi, 0)] (0 stays exactly representable).
U8QuantParams choose_u8_params(float lo, float hi);

// Quantizes m rows of k floats into u8 rows (out_stride bytes apart). dynamic: parameters from this
// input's min/max, else `params`. Returns the parameters used; throws std::domain_error on NaN/Inf.
U8QuantParams quantize_activations(const float* x, size_t m, size_t k, size_t x_stride, bool dynamic,
                                   U8QuantParams params, uint8_t* out, size_t out_stride, int threads);

// Threads worth waking for a call of `macs` multiply-adds (at most `requested`, at least 1). The default
// is ~20-40 us of int8 GEMM per thread: small layers (a 16-token transformer projection is ~0.6M) run on
// the calling thread alone; besides the wake-up cost this avoids waiting on a helper thread that another
// process (or torch's spinning OpenMP threads) has pushed off its core, which on a busy 2-core machine
// cost such layers 10-100x.
int threads_for_macs(double macs, int requested, double min_macs_per_thread = 2.0e6);

// Per-thread scratch that grows and is never shrunk; `slot` keeps independent users apart (a caller's
// quantized input must survive while its tasks fill their own tile buffers on the same thread).
enum class ScratchSlot { kInput = 0, kTile = 1, kGathered = 2 };
uint8_t* thread_scratch(ScratchSlot slot, size_t bytes);

QGemmEpilogue make_qgemm_epilogue(const int32_t* w_colsum, const float* w_scale, const float* bias, U8QuantParams x,
                                  float out_min, float out_max, OutKind out_kind, U8QuantParams out_params,
                                  const float* residual = nullptr, const void* out_base = nullptr);

// Activation rows handed to the micro-kernels: rows i.. of the current tile, `stride` bytes apart, each
// with k_padded readable bytes.
struct ARows {
  const uint8_t* a;
  size_t stride;
};

// The input of an int8 GEMM layer as u8 rows of kp (k rounded up to 4) readable bytes: u8 input rows
// as they are when k is a multiple of 4, else copied (u8) or quantized (f32) into kInput scratch.
// `params` in: the static / u8 parameters; out: the parameters used. Throws like quantize_activations.
ARows prepare_u8_input(const float* x_f32, const uint8_t* x_u8, size_t m, size_t k, size_t kp, size_t x_stride,
                       bool dynamic, U8QuantParams* params, int threads);

// Rows per tile: as many as keep their activations in L2 while weight blocks stream past them.
size_t qgemm_rows_per_tile(size_t k_padded);
// Column blocks per micro-kernel call: as many as keep their weights in L2 from one row tile to the next
// (the call walks them all for one tile; a short-K layer then pays the call once per tile).
size_t qgemm_blocks_per_call(size_t k_padded);

// How a GEMM-shaped layer (m rows, n_blocks column blocks of kQGemmNr, reduction k_padded) is split into
// tasks for the pool: row chunks (multiples of kQGemmMr, as even as that allows) x column groups. Splits the
// rows first (each chunk's activations stay in L2 while the weight blocks stream past), then the columns,
// then the rows again, until there are enough tasks that every thread gets an equal share (a thread
// stalled by another process leaves little stranded), but no task is so small that claiming it costs.
// rows_cost: a task pays per row it touches (a gathered tile), so column splits are a last resort.
struct QGemmTaskPlan {
  size_t rows_per_chunk, m_chunks;
  size_t blocks_per_group, n_groups;
  size_t tasks() const { return m_chunks * n_groups; }
};
QGemmTaskPlan plan_qgemm_tasks(size_t m, size_t n_blocks, size_t k_padded, int threads, bool rows_cost = false);

// C (m x n, out_stride elements per row) = epilogue(A * W). rows(row0, row1) returns the activation rows
// of one tile [row0, row1); it runs on the thread that computes the tile and may fill a tile buffer.
// rows_are_gathered: rows() copies its rows (see plan_qgemm_tasks' rows_cost).
template <class RowsFn>
void qgemm_tiled(const QGemmKernels& kern, size_t m, const Qs8PackedView& w, const QGemmEpilogue& ep, RowsFn&& rows,
                 void* out, size_t out_stride, int threads, bool rows_are_gathered = false) {
  const size_t n = w.n(), kp = w.k_padded();
  const size_t out_elem = ep.out_kind == OutKind::kU8 ? 1 : 4;
  const size_t n_blocks = (n + kQGemmNr - 1) / kQGemmNr;
  const size_t mr_main = std::min<size_t>(m, kQGemmMr);
  const QGemmUkernelFn main_kernel = kern.gemm_by_rows[mr_main];
  const QGemmTaskPlan plan = plan_qgemm_tasks(m, n_blocks, kp, threads, rows_are_gathered);
  const size_t blocks_per_call = qgemm_blocks_per_call(kp);
  char* c = static_cast<char*>(out);
  parallel_for(plan.tasks(), threads, [&](size_t t) {
    const size_t mi = t % plan.m_chunks, gi = t / plan.m_chunks;
    const size_t row0 = mi * plan.rows_per_chunk, row1 = std::min(m, row0 + plan.rows_per_chunk);
    const size_t b0 = gi * plan.blocks_per_group, b1 = std::min(n_blocks, b0 + plan.blocks_per_group);
    const ARows a = rows(row0, row1);
    for (size_t b = b0; b < b1; b += blocks_per_call) {
      const size_t col = b * kQGemmNr, nc = std::min(n, std::min(b1, b + blocks_per_call) * kQGemmNr) - col;
      const int8_t* wb = w.blocks + b * w.block_bytes();
      for (size_t i = row0; i < row1; i += kQGemmMr) {
        const size_t mr = std::min<size_t>(kQGemmMr, row1 - i);
        const QGemmUkernelFn uk = mr == mr_main ? main_kernel : kern.gemm_by_rows[mr];
        uk(mr, nc, kp, a.a + (i - row0) * a.stride, a.stride, wb, ep, col, c + (i * out_stride + col) * out_elem,
           out_stride);
      }
    }
  });
}

}  // namespace edgeopt

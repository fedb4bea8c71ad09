#include "ops/sparse_linear.h"

#include <algorithm>
#include <stdexcept>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

// Activation rows kept in L2 while the weight blocks of a task stream past them (as in qlinear).
constexpr size_t kL2ABytes = 128 * 1024;
constexpr double kMinMacsPerTask = 1 << 16;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

struct Plan {
  int threads;
  size_t mc, m_chunks, rows_per_task, tasks;
};

// Tasks = row chunks x groups of block rows, balanced by stored blocks rather than by columns: a pruned
// layer's block rows differ in density.
Plan plan(const SparsePackedView& w, size_t m, size_t row_bytes, int requested) {
  Plan p{};
  const double macs = double(m) * double(w.nnz()) * double(w.block_elems());
  p.threads = threads_for_macs(macs, requested);  // counting stored multiply-adds only
  p.mc = std::clamp<size_t>(kL2ABytes / std::max<size_t>(row_bytes, 1) / 8 * 8, 8, 256);
  p.m_chunks = ceil_div(m, p.mc);
  const size_t target = std::clamp<size_t>(size_t(macs / kMinMacsPerTask), 1, size_t(p.threads) * 8);
  const size_t groups = std::min(w.block_rows(), std::max<size_t>(1, ceil_div(target, p.m_chunks)));
  p.rows_per_task = ceil_div(w.block_rows(), groups);
  p.tasks = p.m_chunks * ceil_div(w.block_rows(), p.rows_per_task);
  return p;
}

}  // namespace

void sparse_float_linear(const SparsePackedView& w, const FloatLinearCall& call) {
  if (w.is_int8) throw std::invalid_argument("edgeopt: sparse_float_linear needs fp32 sparse weights");
  const size_t m = call.m, n = w.n(), nb = w.nb();
  if (m == 0) return;
  const SparseGemmKernels& kern = sparse_gemm_kernels();
  const F32SpGemmUkernelFn* table = nb == 16 ? kern.f32_nb16 : kern.f32_nb8;
  const Plan p = plan(w, m, w.k() * 4, call.num_threads);
  const float* values = static_cast<const float*>(w.values);
  parallel_for(p.tasks, p.threads, [&](size_t t) {
    const size_t mi = t % p.m_chunks, gi = t / p.m_chunks;
    const size_t row0 = mi * p.mc, row1 = std::min(m, row0 + p.mc);
    const size_t g0 = gi * p.rows_per_task, g1 = std::min(w.block_rows(), g0 + p.rows_per_task);
    for (size_t g = g0; g < g1; ++g) {
      const size_t col = g * nb, nr = std::min(nb, n - col);
      const size_t b0 = w.row_ptr[g], nnz = w.row_ptr[g + 1] - b0;
      for (size_t i = row0; i < row1;) {
        size_t tile;
        const F32SpGemmUkernelFn uk = sparse_tile_kernel(table, row1 - i, &tile);
        uk(tile, nr, nnz, w.kidx + b0, w.k() - 1, values + b0 * nb, call.x + i * call.x_stride, call.x_stride, w.bias + col,
           call.out_min, call.out_max, call.out + i * call.out_stride + col, call.out_stride);
        i += tile;
      }
    }
  });
}

U8QuantParams sparse_qlinear(const SparsePackedView& w, const QLinearCall& call) {
  if (!w.is_int8) throw std::invalid_argument("edgeopt: sparse_qlinear needs int8 sparse weights");
  const size_t m = call.m, n = w.n(), nb = w.nb(), k = w.k(), kp = w.k_padded();
  if (m == 0) return call.x_params;
  const SparseGemmKernels& kern = sparse_gemm_kernels();
  const QSpGemmUkernelFn* table = nb == 16 ? kern.q_nb16 : kern.q_nb8;
  const Plan p = plan(w, m, kp, call.num_threads);
  U8QuantParams xp = call.x_params;
  const ARows rows = prepare_u8_input(call.x_f32, call.x_u8, m, k, kp, call.x_stride, call.dynamic, &xp, p.threads);
  const QGemmEpilogue ep = make_qgemm_epilogue(w.colsum, w.scale, w.bias, xp, call.out_min, call.out_max,
                                               call.out_kind, call.out_params);
  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  char* out = static_cast<char*>(call.out);
  const int8_t* values = static_cast<const int8_t*>(w.values);
  const size_t block_bytes = nb * kSpQKr;
  parallel_for(p.tasks, p.threads, [&](size_t t) {
    const size_t mi = t % p.m_chunks, gi = t / p.m_chunks;
    const size_t row0 = mi * p.mc, row1 = std::min(m, row0 + p.mc);
    const size_t g0 = gi * p.rows_per_task, g1 = std::min(w.block_rows(), g0 + p.rows_per_task);
    for (size_t g = g0; g < g1; ++g) {
      const size_t col = g * nb, nr = std::min(nb, n - col);
      const size_t b0 = w.row_ptr[g], nnz = w.row_ptr[g + 1] - b0;
      for (size_t i = row0; i < row1;) {
        size_t tile;
        const QSpGemmUkernelFn uk = sparse_tile_kernel(table, row1 - i, &tile);
        uk(tile, nr, nnz, w.kidx + b0, kp - kSpQKr, values + b0 * block_bytes, rows.a + i * rows.stride, rows.stride, ep, col,
           out + (i * call.out_stride + col) * out_elem, call.out_stride);
        i += tile;
      }
    }
  });
  return xp;
}

}  // namespace edgeopt

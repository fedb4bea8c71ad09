#include "ops/float_linear.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

constexpr size_t kL2ABytes = 128 * 1024;  // activation rows kept in L2 while weight blocks stream past
constexpr size_t kL1TBytes = 16 * 1024;   // low-rank intermediate per row block: half of the 32 KB L1d
constexpr size_t kOneRowCols = 64;        // tile width of the 1-row kernel
constexpr size_t kCachedFactorBytes = 1 << 20;  // low-rank factors this small are re-read from cache
// Waking a pool thread costs microseconds, and far more when the other core is busy (a woken worker that
// claims a task and is then descheduled holds up the call): below this many MACs per thread a layer
// runs on fewer threads. 192x768 at batch 1 (147K MACs) took 6 us on one thread and 50 us on two with
// the other core loaded.
constexpr size_t kMinMacsPerThread = size_t(1) << 18;
constexpr size_t kMinMacsPerTask = size_t(1) << 15;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

template <class W>
void tile_loop(const FloatPackedView& w, const float* x, size_t x_stride, size_t rows, size_t col0, size_t col1,
               float lo, float hi, float* out, size_t out_stride) {
  const FloatGemmKernels& kern = float_gemm_kernels();
  const W* blocks = static_cast<const W*>(w.blocks);
  const size_t k = w.k(), bs = w.block_elems();
  col1 = std::min(col1, w.n());
  if (rows == 1) {
    const auto uk = [&] {
      if constexpr (std::is_same_v<W, uint16_t>) return kern.f16w_1x64; else return kern.f32_1x64;
    }();
    for (size_t col = col0; col < col1; col += kOneRowCols) {
      const size_t nr = std::min(kOneRowCols, col1 - col);
      uk(1, nr, k, x, x_stride, blocks + (col / kFGemmNr) * bs, bs, w.bias + col, lo, hi, out + col, out_stride);
    }
    return;
  }
  const auto uk = [&] {
    if constexpr (std::is_same_v<W, uint16_t>) return kern.f16w_4x16; else return kern.f32_4x16;
  }();
  for (size_t col = col0; col < col1; col += kFGemmNr) {
    const size_t nr = std::min<size_t>(kFGemmNr, col1 - col);
    const W* wb = blocks + (col / kFGemmNr) * bs;
    for (size_t i = 0; i < rows; i += 4) {
      const size_t mr = std::min<size_t>(4, rows - i);
      uk(mr, nr, k, x + i * x_stride, x_stride, wb, bs, w.bias + col, lo, hi, out + i * out_stride + col, out_stride);
    }
  }
}

float* scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

}  // namespace

void float_gemm_tile(const FloatPackedView& w, const float* x, size_t x_stride, size_t rows, size_t col0, size_t col1,
                     float out_min, float out_max, float* out, size_t out_stride) {
  if (w.type == FloatWeightType::kF16)
    tile_loop<uint16_t>(w, x, x_stride, rows, col0, col1, out_min, out_max, out, out_stride);
  else
    tile_loop<float>(w, x, x_stride, rows, col0, col1, out_min, out_max, out, out_stride);
}

void float_linear(const FloatPackedView& w, const FloatLinearCall& call) {
  const size_t m = call.m, n = w.n(), k = w.k();
  if (m == 0) return;
  const size_t macs = m * n * k;
  const int threads = int(std::clamp<size_t>(macs / kMinMacsPerThread, 1, size_t(std::max(1, call.num_threads))));
  // Enough tasks that a thread stalled by another process leaves little work stranded, none tiny.
  const size_t target_tasks = std::clamp<size_t>(macs / kMinMacsPerTask, 1, size_t(threads) * 8);
  if (m == 1) {
    const size_t chunks = ceil_div(n, kOneRowCols);
    const size_t per = ceil_div(chunks, std::min(chunks, target_tasks));
    parallel_for(ceil_div(chunks, per), threads, [&](size_t t) {
      float_gemm_tile(w, call.x, call.x_stride, 1, t * per * kOneRowCols, (t + 1) * per * kOneRowCols, call.out_min,
                      call.out_max, call.out, call.out_stride);
    });
    return;
  }
  const size_t mc = std::clamp<size_t>(kL2ABytes / (k * 4) / 4 * 4, 4, 256);
  const size_t m_chunks = ceil_div(m, mc);
  const size_t n_blocks = ceil_div(n, kFGemmNr);
  const size_t n_groups = std::min(n_blocks, std::max<size_t>(1, ceil_div(target_tasks, m_chunks)));
  const size_t per = ceil_div(n_blocks, n_groups);
  const size_t tasks = m_chunks * ceil_div(n_blocks, per);
  parallel_for(tasks, threads, [&](size_t t) {
    const size_t mi = t % m_chunks, gi = t / m_chunks;
    const size_t row0 = mi * mc, rows = std::min(m, row0 + mc) - row0;
    float_gemm_tile(w, call.x + row0 * call.x_stride, call.x_stride, rows, gi * per * kFGemmNr,
                    (gi + 1) * per * kFGemmNr, call.out_min, call.out_max, call.out + row0 * call.out_stride,
                    call.out_stride);
  });
}

void low_rank_linear(const FloatPackedView& v, const FloatPackedView& u, const FloatLinearCall& call) {
  const size_t m = call.m, r = v.n(), n = u.n();
  if (u.k() != r) throw std::invalid_argument("edgeopt: low-rank factors do not chain (V has rank rows, U columns differ)");
  if (m == 0) return;
  const size_t macs = m * r * (v.k() + n);
  const int threads = int(std::clamp<size_t>(macs / kMinMacsPerThread, 1, size_t(std::max(1, call.num_threads))));
  const size_t mc = std::clamp<size_t>(kL1TBytes / (r * 4) / 4 * 4, 4, 64);
  const size_t m_chunks = ceil_div(m, mc);
  // Each row block re-reads both factors; the phases re-read each factor once per float_linear row chunk
  // and write + read the intermediate. Row blocks win only where that costs fewer bytes or the factors
  // stay cached (measured: M=64, K=N=4096, r=1024 took 58 ms in 4-row blocks vs 30 ms in two phases).
  const size_t v_bytes = v.n_padded() * v.k() * v.elem_bytes(), u_bytes = u.n_padded() * u.k() * u.elem_bytes();
  const size_t phase_bytes = ceil_div(m, std::clamp<size_t>(kL2ABytes / (v.k() * 4) / 4 * 4, 4, 256)) * v_bytes +
                             ceil_div(m, std::clamp<size_t>(kL2ABytes / (r * 4) / 4 * 4, 4, 256)) * u_bytes +
                             2 * m * r * 4;
  const bool cached = v_bytes + u_bytes <= kCachedFactorBytes;
  const bool blocks_cheaper = cached || m_chunks * (v_bytes + u_bytes) <= phase_bytes;
  if (threads == 1 || (m_chunks >= size_t(threads) * 2 && blocks_cheaper)) {
    // Fused: each task takes a block of rows through both stages; its intermediate never leaves L1/L2.
    parallel_for(m_chunks, threads, [&](size_t t) {
      const size_t row0 = t * mc, rows = std::min(m, row0 + mc) - row0;
      float* tmp = scratch(rows * r);
      float_gemm_tile(v, call.x + row0 * call.x_stride, call.x_stride, rows, 0, r, -__builtin_inff(),
                      __builtin_inff(), tmp, r);
      float_gemm_tile(u, tmp, r, rows, 0, n, call.out_min, call.out_max, call.out + row0 * call.out_stride,
                      call.out_stride);
    });
    return;
  }
  // Few rows: two phases split over columns, one native call, intermediate in the caller's scratch
  // (m * r floats, small by construction here).
  float* tmp = scratch(m * r);
  FloatLinearCall first = call;
  first.out_min = -__builtin_inff();
  first.out_max = __builtin_inff();
  first.out = tmp;
  first.out_stride = r;
  float_linear(v, first);
  FloatLinearCall second = call;
  second.x = tmp;
  second.x_stride = r;
  float_linear(u, second);
}

}  // namespace edgeopt

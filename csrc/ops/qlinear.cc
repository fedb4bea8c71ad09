#include "ops/qlinear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

// Activation rows kept in L2 while every weight block of a task streams past them (the target's L2 is
// 256 KB; half of it for A leaves room for the weight block being read).
constexpr size_t kL2ABytes = 128 * 1024;
// Below this many input values, quantizing on one thread beats waking the others.
constexpr size_t kParallelQuantizeMin = 1 << 15;
// Multiply-adds each thread must get before another thread is worth waking: ~20-40 us of kernel time.
// Small layers (a 16-token transformer projection is ~0.6M) run on the calling thread alone; besides the
// wake-up cost this avoids waiting on a helper thread that another process (or torch's spinning OpenMP
// threads) has pushed off its core, which on a busy 2-core machine cost such layers 10-100x.
constexpr double kMinMacsPerThread = 2.0e6;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// Per-thread scratch for the quantized activations; grows, never shrinks, never reallocated per call.
uint8_t* scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

void check_finite(bool finite) {
  if (!finite) throw std::domain_error("edgeopt: input contains NaN or Inf; quantized layers require finite inputs");
}

// Row chunks for the activation passes, so large inputs use every thread.
size_t row_chunks(size_t m, size_t k, int threads) {
  if (threads <= 1 || m * k < kParallelQuantizeMin) return 1;
  return std::min(m, size_t(threads) * 4);
}

U8QuantParams scan_dynamic_params(const QGemmKernels& kern, const QLinearCall& call, size_t k, int threads) {
  const size_t chunks = row_chunks(call.m, k, threads);
  std::vector<float> lo(chunks), hi(chunks);
  std::vector<char> finite(chunks);
  parallel_for(chunks, threads, [&](size_t c) {
    const size_t r0 = call.m * c / chunks, r1 = call.m * (c + 1) / chunks;
    finite[c] = kern.minmax(r1 - r0, k, call.x_f32 + r0 * call.x_stride, call.x_stride, &lo[c], &hi[c]);
  });
  check_finite(std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; }));
  return choose_u8_params(*std::min_element(lo.begin(), lo.end()), *std::max_element(hi.begin(), hi.end()));
}

void quantize_rows(const QGemmKernels& kern, const QLinearCall& call, size_t k, U8QuantParams p, uint8_t* a,
                   size_t a_stride, int threads) {
  const size_t chunks = row_chunks(call.m, k, threads);
  std::vector<char> finite(chunks);
  const float inv = 1.0f / p.scale;
  parallel_for(chunks, threads, [&](size_t c) {
    const size_t r0 = call.m * c / chunks, r1 = call.m * (c + 1) / chunks;
    finite[c] = kern.quantize(r1 - r0, k, call.x_f32 + r0 * call.x_stride, call.x_stride, inv, p.zero_point,
                              a + r0 * a_stride, a_stride);
  });
  check_finite(std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; }));
}

}  // namespace

U8QuantParams choose_u8_params(float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  // Divide before subtracting: hi - lo overflows for ranges near FLT_MAX.
  const float scale = hi / 255.0f - lo / 255.0f;
  // All zeros, or a range so small its step is not a normal float: every value quantizes to the zero
  // point, and any normal scale represents that.
  if (!(scale >= std::numeric_limits<float>::min()) || !std::isfinite(scale)) return {1.0f, 0};
  const float zp = std::nearbyint(-lo / scale);
  return {scale, int32_t(std::clamp(zp, 0.0f, 255.0f))};
}

U8Rows prepare_u8_rows(const QLinearCall& call, size_t k, size_t kp, int threads) {
  // Padding meets zero weights, so its value is irrelevant, but the kernels read whole groups of 4 and
  // must not run past the buffer.
  const QGemmKernels& kern = qgemm_kernels();
  const size_t m = call.m;
  const uint8_t* a;
  size_t a_stride;
  U8QuantParams xp = call.x_params;
  if (call.x_u8 != nullptr) {
    if (k % kQGemmKr == 0) {
      a = call.x_u8;
      a_stride = call.x_stride;
    } else {
      uint8_t* buf = scratch(m * kp);
      for (size_t i = 0; i < m; ++i) std::memcpy(buf + i * kp, call.x_u8 + i * call.x_stride, k);
      a = buf;
      a_stride = kp;
    }
  } else {
    if (call.dynamic) xp = scan_dynamic_params(kern, call, k, threads);
    uint8_t* buf = scratch(m * kp);
    quantize_rows(kern, call, k, xp, buf, kp, threads);
    a = buf;
    a_stride = kp;
  }
  return {a, a_stride, xp};
}

U8QuantParams qlinear(const Qs8PackedView& w, const QLinearCall& call) {
  const QGemmKernels& kern = qgemm_kernels();
  const size_t m = call.m, n = w.n(), k = w.k(), kp = w.k_padded();
  const double macs = double(m) * double(n) * double(k);
  const int threads = std::max(1, int(std::min<double>(call.num_threads, macs / kMinMacsPerThread)));
  if (m == 0) return call.x_params;

  // 1. Activations as u8 rows of k_padded bytes.
  const U8Rows rows = prepare_u8_rows(call, k, kp, threads);
  const uint8_t* a = rows.a;
  const size_t a_stride = rows.stride;
  const U8QuantParams xp = rows.params;

  // 2. GEMM with the fused epilogue.
  QGemmEpilogue ep;
  ep.w_colsum = w.colsum;
  ep.w_scale = w.scale;
  ep.bias = w.bias;
  ep.a_scale = xp.scale;
  ep.a_zero_point = xp.zero_point;
  ep.out_min = call.out_min;
  ep.out_max = call.out_max;
  ep.out_kind = call.out_kind;
  ep.out_inv_scale = 1.0f / call.out_params.scale;
  ep.out_zero_point = call.out_params.zero_point;

  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  const size_t n_blocks = ceil_div(n, kQGemmNr);
  const size_t mr_main = std::min<size_t>(m, kQGemmMr);
  const QGemmUkernelFn ukernel = kern.gemm_by_rows[mr_main];
  // Rows per task: as many as keep their activations in L2 while weight blocks stream by.
  const size_t mc = std::clamp<size_t>(kL2ABytes / kp / kQGemmMr * kQGemmMr, kQGemmMr, 256);
  const size_t m_chunks = ceil_div(m, mc);
  // Enough tasks that a thread stalled by another process leaves little work stranded (the other
  // threads take it), few enough that claiming them costs nothing.
  const size_t target_tasks = size_t(threads) * 8;
  const size_t n_groups = std::min(n_blocks, std::max<size_t>(1, ceil_div(target_tasks, m_chunks)));
  const size_t blocks_per_group = ceil_div(n_blocks, n_groups);
  const size_t tasks = m_chunks * ceil_div(n_blocks, blocks_per_group);
  char* out = static_cast<char*>(call.out);

  parallel_for(tasks, threads, [&](size_t t) {
    const size_t mi = t % m_chunks, gi = t / m_chunks;
    const size_t row0 = mi * mc, row1 = std::min(m, row0 + mc);
    const size_t b0 = gi * blocks_per_group, b1 = std::min(n_blocks, b0 + blocks_per_group);
    for (size_t b = b0; b < b1; ++b) {
      const size_t col = b * kQGemmNr, nr = std::min<size_t>(kQGemmNr, n - col);
      const int8_t* wb = w.blocks + b * w.block_bytes();
      for (size_t i = row0; i < row1; i += kQGemmMr) {
        const size_t mr = std::min<size_t>(kQGemmMr, row1 - i);
        const QGemmUkernelFn uk = mr == mr_main ? ukernel : kern.gemm_by_rows[mr];
        uk(mr, nr, kp, a + i * a_stride, a_stride, wb, ep, col, out + (i * call.out_stride + col) * out_elem,
           call.out_stride);
      }
    }
  });
  return xp;
}

}  // namespace edgeopt

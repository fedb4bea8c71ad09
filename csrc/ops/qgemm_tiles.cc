#include "ops/qgemm_tiles.h"

#include <cstring>

#include <cmath>
#include <limits>
#include <stdexcept>

namespace edgeopt {
namespace {

// Activation rows kept in L2 while every weight block of a task streams past them (the target's L2 is
// 256 KB; half of it for A leaves room for the weight block being read).
constexpr size_t kL2ABytes = 128 * 1024;
// The weights one micro-kernel call walks for a row tile, kept in L2 for the next tile (the rest of L2).
constexpr size_t kL2WeightBytes = 96 * 1024;
// Tasks per thread a layer is split into when it is big enough (dynamic claiming then leaves a thread idle
// for at most ~1/16 of the layer), and the fewest MACs worth a task (~1-2 us of kernel time).
constexpr size_t kTasksPerThread = 8;
constexpr double kMinTaskMacs = 64.0 * 1024;
// Below this many input values, quantizing on one thread beats waking the others.
constexpr size_t kParallelQuantizeMin = 1 << 15;

void check_finite(const std::vector<char>& finite) {
  for (char f : finite)
    if (!f) throw std::domain_error("edgeopt: input contains NaN or Inf; quantized layers require finite inputs");
}

// Row chunks for the activation passes, so large inputs use every thread.
size_t row_chunks(size_t m, size_t k, int threads) {
  if (threads <= 1 || m * k < kParallelQuantizeMin) return 1;
  return std::min(m, size_t(threads) * 4);
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

U8QuantParams quantize_activations(const float* x, size_t m, size_t k, size_t x_stride, bool dynamic,
                                   U8QuantParams params, uint8_t* out, size_t out_stride, int threads) {
  const QGemmKernels& kern = qgemm_kernels();
  const size_t chunks = row_chunks(m, k, threads);
  std::vector<char> finite(chunks);
  if (dynamic) {
    std::vector<float> lo(chunks), hi(chunks);
    parallel_for(chunks, threads, [&](size_t c) {
      const size_t r0 = m * c / chunks, r1 = m * (c + 1) / chunks;
      finite[c] = kern.minmax(r1 - r0, k, x + r0 * x_stride, x_stride, &lo[c], &hi[c]);
    });
    check_finite(finite);
    params = choose_u8_params(*std::min_element(lo.begin(), lo.end()), *std::max_element(hi.begin(), hi.end()));
  }
  const float inv = 1.0f / params.scale;
  parallel_for(chunks, threads, [&](size_t c) {
    const size_t r0 = m * c / chunks, r1 = m * (c + 1) / chunks;
    finite[c] = kern.quantize(r1 - r0, k, x + r0 * x_stride, x_stride, inv, params.zero_point, out + r0 * out_stride,
                              out_stride);
  });
  check_finite(finite);
  return params;
}

int threads_for_macs(double macs, int requested, double min_macs_per_thread) {
  return std::max(1, int(std::min<double>(requested, macs / min_macs_per_thread)));
}

uint8_t* thread_scratch(ScratchSlot slot, size_t bytes) {
  thread_local std::vector<uint8_t> bufs[3];
  std::vector<uint8_t>& buf = bufs[int(slot)];
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

QGemmEpilogue make_qgemm_epilogue(const int32_t* w_colsum, const float* w_scale, const float* bias, U8QuantParams x,
                                  float out_min, float out_max, OutKind out_kind, U8QuantParams out_params,
                                  const float* residual, const void* out_base) {
  QGemmEpilogue ep;
  ep.w_colsum = w_colsum;
  ep.w_scale = w_scale;
  ep.bias = bias;
  ep.a_scale = x.scale;
  ep.a_zero_point = x.zero_point;
  ep.out_min = out_min;
  ep.out_max = out_max;
  ep.out_kind = out_kind;
  ep.out_inv_scale = 1.0f / out_params.scale;
  ep.out_zero_point = out_params.zero_point;
  ep.residual = residual;
  ep.out_base = static_cast<const char*>(out_base);
  return ep;
}

size_t qgemm_rows_per_tile(size_t k_padded) {
  return std::clamp<size_t>(kL2ABytes / k_padded / kQGemmMr * kQGemmMr, kQGemmMr, 256);
}

size_t qgemm_blocks_per_call(size_t k_padded) {
  return std::max<size_t>(1, kL2WeightBytes / (k_padded * kQGemmNr));
}

QGemmTaskPlan plan_qgemm_tasks(size_t m, size_t n_blocks, size_t k_padded, int threads, bool rows_cost) {
  const size_t tiles = (m + kQGemmMr - 1) / kQGemmMr;
  size_t m_chunks = std::min(tiles, (m + qgemm_rows_per_tile(k_padded) - 1) / qgemm_rows_per_tile(k_padded));
  size_t n_groups = 1;
  if (threads > 1) {
    const double macs = double(m) * double(n_blocks * kQGemmNr) * double(k_padded);
    const size_t target = std::max<size_t>(1, std::min<size_t>(size_t(threads) * kTasksPerThread,
                                                               size_t(macs / kMinTaskMacs)));
    if (m_chunks < target && rows_cost) m_chunks = std::min(tiles, std::max(m_chunks, target));
    if (m_chunks < target) n_groups = std::min(n_blocks, (target + m_chunks - 1) / m_chunks);
    if (m_chunks * n_groups < target) m_chunks = std::min(tiles, (target + n_groups - 1) / n_groups);
  }
  QGemmTaskPlan plan;
  plan.rows_per_chunk = (tiles + m_chunks - 1) / m_chunks * kQGemmMr;
  plan.m_chunks = (m + plan.rows_per_chunk - 1) / plan.rows_per_chunk;
  plan.blocks_per_group = (n_blocks + n_groups - 1) / n_groups;
  plan.n_groups = (n_blocks + plan.blocks_per_group - 1) / plan.blocks_per_group;
  return plan;
}

ARows prepare_u8_input(const float* x_f32, const uint8_t* x_u8, size_t m, size_t k, size_t kp, size_t x_stride,
                       bool dynamic, U8QuantParams* params, int threads) {
  // Padding meets zero weights, so its value is irrelevant, but the kernels read whole groups of 4 and
  // must not run past the buffer.
  if (x_u8 != nullptr && k % kQGemmKr == 0) return {x_u8, x_stride};
  uint8_t* buf = thread_scratch(ScratchSlot::kInput, m * kp);
  if (x_u8 != nullptr) {
    for (size_t i = 0; i < m; ++i) std::memcpy(buf + i * kp, x_u8 + i * x_stride, k);
  } else {
    *params = quantize_activations(x_f32, m, k, x_stride, dynamic, *params, buf, kp, threads);
  }
  return {buf, kp};
}

}  // namespace edgeopt

#include "ops/gavgpool.h"

#include <algorithm>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

// A helper thread pays off from about this many input bytes (~10 us of reading); the pools in front of
// the models' heads (25-100 KB) run on the calling thread.
constexpr size_t kMinBytesPerThread = 256 * 1024;
constexpr size_t kChannelBlock = 32;

}  // namespace

void global_avgpool_nhwc(const GlobalAvgPoolCall& call) {
  const PoolKernels& kern = pool_kernels();
  const size_t c = call.channels;
  if (call.batch == 0 || c == 0 || call.pixels == 0) return;
  GAvgPoolParams p;
  p.zero_point_sum = int32_t(call.pixels) * call.x_params.zero_point;
  p.out_kind = call.out_kind;
  p.out_zero_point = call.out_kind == OutKind::kU8 ? call.out_params.zero_point : 0;
  const double divisor = double(call.pixels) * (call.out_kind == OutKind::kU8 ? double(call.out_params.scale) : 1.0);
  p.scale = float(double(call.x_params.scale) / divisor);
  const size_t elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  const size_t bytes = call.batch * call.pixels * c * (call.x_u8 ? 1 : 4);
  const int threads = std::max(1, int(std::min<size_t>(size_t(call.num_threads), bytes / kMinBytesPerThread)));
  const size_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  const size_t groups = std::min(blocks, size_t(threads) * 4);
  parallel_for(call.batch * groups, threads, [&](size_t t) {
    const size_t n = t / groups, g = t % groups;
    const size_t c0 = blocks * g / groups * kChannelBlock, c1 = std::min(c, blocks * (g + 1) / groups * kChannelBlock);
    const size_t first = n * call.pixels * c + c0;
    if (call.x_u8) {
      kern.u8_gavg(call.pixels, c1 - c0, c, static_cast<const uint8_t*>(call.x) + first, p,
                   static_cast<char*>(call.out) + (n * c + c0) * elem);
    } else {
      kern.f32_gavg(call.pixels, c1 - c0, c, static_cast<const float*>(call.x) + first,
                    static_cast<float*>(call.out) + n * c + c0);
    }
  });
}

}  // namespace edgeopt

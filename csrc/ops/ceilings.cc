#include "ops/ceilings.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "config/cpu.h"
#include "ops/parallel.h"
#include "ukernels/ceilings.h"

namespace edgeopt {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs `tasks` equal tasks on the pool; returns the wall time. Many small tasks so every thread gets
// work even if one wakes late, as in the real kernels.
template <class F>
double timed(size_t tasks, int threads, F&& task) {
  const double t0 = now();
  parallel_for(tasks, threads, task);
  return now() - t0;
}

}  // namespace

CeilingResult measure_ceiling(const std::string& kind, double target_seconds, int num_threads) {
  if (!cpu_info().avx2) throw std::runtime_error("edgeopt: the ceiling benchmarks need AVX2");
  const size_t tasks = size_t(num_threads) * 16;
  volatile double sink = 0;
  if (kind == "f32_fma" || kind == "s8_madd") {
    const bool fma = kind == "f32_fma";
    const double per_iter = fma ? double(kCeilingChains) * 16 : double(kCeilingS8MacsPerIteration);
    size_t iters = 1 << 14;
    for (;;) {  // grow the work until the run is long enough to time
      const double t = timed(tasks, num_threads, [&](size_t) {
        sink = sink + (fma ? double(eo_ceiling_f32_fma__avx2(iters)) : double(eo_ceiling_s8_madd__avx2(iters)));
      });
      if (t >= target_seconds || iters > (size_t(1) << 34)) return {per_iter * double(iters) * double(tasks), t};
      iters *= 2;
    }
  }
  if (kind == "read") {
    const size_t chunk = size_t(16) << 20;  // 16 MB per task; tasks x chunk far exceeds any L3 here
    const size_t bytes = chunk * tasks;
    std::unique_ptr<uint8_t, decltype(&std::free)> buf(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)), &std::free);
    if (!buf) throw std::runtime_error("edgeopt: cannot allocate the bandwidth buffer");
    parallel_for(tasks, num_threads, [&](size_t t) { std::memset(buf.get() + t * chunk, int(t), chunk); });
    size_t passes = 1;
    for (;;) {
      const double t = timed(tasks * passes, num_threads, [&](size_t i) {
        sink = sink + double(eo_ceiling_read__avx2(buf.get() + (i % tasks) * chunk, chunk));
      });
      if (t >= target_seconds || passes > 64) return {double(bytes) * double(passes), t};
      passes *= 2;
    }
  }
  throw std::invalid_argument("edgeopt: unknown ceiling '" + kind + "' (f32_fma, s8_madd, read)");
}

}  // namespace edgeopt

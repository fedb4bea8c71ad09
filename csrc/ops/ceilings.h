// Runs the ceiling chains on the thread pool and reports throughput.
#pragma once

#include <string>

namespace edgeopt {

struct CeilingResult {
  double units;    // flops, MACs or bytes done
  double seconds;  // wall time
};

// kind: "f32_fma" (flops), "s8_madd" (MACs), "read" (bytes, from a buffer far larger than the caches).
// Throws std::runtime_error without AVX2, std::invalid_argument on an unknown kind.
CeilingResult measure_ceiling(const std::string& kind, double target_seconds, int num_threads);

}  // namespace edgeopt

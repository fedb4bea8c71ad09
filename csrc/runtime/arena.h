// Offsets of a plan's intermediate activations in one preallocated buffer.
//
// Two activations may share bytes when their lifetimes (first to last node that touches them) do not
// overlap. Greedy by size, as TFLite's arena planner: the largest buffers are placed first, each at the
// lowest offset that does not collide with an already placed buffer whose lifetime overlaps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace edgeopt::runtime {

inline constexpr size_t kArenaAlignment = 64;  // a cache line: no two buffers share one, AVX loads stay aligned

struct ArenaRequest {
  size_t bytes = 0;
  size_t first_use = 0;  // node index
  size_t last_use = 0;   // node index, inclusive
};

struct ArenaLayout {
  std::vector<size_t> offsets;  // one per request, multiples of kArenaAlignment
  size_t total_bytes = 0;
};

ArenaLayout plan_arena(const std::vector<ArenaRequest>& requests);

// The buffer itself: aligned, grown only when a layout needs more, never shrunk.
class Arena {
 public:
  uint8_t* reserve(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t capacity_ = 0;
};

}  // namespace edgeopt::runtime

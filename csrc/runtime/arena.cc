#include "runtime/arena.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <numeric>

namespace edgeopt::runtime {
namespace {

size_t align_up(size_t n) { return (n + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment; }

bool lifetimes_overlap(const ArenaRequest& a, const ArenaRequest& b) {
  return a.first_use <= b.last_use && b.first_use <= a.last_use;
}

}  // namespace

ArenaLayout plan_arena(const std::vector<ArenaRequest>& requests) {
  ArenaLayout layout;
  layout.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t(0));
  // Largest first; ties by first use, so the result does not depend on the sort's stability.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (requests[a].bytes != requests[b].bytes) return requests[a].bytes > requests[b].bytes;
    if (requests[a].first_use != requests[b].first_use) return requests[a].first_use < requests[b].first_use;
    return a < b;
  });
  struct Placed {
    size_t offset, end, request;
  };
  std::vector<Placed> placed;  // sorted by offset
  for (size_t r : order) {
    const size_t bytes = align_up(std::max<size_t>(requests[r].bytes, 1));
    size_t offset = 0;
    for (const Placed& p : placed) {
      if (!lifetimes_overlap(requests[r], requests[p.request])) continue;
      if (offset + bytes <= p.offset) break;  // fits in the gap before p
      offset = std::max(offset, p.end);
    }
    layout.offsets[r] = offset;
    layout.total_bytes = std::max(layout.total_bytes, offset + bytes);
    const Placed item{offset, offset + bytes, r};
    placed.insert(std::upper_bound(placed.begin(), placed.end(), item,
                                   [](const Placed& a, const Placed& b) { return a.offset < b.offset; }),
                  item);
  }
  return layout;
}

void Arena::Free::operator()(uint8_t* p) const { std::free(p); }

uint8_t* Arena::reserve(size_t bytes) {
  if (bytes > capacity_) {
    const size_t rounded = align_up(bytes);
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(kArenaAlignment, rounded));
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    capacity_ = rounded;
  }
  return data_.get();
}

}  // namespace edgeopt::runtime

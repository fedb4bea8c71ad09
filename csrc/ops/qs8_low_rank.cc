#include "ops/qs8_low_rank.h"

#include <stdexcept>
#include <vector>

namespace edgeopt {

void qs8_low_rank_linear(const Qs8PackedView& v, const Qs8PackedView& u, const Qs8LowRankCall& call) {
  const size_t r = v.n();
  if (u.k() != r) throw std::invalid_argument("edgeopt: low-rank factors do not chain (V has rank rows, U columns differ)");
  if (call.m == 0) return;
  thread_local std::vector<float> tmp;
  if (tmp.size() < call.m * r) tmp.resize(call.m * r);
  QLinearCall first;
  first.x_f32 = call.x;
  first.m = call.m;
  first.x_stride = call.x_stride;
  first.dynamic = true;
  first.out_kind = OutKind::kF32;
  first.out = tmp.data();
  first.out_stride = r;
  first.num_threads = call.num_threads;
  qlinear(v, first);
  QLinearCall second = first;
  second.x_f32 = tmp.data();
  second.x_stride = r;
  second.out_min = call.out_min;
  second.out_max = call.out_max;
  second.out = call.out;
  second.out_stride = call.out_stride;
  qlinear(u, second);
}

}  // namespace edgeopt

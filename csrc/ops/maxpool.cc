#include "ops/maxpool.h"

#include <algorithm>
#include <vector>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

using Index = std::ptrdiff_t;

// A helper thread pays off from about this many input bytes read (~10 us of streaming).
constexpr size_t kMinBytesPerThread = 256 * 1024;

// The input positions of output position o's window along one axis, as a count and the first one.
struct Span {
  size_t first, count;
};

Span window(size_t o, size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation) {
  size_t first = 0, count = 0;
  for (size_t k = 0; k < kernel; ++k) {
    const Index i = Index(o * stride + k * dilation) - Index(pad);
    if (i < 0 || i >= Index(in)) continue;
    if (count == 0) first = size_t(i);
    ++count;
  }
  return {first, count};
}

}  // namespace

size_t first_empty_window(size_t in, size_t out, size_t kernel, size_t stride, size_t pad, size_t dilation) {
  for (size_t o = 0; o < out; ++o)
    if (window(o, in, kernel, stride, pad, dilation).count == 0) return o;
  return out;
}

void maxpool2d_nhwc(const MaxPoolCall& call) {
  const PoolKernels& kern = pool_kernels();
  const size_t elem = call.u8 ? 1 : 4, c = call.channels;
  const size_t rows = call.batch * call.out_h;
  if (rows == 0 || call.out_w == 0 || c == 0) return;
  const size_t bytes = call.batch * call.in_h * call.in_w * c * elem;
  const int threads = std::max(1, int(std::min<size_t>(size_t(call.num_threads), bytes / kMinBytesPerThread)));
  const size_t tasks = std::min(rows, size_t(threads) * 4);
  // Output columns whose whole window lies inside the row: one kernel call walks them with a fixed step.
  const Index last = Index(call.in_w) - 1 + Index(call.pad_w) - Index((call.kernel_w - 1) * call.dilation_w);
  const size_t inner_end = last < 0 ? 0 : std::min(call.out_w, size_t(last) / call.stride_w + 1);
  const size_t inner_first = std::min(inner_end, (call.pad_w + call.stride_w - 1) / call.stride_w);
  const char* x = static_cast<const char*>(call.x);
  char* out = static_cast<char*>(call.out);
  const size_t row_bytes = call.in_w * c * elem;
  parallel_for(tasks, threads, [&](size_t t) {
    std::vector<const char*> row_ptrs(call.kernel_h), shifted(call.kernel_h);
    for (size_t r = rows * t / tasks; r < rows * (t + 1) / tasks; ++r) {
      const size_t n = r / call.out_h, oy = r % call.out_h;
      const Span sy = window(oy, call.in_h, call.kernel_h, call.stride_h, call.pad_h, call.dilation_h);
      for (size_t ky = 0; ky < sy.count; ++ky)
        row_ptrs[ky] = x + (n * call.in_h + sy.first + ky * call.dilation_h) * row_bytes;
      char* out_row = out + r * call.out_w * c * elem;
      // pixels output columns from ox on, whose windows start at input column ix and span kernel_w taps
      auto pool = [&](size_t ox, size_t pixels, size_t ix, size_t kernel_w) {
        for (size_t ky = 0; ky < sy.count; ++ky) shifted[ky] = row_ptrs[ky] + ix * c * elem;
        char* o = out_row + ox * c * elem;
        if (call.u8) {
          kern.u8_max(pixels, c, sy.count, reinterpret_cast<const uint8_t* const*>(shifted.data()), kernel_w,
                      call.dilation_w * c, call.stride_w * c, reinterpret_cast<uint8_t*>(o));
        } else {
          kern.f32_max(pixels, c, sy.count, reinterpret_cast<const float* const*>(shifted.data()), kernel_w,
                       call.dilation_w * c, call.stride_w * c, reinterpret_cast<float*>(o));
        }
      };
      for (size_t ox = 0; ox < call.out_w; ++ox) {
        if (ox == inner_first && inner_first < inner_end) {
          pool(ox, inner_end - inner_first, ox * call.stride_w - call.pad_w, call.kernel_w);
          ox = inner_end - 1;
          continue;
        }
        const Span sx = window(ox, call.in_w, call.kernel_w, call.stride_w, call.pad_w, call.dilation_w);
        pool(ox, 1, sx.first, sx.count);
      }
    }
  });
}

}  // namespace edgeopt

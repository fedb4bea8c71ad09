#include "ops/qdwconv.h"

#include <vector>

namespace edgeopt {
namespace {

// The depthwise kernel does ~1/4 the work per byte of the GEMM, so a thread pays off at fewer MACs.
constexpr double kDwMinMacsPerThread = 0.5e6;
// Filter heights the depthwise path accepts (row pointers live on the stack).
constexpr size_t kMaxDwKernelH = 32;

using Index = std::ptrdiff_t;

}  // namespace

U8QuantParams qdwconv2d(const QdwPackedView& w, const QConvCall& call) {
  const QGemmKernels& kern = qgemm_kernels();
  const ConvGeometry& g = call.g;
  const size_t oh = g.out_h(), ow = g.out_w(), c = g.in_c, taps = g.kernel_h * g.kernel_w;
  const size_t tp = w.taps_padded();
  const size_t out_rows = g.batch * oh;
  const int threads =
      threads_for_macs(double(out_rows * ow) * double(c) * double(taps), call.num_threads, kDwMinMacsPerThread);
  U8QuantParams xp = call.x_params;
  if (out_rows * ow == 0) return xp;
  const uint8_t* x = input_u8(call, threads, &xp);
  const std::vector<uint8_t> zero_row(c, uint8_t(xp.zero_point));
  const QGemmEpilogue ep =
      make_qgemm_epilogue(w.wsum, w.scale, w.bias, xp, call.out_min, call.out_max, call.out_kind, call.out_params,
                          call.residual, call.out);
  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  const size_t tasks = std::min(out_rows, size_t(threads) * 8);
  parallel_for(tasks, threads, [&](size_t t) {
    const size_t r0 = out_rows * t / tasks, r1 = out_rows * (t + 1) / tasks;
    auto** ptrs = reinterpret_cast<const uint8_t**>(thread_scratch(ScratchSlot::kTile, ow * tp * sizeof(uint8_t*)));
    const uint8_t* row_of_ky[kMaxDwKernelH];
    for (size_t r = r0; r < r1; ++r) {
      const size_t n = r / oh, oy = r % oh;
      // Input rows of this output row, one per filter row (nullptr in the padding).
      for (size_t ky = 0; ky < g.kernel_h; ++ky) {
        const Index iy = Index(oy * g.stride_h + ky * g.dilation_h) - Index(g.pad_h);
        row_of_ky[ky] = iy >= 0 && iy < Index(g.in_h) ? x + (n * g.in_h + size_t(iy)) * g.in_w * c : nullptr;
      }
      const uint8_t** p = ptrs;
      for (size_t ox = 0; ox < ow; ++ox) {
        const Index ix0 = Index(ox * g.stride_w) - Index(g.pad_w);
        const bool interior_x = ix0 >= 0 && ix0 + Index((g.kernel_w - 1) * g.dilation_w) < Index(g.in_w);
        for (size_t ky = 0; ky < g.kernel_h; ++ky) {
          const uint8_t* row = row_of_ky[ky];
          for (size_t kx = 0; kx < g.kernel_w; ++kx) {
            const Index ix = ix0 + Index(kx * g.dilation_w);
            const bool inside = row != nullptr && (interior_x || (ix >= 0 && ix < Index(g.in_w)));
            *p++ = inside ? row + size_t(ix) * c : zero_row.data();
          }
        }
        for (size_t t2 = taps; t2 < tp; ++t2) *p++ = zero_row.data();  // the pad tap has zero weights
      }
      kern.dwconv(ow, c, tp, ptrs, w.blocks, ep, static_cast<char*>(call.out) + r * ow * c * out_elem, c);
    }
  });
  return xp;
}

}  // namespace edgeopt

#include "ops/qdwconv.h"

#include <algorithm>
#include <cstring>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

// The depthwise kernel does ~1/4 the work per byte of the GEMM, so a thread pays off at fewer MACs.
constexpr double kDwMinMacsPerThread = 0.5e6;
// Filter heights the depthwise path accepts (row pointers live on the stack).
constexpr size_t kMaxDwKernelH = 32;

using Index = std::ptrdiff_t;

// Output columns [first, end) whose taps all lie inside the input row: the kernel walks them with a fixed
// pixel step; the columns outside get their own tap pointers, padding taps on the zero-point row.
struct ColumnRange {
  size_t first, end;
};

ColumnRange interior_columns(const ConvGeometry& g, size_t ow) {
  const Index last = Index(g.in_w) - 1 + Index(g.pad_w) - Index((g.kernel_w - 1) * g.dilation_w);
  const size_t end = last < 0 ? 0 : std::min(ow, size_t(last) / g.stride_w + 1);
  const size_t first = std::min(end, (g.pad_w + g.stride_w - 1) / g.stride_w);
  return {first, end};
}

// The per-call epilogue terms in the kernels' lane order (ukernels/qdwconv.h), written into `terms`
// (3 x c_padded values); the u8 clamp bounds with the activation clamp folded in (see the AVX2 kernel).
QDwEpilogue make_dw_epilogue(const QdwPackedView& w, const QGemmEpilogue& gemm, uint8_t* terms) {
  const size_t cp = w.header.n_padded;
  auto* acc_init = reinterpret_cast<int32_t*>(terms);
  auto* scale = reinterpret_cast<float*>(terms + 4 * cp);
  auto* bias = reinterpret_cast<float*>(terms + 8 * cp);
  for (size_t c = 0; c < cp; ++c) {  // padding channels have zero sums, scales and biases in the pack
    const size_t pos = c / kQDwChannelTile * kQDwChannelTile + qdw_lane_position(c % kQDwChannelTile);
    acc_init[pos] = -gemm.a_zero_point * w.wsum[c];
    scale[pos] = gemm.a_scale * w.scale[c];
    bias[pos] = w.bias[c];
  }
  const float inv = gemm.out_inv_scale, zp = float(gemm.out_zero_point);
  return QDwEpilogue{gemm, acc_init, scale, bias, std::max(gemm.out_min * inv, -zp),
                     std::min(gemm.out_max * inv, 255.0f - zp)};
}

}  // namespace

U8QuantParams qdwconv2d(const QdwPackedView& w, const QConvCall& call) {
  const QDwconvUkernelFn kernel = qgemm_kernels().dwconv;
  const ConvGeometry& g = call.g;
  const size_t oh = g.out_h(), ow = g.out_w(), c = g.in_c, taps = g.kernel_h * g.kernel_w;
  const size_t tp = w.taps_padded();
  const size_t out_rows = g.batch * oh;
  const int threads =
      threads_for_macs(double(out_rows * ow) * double(c) * double(taps), call.num_threads, kDwMinMacsPerThread);
  U8QuantParams xp = call.x_params;
  if (out_rows * ow == 0) return xp;
  const uint8_t* x = input_u8(call, threads, &xp);
  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;

  // One scratch block for the call, read by every task: the lane-order epilogue terms, then a row of
  // zero-point bytes as long as an input row (padding rows and taps read it).
  const size_t cp = w.header.n_padded, row_bytes = g.in_w * c;
  uint8_t* scratch = thread_scratch(ScratchSlot::kGathered, 12 * cp + row_bytes);
  const QDwEpilogue ep = make_dw_epilogue(
      w,
      make_qgemm_epilogue(w.wsum, w.scale, w.bias, xp, call.out_min, call.out_max, call.out_kind, call.out_params,
                          call.residual, call.out),
      scratch);
  uint8_t* const zero_row = scratch + 12 * cp;
  std::memset(zero_row, xp.zero_point, row_bytes);

  // Tasks: rows x channel groups (whole 32-channel blocks), enough of them for every thread to get an
  // equal share when the map has few rows (MobileNetV2's 7x7 stage: 7 rows, up to 30 blocks).
  const size_t blocks = (c + kQDwChannelTile - 1) / kQDwChannelTile;
  const size_t target = size_t(threads) * 4;
  const size_t groups = out_rows >= target ? 1 : std::min(blocks, (target + out_rows - 1) / out_rows);
  const size_t row_chunks = std::min(out_rows, std::max<size_t>(1, target / groups));
  const ColumnRange inner = interior_columns(g, ow);
  const size_t pixel_step = g.stride_w * c;
  parallel_for(row_chunks * groups, threads, [&](size_t task) {
    const size_t chunk = task / groups, group = task % groups;
    const size_t b0 = blocks * group / groups, b1 = blocks * (group + 1) / groups;
    const size_t c0 = b0 * kQDwChannelTile, nc = std::min(c, b1 * kQDwChannelTile) - c0;
    auto** tap_ptrs = reinterpret_cast<const uint8_t**>(thread_scratch(ScratchSlot::kTile, tp * sizeof(uint8_t*)));
    const uint8_t* row_of_ky[kMaxDwKernelH];
    for (size_t r = out_rows * chunk / row_chunks; r < out_rows * (chunk + 1) / row_chunks; ++r) {
      const size_t n = r / oh, oy = r % oh;
      for (size_t ky = 0; ky < g.kernel_h; ++ky) {
        const Index iy = Index(oy * g.stride_h + ky * g.dilation_h) - Index(g.pad_h);
        row_of_ky[ky] = iy >= 0 && iy < Index(g.in_h) ? x + (n * g.in_h + size_t(iy)) * row_bytes : zero_row;
      }
      char* out_row = static_cast<char*>(call.out) + r * ow * c * out_elem;
      // Tap pointers of output column ox; outside the row, a tap reads the zero-point row.
      auto point_taps = [&](size_t ox) {
        const Index ix0 = Index(ox * g.stride_w) - Index(g.pad_w);
        size_t t = 0;
        for (size_t ky = 0; ky < g.kernel_h; ++ky) {
          for (size_t kx = 0; kx < g.kernel_w; ++kx, ++t) {
            const Index ix = ix0 + Index(kx * g.dilation_w);
            tap_ptrs[t] = ix >= 0 && ix < Index(g.in_w) ? row_of_ky[ky] + size_t(ix) * c : zero_row;
          }
        }
        for (; t < tp; ++t) tap_ptrs[t] = tap_ptrs[0];  // the pair-padding tap has zero weights
      };
      for (size_t ox = 0; ox < ow; ++ox) {
        point_taps(ox);
        if (ox == inner.first && inner.first < inner.end) {  // the interior in one call
          kernel(inner.end - inner.first, c0, nc, tp, tap_ptrs, pixel_step, w.blocks, ep, out_row + ox * c * out_elem,
                 c);
          ox = inner.end - 1;
        } else {
          kernel(1, c0, nc, tp, tap_ptrs, pixel_step, w.blocks, ep, out_row + ox * c * out_elem, c);
        }
      }
    }
  });
  return xp;
}

}  // namespace edgeopt

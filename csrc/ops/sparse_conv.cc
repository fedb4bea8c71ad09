#include "ops/sparse_conv.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "config/dispatch.h"
#include "ops/parallel.h"

namespace edgeopt {
namespace {

using Index = std::ptrdiff_t;

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// One im2col row of output pixel (n, oy, ox) in (ky, kx, c) order; taps in the padding get `pad`,
// positions k..kp get 0.
template <class T>
void gather_row(const ConvGeometry& g, const T* x, size_t n, size_t oy, size_t ox, T pad, size_t kp, T* dst) {
  T* const start = dst;
  for (size_t ky = 0; ky < g.kernel_h; ++ky) {
    const Index iy = Index(oy * g.stride_h + ky * g.dilation_h) - Index(g.pad_h);
    for (size_t kx = 0; kx < g.kernel_w; ++kx) {
      const Index ix = Index(ox * g.stride_w + kx * g.dilation_w) - Index(g.pad_w);
      if (iy < 0 || iy >= Index(g.in_h) || ix < 0 || ix >= Index(g.in_w)) {
        std::fill(dst, dst + g.in_c, pad);
      } else {
        std::memcpy(dst, x + ((n * g.in_h + size_t(iy)) * g.in_w + size_t(ix)) * g.in_c, g.in_c * sizeof(T));
      }
      dst += g.in_c;
    }
  }
  std::fill(dst, start + kp, T(0));
}

template <class T, class Kernel>
void run(const SparsePackedView& w, const ConvGeometry& g, const T* x, T pad, bool direct_ok, int threads,
         size_t out_elem, char* out, Kernel&& kernel) {
  const size_t oh = g.out_h(), ow = g.out_w(), rows_total = g.batch * oh, nb = w.nb(), kp = w.k_padded();
  // Block k -> offset from the pixel's first tap, for the in-place path.
  std::vector<uint32_t> direct;
  if (direct_ok) {
    direct.resize(w.nnz());
    for (size_t b = 0; b < w.nnz(); ++b) {
      const size_t k = std::min<size_t>(w.kidx[b], w.k() - w.kr()), tap = k / g.in_c, c = k % g.in_c, ky = tap / g.kernel_w, kx = tap % g.kernel_w;
      direct[b] = uint32_t((ky * g.dilation_h * g.in_w + kx * g.dilation_w) * g.in_c + c);
    }
  }
  // Interior output columns: every tap inside horizontally.
  const size_t span_w = (g.kernel_w - 1) * g.dilation_w;
  const size_t ox_lo = std::min(ow, ceil_div(g.pad_w, g.stride_w));
  const size_t ox_hi = g.in_w + g.pad_w < span_w + 1 ? ox_lo
                                                    : std::max(ox_lo, std::min(ow, (g.in_w + g.pad_w - 1 - span_w) / g.stride_w + 1));
  const size_t span_h = (g.kernel_h - 1) * g.dilation_h;
  // Largest valid index for each path (see ukernels/spgemm.h, k_max): gathered rows are kp long, in-place
  // rows reach the last channel group of the last tap.
  const size_t gathered_max = kp - w.kr();
  const size_t direct_max = ((g.kernel_h - 1) * g.dilation_h * g.in_w + (g.kernel_w - 1) * g.dilation_w) * g.in_c +
                            g.in_c - w.kr();
  const double macs = double(rows_total * ow) * double(w.nnz()) * double(w.block_elems());
  const size_t target = std::clamp<size_t>(size_t(macs / (1 << 16)), 1, size_t(threads) * 8);
  const size_t row_groups = std::min(rows_total, target);
  const size_t col_groups = std::min(w.block_rows(), ceil_div(target, row_groups));
  const size_t rows_per = ceil_div(rows_total, row_groups), cols_per = ceil_div(w.block_rows(), col_groups);
  const size_t tasks = ceil_div(rows_total, rows_per) * ceil_div(w.block_rows(), cols_per);
  const size_t n_row_tasks = ceil_div(rows_total, rows_per);
  const size_t out_row = ow * g.out_c;
  parallel_for(tasks, threads, [&](size_t t) {
    const size_t r0 = (t % n_row_tasks) * rows_per, r1 = std::min(rows_total, r0 + rows_per);
    const size_t g0 = (t / n_row_tasks) * cols_per, g1 = std::min(w.block_rows(), g0 + cols_per);
    T* tile = reinterpret_cast<T*>(thread_scratch(ScratchSlot::kTile, ow * kp * sizeof(T)));
    for (size_t r = r0; r < r1; ++r) {
      const size_t n = r / oh, oy = r % oh;
      const Index iy0 = Index(oy * g.stride_h) - Index(g.pad_h);
      const bool rows_inside = iy0 >= 0 && iy0 + Index(span_h) < Index(g.in_h);
      const bool direct_row = direct_ok && rows_inside && ox_hi > ox_lo;
      // Segments of the output row: [0, lo) gathered, [lo, hi) in place, [hi, ow) gathered.
      const size_t lo = direct_row ? ox_lo : ow, hi = direct_row ? ox_hi : ow;
      for (size_t ox = 0; ox < lo; ++ox) gather_row(g, x, n, oy, ox, pad, kp, tile + ox * kp);
      for (size_t ox = hi; ox < ow; ++ox) gather_row(g, x, n, oy, ox, pad, kp, tile + ox * kp);
      char* out_r = out + r * out_row * out_elem;
      for (size_t grp = g0; grp < g1; ++grp) {
        const size_t col = grp * nb, nr = std::min(nb, g.out_c - col);
        const size_t b0 = w.row_ptr[grp], nnz = w.row_ptr[grp + 1] - b0;
        char* out_c = out_r + col * out_elem;
        if (lo > 0) kernel(lo, nr, nnz, w.kidx + b0, gathered_max, b0, tile, kp, col, out_c);
        if (hi > lo) {
          const T* a = x + ((n * g.in_h + size_t(iy0)) * g.in_w + (lo * g.stride_w - g.pad_w)) * g.in_c;
          kernel(hi - lo, nr, nnz, direct.data() + b0, direct_max, b0, a, g.stride_w * g.in_c, col,
                 out_c + lo * g.out_c * out_elem);
        }
        if (ow > hi)
          kernel(ow - hi, nr, nnz, w.kidx + b0, gathered_max, b0, tile + hi * kp, kp, col, out_c + hi * g.out_c * out_elem);
      }
    }
  });
}

}  // namespace

U8QuantParams sparse_conv2d(const SparsePackedView& w, const SparseConvCall& call) {
  const ConvGeometry& g = call.g;
  if (g.groups != 1) throw std::invalid_argument("edgeopt: the sparse conv supports groups = 1 only");
  if (w.k() != g.kernel_h * g.kernel_w * g.in_c || w.n() != g.out_c)
    throw std::invalid_argument("edgeopt: sparse conv weights do not match the geometry");
  const size_t m = g.batch * g.out_h() * g.out_w();
  U8QuantParams xp = call.x_params;
  if (m == 0) return xp;
  const SparseGemmKernels& kern = sparse_gemm_kernels();
  const int threads = threads_for_macs(double(m) * double(w.nnz()) * double(w.block_elems()), call.num_threads);
  char* out = static_cast<char*>(call.out);
  const size_t oc = g.out_c;
  if (call.residual != nullptr && (!w.is_int8 || w.nb() != 16 || call.out_kind == OutKind::kS32))
    throw std::invalid_argument("edgeopt: the sparse conv adds a residual for int8 weights in 16-column blocks with "
                                "float32 or uint8 output only");
  if (!w.is_int8) {
    const F32SpGemmUkernelFn* table = w.nb() == 16 ? kern.f32_nb16 : kern.f32_nb8;
    const float* values = static_cast<const float*>(w.values);
    run<float>(w, g, call.x_f32, 0.0f, true, threads, 4, out,
               [&](size_t rows, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, size_t b0, const float* a, size_t as,
                   size_t col, char* c) {
                 for (size_t i = 0; i < rows;) {
                   size_t tile;
                   const F32SpGemmUkernelFn uk = sparse_tile_kernel(table, rows - i, &tile);
                   uk(tile, nr, nnz, kidx, k_max, values + b0 * w.nb(), a + i * as, as, w.bias + col, call.out_min,
                      call.out_max, reinterpret_cast<float*>(c) + i * oc, oc);
                   i += tile;
                 }
               });
    return xp;
  }
  // int8: the whole input as u8 NHWC (one image row of in_w * in_c values per quantizer row).
  const uint8_t* x = call.x_u8;
  if (x == nullptr) {
    const size_t rows = g.batch * g.in_h, k = g.in_w * g.in_c;
    uint8_t* buf = thread_scratch(ScratchSlot::kInput, rows * k);
    xp = quantize_activations(call.x_f32, rows, k, k, call.dynamic, xp, buf, k, threads);
    x = buf;
  }
  const QGemmEpilogue ep = make_qgemm_epilogue(w.colsum, w.scale, w.bias, xp, call.out_min, call.out_max,
                                               call.out_kind, call.out_params, call.residual, call.out);
  const QSpGemmUkernelFn* table = w.nb() == 16 ? kern.q_nb16 : kern.q_nb8;
  const int8_t* values = static_cast<const int8_t*>(w.values);
  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  run<uint8_t>(w, g, x, uint8_t(xp.zero_point), g.in_c % kSpQKr == 0, threads, out_elem, out,
               [&](size_t rows, size_t nr, size_t nnz, const uint32_t* kidx, size_t k_max, size_t b0, const uint8_t* a,
                   size_t as,
                   size_t col, char* c) {
                 for (size_t i = 0; i < rows;) {
                   size_t tile;
                   const QSpGemmUkernelFn uk = sparse_tile_kernel(table, rows - i, &tile);
                   uk(tile, nr, nnz, kidx, k_max, values + b0 * w.nb() * kSpQKr, a + i * as, as, ep, col,
                      c + i * oc * out_elem, oc);
                   i += tile;
                 }
               });
  return xp;
}

}  // namespace edgeopt

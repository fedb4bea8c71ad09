#include "ops/qconv.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace edgeopt {
namespace {

// Below this many gathered bytes (all output pixels x k_padded), a conv gathers every row once before the
// GEMM, so the column-split tasks of a small-M layer (ResNet's 14x14 and 7x7 stages) share them.
constexpr size_t kGatherAllBytes = 1 << 20;

using Index = std::ptrdiff_t;

// memcpy for the short runs a gather copies (3-channel stems copy 21 bytes per filter row): inline and
// without over-reading, by two overlapping fixed-size copies instead of a libc call per run (the stem's
// gather is ~15% of its perf samples; the gain from this was within the noise of a loaded machine).
inline void copy_run(uint8_t* dst, const uint8_t* src, size_t n) {
  if (n >= 32) {
    std::memcpy(dst, src, n);
  } else if (n >= 16) {
    std::memcpy(dst, src, 16);
    std::memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(dst, src, 4);
    std::memcpy(dst + n - 4, src + n - 4, 4);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// Slack after a gathered tile: the fast path below stores whole 16-byte blocks past a short run's end.
constexpr size_t kGatherSlack = 16;

// The im2col rows of output pixels [row0, row1) of `group` into dst (rows k_padded bytes apart, followed by
// kGatherSlack writable bytes): for each pixel the kernel_h x kernel_w x cin_per_group input values it reads,
// in (ky, kx, c) order; taps in the padding get the zero point. Bytes k..k_padded of a row are left
// unspecified: they meet zero weights. Where a filter row's taps are whole pixels side by side in the input
// (no groups, no dilation, inside the image) they are one run, copied as 16-byte blocks (a 3-channel stem's
// run is 9 or 21 bytes); pixels are walked in order so no division is done per row.
void gather_rows(const ConvGeometry& g, const uint8_t* x, size_t group, uint8_t zero_point, size_t k_padded,
                 size_t row0, size_t row1, uint8_t* dst) {
  // Geometry in locals: the stores below may alias `g` as far as the compiler knows.
  const size_t oh = g.out_h(), ow = g.out_w(), cg = g.in_c / g.groups, kh = g.kernel_h;
  const Index w = Index(g.in_w), kw = Index(g.kernel_w), dw = Index(g.dilation_w), c = Index(g.in_c);
  const Index sw = Index(g.stride_w), pw = Index(g.pad_w);
  const size_t run = g.kernel_w * cg;
  const uint8_t* const x_end = x + g.batch * g.in_h * g.in_w * g.in_c;
  const bool runs = g.groups == 1 && g.dilation_w == 1;
  const bool short_run = run <= 16;
  const uint8_t* rows[kQConvMaxKernelH];
  size_t n = row0 / (oh * ow), oy = row0 % (oh * ow) / ow, ox = row0 % ow;
  auto load_rows = [&] {
    for (size_t ky = 0; ky < g.kernel_h; ++ky) {
      const Index iy = Index(oy * g.stride_h + ky * g.dilation_h) - Index(g.pad_h);
      rows[ky] = iy >= 0 && iy < Index(g.in_h) ? x + ((n * g.in_h + size_t(iy)) * g.in_w) * g.in_c + group * cg
                                                : nullptr;
    }
  };
  load_rows();
  for (size_t r = row0; r < row1; ++r, dst += k_padded) {
    const Index ix0 = Index(ox) * sw - pw;
    const bool interior_x = runs && ix0 >= 0 && ix0 + kw <= w;
    uint8_t* d = dst;
    for (size_t ky = 0; ky < kh; ++ky, d += run) {
      const uint8_t* row = rows[ky];
      if (row == nullptr) {
        std::memset(d, zero_point, run);
      } else if (interior_x) {
        const uint8_t* src = row + ix0 * c;
        if (short_run && src + 16 <= x_end) {
          std::memcpy(d, src, 16);  // past the run: the next run's bytes or the slack, written over later
        } else {
          copy_run(d, src, run);
        }
      } else {
        for (Index kx = 0; kx < kw; ++kx) {
          const Index ix = ix0 + kx * dw;
          if (ix < 0 || ix >= w) {
            std::memset(d + kx * cg, zero_point, cg);
          } else {
            copy_run(d + kx * cg, row + ix * c, cg);
          }
        }
      }
    }
    if (++ox == ow) {
      ox = 0;
      if (++oy == oh) oy = 0, ++n;
      if (r + 1 < row1) load_rows();
    }
  }
}

// The implicit-GEMM kernels' pointers for output pixels [row0, row1) of `group`: per tile of kQGemmMr
// pixels, per tap (ky, kx), kQGemmMr pointers to the cg input channels that pixel meets at that tap, or to
// `zero` (cg zero-point bytes) where the tap falls in the padding. Pixels past row1 repeat the last one.
void build_indirection(const ConvGeometry& g, const uint8_t* x, size_t group, const uint8_t* zero, size_t row0,
                       size_t row1, const uint8_t** out) {
  const size_t oh = g.out_h(), ow = g.out_w(), taps = g.kernel_h * g.kernel_w;
  const Index w = Index(g.in_w), kw = Index(g.kernel_w), dw = Index(g.dilation_w), c = Index(g.in_c);
  const size_t tiles = (row1 - row0 + kQGemmMr - 1) / kQGemmMr;
  // Per filter row, the input row of the current output row (nullptr in the padding), already offset to
  // the group's channels; refreshed when the output row changes.
  const uint8_t* rows[kQConvMaxKernelH];
  size_t n = row0 / (oh * ow), oy = row0 % (oh * ow) / ow, ox = row0 % ow;
  auto load_rows = [&] {
    for (size_t ky = 0; ky < g.kernel_h; ++ky) {
      const Index iy = Index(oy * g.stride_h + ky * g.dilation_h) - Index(g.pad_h);
      rows[ky] = iy >= 0 && iy < Index(g.in_h) ? x + ((n * g.in_h + size_t(iy)) * g.in_w) * g.in_c + group * (g.in_c / g.groups)
                                                : nullptr;
    }
  };
  load_rows();
  for (size_t i = 0; i < tiles * kQGemmMr; ++i) {
    const uint8_t** p = out + (i / kQGemmMr) * taps * kQGemmMr + i % kQGemmMr;
    if (row0 + i >= row1) {  // past the end: repeat the previous pixel's pointers
      for (size_t t = 0; t < taps; ++t) p[t * kQGemmMr] = p[t * kQGemmMr - 1];
      continue;
    }
    const Index ix0 = Index(ox * g.stride_w) - Index(g.pad_w);
    const bool interior_x = ix0 >= 0 && ix0 + (kw - 1) * dw < w;
    for (size_t ky = 0; ky < g.kernel_h; ++ky) {
      const uint8_t* row = rows[ky];
      if (row == nullptr) {
        for (Index kx = 0; kx < kw; ++kx, p += kQGemmMr) *p = zero;
      } else if (interior_x) {
        const uint8_t* px = row + ix0 * c;
        for (Index kx = 0; kx < kw; ++kx, p += kQGemmMr) *p = px + kx * dw * c;
      } else {
        for (Index kx = 0; kx < kw; ++kx, p += kQGemmMr) {
          const Index ix = ix0 + kx * dw;
          *p = ix >= 0 && ix < w ? row + ix * c : zero;
        }
      }
    }
    if (++ox == ow) {
      ox = 0;
      if (++oy == oh) oy = 0, ++n;
      if (row0 + i + 1 < row1) load_rows();
    }
  }
}

// epilogue(conv) of one group through the implicit-GEMM kernels: the input read in place, tap by tap.
void qconv_igemm(const QGemmKernels& kern, const ConvGeometry& g, const uint8_t* x, size_t group,
                 const Qs8PackedView& w, const QGemmEpilogue& ep, uint8_t zero_point, char* out, size_t out_elem,
                 int threads) {
  const size_t m = g.batch * g.out_h() * g.out_w(), taps = g.kernel_h * g.kernel_w, kc = g.in_c / g.groups;
  const size_t n = w.n(), n_blocks = (n + kQGemmNr - 1) / kQGemmNr;
  const std::vector<uint8_t> zero(kc, zero_point);
  // Rows split first: each task builds its rows' pointers, so a column split would build them again.
  const QGemmTaskPlan plan = plan_qgemm_tasks(m, n_blocks, w.k_padded(), threads, /*rows_cost=*/true);
  const size_t blocks_per_call = qgemm_blocks_per_call(w.k_padded());
  parallel_for(plan.tasks(), threads, [&](size_t t) {
    const size_t mi = t % plan.m_chunks, gi = t / plan.m_chunks;
    const size_t row0 = mi * plan.rows_per_chunk, row1 = std::min(m, row0 + plan.rows_per_chunk);
    const size_t b0 = gi * plan.blocks_per_group, b1 = std::min(n_blocks, b0 + plan.blocks_per_group);
    const size_t tile_ptrs = taps * kQGemmMr;
    auto** ptrs = reinterpret_cast<const uint8_t**>(thread_scratch(
        ScratchSlot::kTile, (row1 - row0 + kQGemmMr - 1) / kQGemmMr * tile_ptrs * sizeof(uint8_t*)));
    build_indirection(g, x, group, zero.data(), row0, row1, ptrs);
    for (size_t b = b0; b < b1; b += blocks_per_call) {
      const size_t col = b * kQGemmNr, nc = std::min(n, std::min(b1, b + blocks_per_call) * kQGemmNr) - col;
      const int8_t* wb = w.blocks + b * w.block_bytes();
      for (size_t i = row0; i < row1; i += kQGemmMr) {
        const size_t mr = std::min<size_t>(kQGemmMr, row1 - i);
        // 3 rows run on the 4-row tile (its fourth row repeats the third); 1 and 2 on their own tiles.
        const QIgemmUkernelFn uk = kern.igemm_by_rows[mr == 3 ? kQGemmMr : mr];
        uk(mr, nc, kc, taps, ptrs + (i - row0) / kQGemmMr * tile_ptrs, wb, ep, col,
           out + (i * g.out_c + col) * out_elem, g.out_c);
      }
    }
  });
}

}  // namespace

const uint8_t* input_u8(const QConvCall& call, int threads, U8QuantParams* xp) {
  if (call.x_u8 != nullptr) return call.x_u8;
  const ConvGeometry& g = call.g;
  // One image row (in_w * in_c contiguous values) per quantizer row: long rows even when in_c is 1.
  const size_t m = g.batch * g.in_h, k = g.in_w * g.in_c;
  uint8_t* buf = thread_scratch(ScratchSlot::kInput, m * k);
  *xp = quantize_activations(call.x_f32, m, k, k, call.dynamic, *xp, buf, k, threads);
  return buf;
}

size_t ConvGeometry::out_h() const {
  const size_t span = dilation_h * (kernel_h - 1) + 1;
  return in_h + 2 * pad_h < span ? 0 : (in_h + 2 * pad_h - span) / stride_h + 1;
}

size_t ConvGeometry::out_w() const {
  const size_t span = dilation_w * (kernel_w - 1) + 1;
  return in_w + 2 * pad_w < span ? 0 : (in_w + 2 * pad_w - span) / stride_w + 1;
}

U8QuantParams qconv2d(const Qs8PackedView* group_weights, const QConvCall& call) {
  const QGemmKernels& kern = qgemm_kernels();
  const ConvGeometry& g = call.g;
  const size_t m = g.batch * g.out_h() * g.out_w();
  const size_t cg = g.in_c / g.groups, ng = g.out_c / g.groups, k = g.kernel_h * g.kernel_w * cg;
  const int threads = threads_for_macs(double(m) * double(g.out_c) * double(k), call.num_threads);
  U8QuantParams xp = call.x_params;
  if (g.kernel_h > kQConvMaxKernelH) throw std::invalid_argument("edgeopt: conv filters taller than 32 rows are not supported");
  if (m == 0) return xp;
  const uint8_t* x = input_u8(call, threads, &xp);
  const bool in_place = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
                        g.pad_w == 0 && g.groups == 1 && g.in_c % kQGemmKr == 0;
  // Whole groups of 4 channels per tap: the implicit GEMM reads every tap in place.
  const bool implicit = cg % kQGemmKr == 0;
  const size_t out_elem = call.out_kind == OutKind::kU8 ? 1 : 4;
  for (size_t group = 0; group < g.groups; ++group) {
    const Qs8PackedView& w = group_weights[group];
    const size_t kp = w.k_padded();
    const QGemmEpilogue ep =
        make_qgemm_epilogue(w.colsum, w.scale, w.bias, xp, call.out_min, call.out_max, call.out_kind, call.out_params,
                            call.residual, call.out);
    char* out_group = static_cast<char*>(call.out) + group * ng * out_elem;
    const uint8_t zp = uint8_t(xp.zero_point);
    if (in_place) {
      qgemm_tiled(kern, m, w, ep, [&](size_t row0, size_t) { return ARows{x + row0 * g.in_c, g.in_c}; }, out_group,
                  g.out_c, threads);
    } else if (implicit) {
      qconv_igemm(kern, g, x, group, w, ep, zp, out_group, out_elem, threads);
    } else if (m * kp <= kGatherAllBytes) {
      uint8_t* all = thread_scratch(ScratchSlot::kGathered, m * kp + kGatherSlack);
      const size_t chunks = std::min(m, size_t(threads) * 4);
      parallel_for(chunks, threads, [&](size_t ci) {
        gather_rows(g, x, group, zp, kp, m * ci / chunks, m * (ci + 1) / chunks, all + m * ci / chunks * kp);
      });
      qgemm_tiled(kern, m, w, ep, [&](size_t row0, size_t) { return ARows{all + row0 * kp, kp}; }, out_group, g.out_c,
                  threads);
    } else {
      auto gather_tile = [&](size_t row0, size_t row1) {
        uint8_t* tile = thread_scratch(ScratchSlot::kTile, (row1 - row0) * kp + kGatherSlack);
        gather_rows(g, x, group, zp, kp, row0, row1, tile);
        return ARows{tile, kp};
      };
      qgemm_tiled(kern, m, w, ep, gather_tile, out_group, g.out_c, threads, /*rows_are_gathered=*/true);
    }
  }
  return xp;
}

}  // namespace edgeopt

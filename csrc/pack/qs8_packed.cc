#include "pack/qs8_packed.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ukernels/qgemm.h"

namespace edgeopt {
namespace {

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

struct Layout {
  size_t n_padded, k_padded, colsum, scale, bias, blocks, total;
};

Layout layout_for(size_t n, size_t k) {
  Layout l;
  l.n_padded = round_up(n, kQGemmNr);
  l.k_padded = round_up(k, kQGemmKr);
  l.colsum = sizeof(PackHeader);
  l.scale = l.colsum + 4 * l.n_padded;
  l.bias = l.scale + 4 * l.n_padded;
  l.blocks = l.bias + 4 * l.n_padded;
  l.total = l.blocks + l.n_padded * l.k_padded;
  return l;
}

}  // namespace

size_t qs8_packed_size(size_t n, size_t k) { return layout_for(n, k).total; }

void pack_qs8_weights(const int8_t* w, const float* scale, const float* bias, size_t n, size_t k, uint8_t* out,
                      size_t out_bytes) {
  if (n == 0 || k == 0) throw std::invalid_argument("edgeopt: cannot pack an empty weight matrix");
  if (k > kQs8MaxK)
    throw std::invalid_argument("edgeopt: in_features " + std::to_string(k) + " exceeds the int32-safe bound " +
                                std::to_string(kQs8MaxK));
  const Layout l = layout_for(n, k);
  if (out_bytes != l.total) throw std::invalid_argument("edgeopt: pack buffer has the wrong size");
  for (size_t i = 0; i < n * k; ++i) {
    if (w[i] > kQGemmWeightMax || w[i] < -kQGemmWeightMax)
      throw std::invalid_argument("edgeopt: weight " + std::to_string(int(w[i])) + " at flat index " +
                                  std::to_string(i) + " is outside [-63, 63], the range the AVX2 kernel is exact for");
  }
  std::memset(out, 0, l.total);
  write_pack_header(out, {.format = kPackFormatQs8Gemm16c4, .nr = kQGemmNr, .kr = kQGemmKr, .n = uint32_t(n),
                           .k = uint32_t(k), .n_padded = uint32_t(l.n_padded), .k_padded = uint32_t(l.k_padded),
                           .weight_max = kQGemmWeightMax, .has_bias = bias != nullptr, .total_bytes = l.total});
  int32_t* colsum = reinterpret_cast<int32_t*>(out + l.colsum);
  float* sc = reinterpret_cast<float*>(out + l.scale);
  float* bi = reinterpret_cast<float*>(out + l.bias);
  int8_t* blocks = reinterpret_cast<int8_t*>(out + l.blocks);
  for (size_t j = 0; j < n; ++j) {
    int32_t sum = 0;
    for (size_t kk = 0; kk < k; ++kk) sum += w[j * k + kk];
    colsum[j] = sum;
    sc[j] = scale[j];
    bi[j] = bias ? bias[j] : 0.0f;
    int8_t* block = blocks + (j / kQGemmNr) * l.k_padded * kQGemmNr;
    const size_t jj = j % kQGemmNr;
    for (size_t kk = 0; kk < k; ++kk) {
      block[qgemm_packed_offset(jj, kk)] = w[j * k + kk];
    }
  }
  seal_pack(out, l.total);  // last: the checksum covers every byte written above
}

Qs8PackedView view_qs8_packed(const uint8_t* buf, size_t bytes) {
  const PackHeader h = read_pack_header(buf, bytes);
  if (h.format != kPackFormatQs8Gemm16c4 || h.nr != kQGemmNr || h.kr != kQGemmKr)
    bad_pack("layout is not the s8 16c4 GEMM layout");
  if (h.weight_max != kQGemmWeightMax)
    bad_pack("weights packed for range +-" + std::to_string(h.weight_max) + ", the kernels are exact only for +-" +
             std::to_string(kQGemmWeightMax));
  if (h.n == 0 || h.k == 0 || h.k > kQs8MaxK) bad_pack("invalid dims");
  const Layout l = layout_for(h.n, h.k);
  if (h.n_padded != l.n_padded || h.k_padded != l.k_padded || h.total_bytes != l.total || bytes != l.total)
    bad_pack("header dims (" + std::to_string(h.n) + " x " + std::to_string(h.k) + ") do not match a buffer of " +
             std::to_string(bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(buf) % 4 != 0) bad_pack("buffer is not 4-byte aligned");
  return Qs8PackedView{h, reinterpret_cast<const int32_t*>(buf + l.colsum), reinterpret_cast<const float*>(buf + l.scale),
                       reinterpret_cast<const float*>(buf + l.bias), reinterpret_cast<const int8_t*>(buf + l.blocks)};
}

void validate_qs8_contents(const Qs8PackedView& v) {
  const size_t n = v.n(), k = v.k(), kp = v.k_padded();
  for (size_t j = 0; j < v.n_padded(); ++j) {
    const int8_t* block = v.blocks + (j / kQGemmNr) * v.block_bytes();
    const size_t jj = j % kQGemmNr;
    int32_t sum = 0;
    for (size_t kk = 0; kk < kp; ++kk) {
      const int w = block[qgemm_packed_offset(jj, kk)];
      if (j >= n || kk >= k) {
        if (w != 0) bad_pack("non-zero padding weight at column " + std::to_string(j) + ", k " + std::to_string(kk));
        continue;
      }
      if (w > kQGemmWeightMax || w < -kQGemmWeightMax)
        bad_pack("weight " + std::to_string(w) + " at (" + std::to_string(j) + ", " + std::to_string(kk) +
                 ") is outside [-63, 63]");
      sum += w;
    }
    if (j < n) {
      if (sum != v.colsum[j]) bad_pack("column sum of output " + std::to_string(j) + " does not match its weights");
      if (!(std::isfinite(v.scale[j]) && v.scale[j] > 0.0f))
        bad_pack("scale of output " + std::to_string(j) + " is not finite and positive");
      if (!std::isfinite(v.bias[j])) bad_pack("bias of output " + std::to_string(j) + " is not finite");
    }
  }
}

void unpack_qs8_weights(const Qs8PackedView& v, int8_t* w, float* scale, float* bias) {
  const size_t n = v.n(), k = v.k();
  for (size_t j = 0; j < n; ++j) {
    const int8_t* block = v.blocks + (j / kQGemmNr) * v.block_bytes();
    const size_t jj = j % kQGemmNr;
    for (size_t kk = 0; kk < k; ++kk)
      w[j * k + kk] = block[qgemm_packed_offset(jj, kk)];
    scale[j] = v.scale[j];
    bias[j] = v.bias[j];
  }
}

}  // namespace edgeopt

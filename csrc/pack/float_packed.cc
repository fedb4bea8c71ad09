#include "pack/float_packed.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ukernels/f32gemm.h"

namespace edgeopt {
namespace {

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

struct Layout {
  size_t n_padded, bias, blocks, total;
};

size_t elem_bytes(FloatWeightType t) { return t == FloatWeightType::kF16 ? 2 : 4; }

Layout layout_for(FloatWeightType t, size_t n, size_t k) {
  Layout l;
  l.n_padded = round_up(n, kFGemmNr);
  l.bias = sizeof(PackHeader);
  l.blocks = l.bias + 4 * l.n_padded;  // 64 + 64*x: blocks start 64-byte aligned relative to the buffer
  l.total = l.blocks + l.n_padded * k * elem_bytes(t);
  return l;
}

bool half_is_finite(uint16_t h) { return ((h >> 10) & 0x1f) != 0x1f; }

const char* type_name(FloatWeightType t) { return t == FloatWeightType::kF16 ? "fp16" : "fp32"; }

}  // namespace

size_t float_packed_size(FloatWeightType type, size_t n, size_t k) { return layout_for(type, n, k).total; }

void pack_float_weights(FloatWeightType type, const void* w, const float* bias, size_t n, size_t k, uint8_t* out,
                        size_t out_bytes) {
  if (n == 0 || k == 0) throw std::invalid_argument("edgeopt: cannot pack an empty weight matrix");
  if (n > kFloatPackMaxDim || k > kFloatPackMaxDim)
    throw std::invalid_argument("edgeopt: weight dims exceed " + std::to_string(kFloatPackMaxDim));
  const Layout l = layout_for(type, n, k);
  if (out_bytes != l.total) throw std::invalid_argument("edgeopt: pack buffer has the wrong size");
  for (size_t i = 0; i < n * k; ++i) {
    const bool finite = type == FloatWeightType::kF16 ? half_is_finite(static_cast<const uint16_t*>(w)[i])
                                                      : std::isfinite(static_cast<const float*>(w)[i]);
    if (!finite)
      throw std::invalid_argument(std::string("edgeopt: ") + type_name(type) + " weight at flat index " +
                                  std::to_string(i) + " is not finite (for fp16: outside +-65504 after rounding)");
  }
  for (size_t j = 0; bias && j < n; ++j)
    if (!std::isfinite(bias[j])) throw std::invalid_argument("edgeopt: bias " + std::to_string(j) + " is not finite");
  std::memset(out, 0, l.total);
  write_pack_header(out, {.format = type == FloatWeightType::kF16 ? kPackFormatF16Gemm16 : kPackFormatF32Gemm16,
                           .nr = kFGemmNr, .kr = 1, .n = uint32_t(n), .k = uint32_t(k),
                           .n_padded = uint32_t(l.n_padded), .k_padded = uint32_t(k), .weight_max = 0,
                           .has_bias = bias != nullptr, .total_bytes = l.total});
  float* bi = reinterpret_cast<float*>(out + l.bias);
  const size_t eb = elem_bytes(type);
  const uint8_t* src = static_cast<const uint8_t*>(w);
  uint8_t* blocks = out + l.blocks;
  for (size_t j = 0; j < n; ++j) {
    bi[j] = bias ? bias[j] : 0.0f;
    uint8_t* block = blocks + (j / kFGemmNr) * k * kFGemmNr * eb;
    const size_t jj = j % kFGemmNr;
    for (size_t kk = 0; kk < k; ++kk) std::memcpy(block + (kk * kFGemmNr + jj) * eb, src + (j * k + kk) * eb, eb);
  }
  seal_pack(out, l.total);  // last: the checksum covers every byte written above
}

FloatPackedView view_float_packed(const uint8_t* buf, size_t bytes) {
  const PackHeader h = read_pack_header(buf, bytes);
  FloatWeightType type;
  if (h.format == kPackFormatF16Gemm16) {
    type = FloatWeightType::kF16;
  } else if (h.format == kPackFormatF32Gemm16) {
    type = FloatWeightType::kF32;
  } else {
    bad_pack("format " + std::to_string(h.format) + " is not a float-weight layout (fp32 " +
             std::to_string(kPackFormatF32Gemm16) + " or fp16 " + std::to_string(kPackFormatF16Gemm16) +
             "); int8 buffers go to the quantized ops");
  }
  if (h.nr != kFGemmNr || h.kr != 1 || h.k_padded != h.k) bad_pack("tile sizes do not match this build's float layout");
  if (h.n == 0 || h.k == 0 || h.n > kFloatPackMaxDim || h.k > kFloatPackMaxDim) bad_pack("invalid dims");
  const Layout l = layout_for(type, h.n, h.k);
  if (h.n_padded != l.n_padded || h.total_bytes != l.total || bytes != l.total)
    bad_pack("header dims (" + std::to_string(h.n) + " x " + std::to_string(h.k) + ", " + type_name(type) +
             ") do not match a buffer of " + std::to_string(bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(buf) % 4 != 0) bad_pack("buffer is not 4-byte aligned");
  return FloatPackedView{h, type, reinterpret_cast<const float*>(buf + l.bias), buf + l.blocks};
}

void validate_float_contents(const FloatPackedView& v) {
  const size_t n = v.n(), k = v.k(), eb = v.elem_bytes();
  const uint8_t* blocks = static_cast<const uint8_t*>(v.blocks);
  for (size_t j = 0; j < v.n_padded(); ++j) {
    const uint8_t* block = blocks + (j / kFGemmNr) * v.block_elems() * eb;
    const size_t jj = j % kFGemmNr;
    for (size_t kk = 0; kk < k; ++kk) {
      const uint8_t* p = block + (kk * kFGemmNr + jj) * eb;
      if (j >= n) {
        for (size_t b = 0; b < eb; ++b)
          if (p[b] != 0) bad_pack("non-zero padding weight at column " + std::to_string(j));
        continue;
      }
      bool finite;
      if (v.type == FloatWeightType::kF16) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        finite = half_is_finite(h);
      } else {
        float f;
        std::memcpy(&f, p, 4);
        finite = std::isfinite(f);
      }
      if (!finite) bad_pack("weight at (" + std::to_string(j) + ", " + std::to_string(kk) + ") is not finite");
    }
    if (j < n && !std::isfinite(v.bias[j])) bad_pack("bias of output " + std::to_string(j) + " is not finite");
    if (j >= n && v.bias[j] != 0.0f) bad_pack("non-zero padding bias at column " + std::to_string(j));
    if (j < n && !v.header.has_bias && v.bias[j] != 0.0f) bad_pack("bias present in a buffer packed without bias");
  }
}

void unpack_float_weights(const FloatPackedView& v, void* w, float* bias) {
  const size_t n = v.n(), k = v.k(), eb = v.elem_bytes();
  const uint8_t* blocks = static_cast<const uint8_t*>(v.blocks);
  uint8_t* dst = static_cast<uint8_t*>(w);
  for (size_t j = 0; j < n; ++j) {
    const uint8_t* block = blocks + (j / kFGemmNr) * v.block_elems() * eb;
    const size_t jj = j % kFGemmNr;
    for (size_t kk = 0; kk < k; ++kk) std::memcpy(dst + (j * k + kk) * eb, block + (kk * kFGemmNr + jj) * eb, eb);
    bias[j] = v.bias[j];
  }
}

}  // namespace edgeopt

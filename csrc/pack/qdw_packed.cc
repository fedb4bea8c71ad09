#include "pack/qdw_packed.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ukernels/qdwconv.h"

namespace edgeopt {
namespace {

constexpr size_t kMaxTaps = 1024;  // 32x32 filters; keeps acc within int32 (255*127*1024 < 2^31)

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

struct Layout {
  size_t c_padded, taps_padded, wsum, scale, bias, blocks, total;
};

Layout layout_for(size_t channels, size_t taps) {
  Layout l;
  l.c_padded = round_up(channels, kQDwChannelTile);
  l.taps_padded = round_up(taps, 2);
  l.wsum = sizeof(PackHeader);
  l.scale = l.wsum + 4 * l.c_padded;
  l.bias = l.scale + 4 * l.c_padded;
  l.blocks = l.bias + 4 * l.c_padded;
  l.total = l.blocks + 2 * l.c_padded * l.taps_padded;
  return l;
}

int16_t* block_of(int16_t* blocks, size_t c, size_t taps_padded) {
  return blocks + (c / kQDwChannelTile) * taps_padded * kQDwChannelTile;
}

}  // namespace

size_t qdw_packed_size(size_t channels, size_t taps) { return layout_for(channels, taps).total; }

void pack_qdw_weights(const int8_t* w, const float* scale, const float* bias, size_t channels, size_t taps,
                      uint8_t* out, size_t out_bytes) {
  if (channels == 0 || taps == 0) throw std::invalid_argument("edgeopt: cannot pack an empty depthwise filter");
  if (taps > kMaxTaps) throw std::invalid_argument("edgeopt: depthwise filter has more than 1024 taps");
  const Layout l = layout_for(channels, taps);
  if (out_bytes != l.total) throw std::invalid_argument("edgeopt: pack buffer has the wrong size");
  for (size_t i = 0; i < channels * taps; ++i)
    if (w[i] < -kQDwWeightMax) throw std::invalid_argument("edgeopt: depthwise weight -128 is outside [-127, 127]");
  std::memset(out, 0, l.total);
  write_pack_header(out, {.format = kPackFormatQs8Dwconv32x2, .nr = kQDwChannelTile, .kr = 2, .n = uint32_t(channels),
                           .k = uint32_t(taps), .n_padded = uint32_t(l.c_padded), .k_padded = uint32_t(l.taps_padded),
                           .weight_max = kQDwWeightMax, .has_bias = bias != nullptr, .total_bytes = l.total});
  int32_t* wsum = reinterpret_cast<int32_t*>(out + l.wsum);
  float* sc = reinterpret_cast<float*>(out + l.scale);
  float* bi = reinterpret_cast<float*>(out + l.bias);
  int16_t* blocks = reinterpret_cast<int16_t*>(out + l.blocks);
  for (size_t c = 0; c < channels; ++c) {
    int32_t sum = 0;
    int16_t* block = block_of(blocks, c, l.taps_padded);
    for (size_t t = 0; t < taps; ++t) {
      sum += w[c * taps + t];
      block[qdw_packed_index(c % kQDwChannelTile, t)] = w[c * taps + t];
    }
    wsum[c] = sum;
    sc[c] = scale[c];
    bi[c] = bias ? bias[c] : 0.0f;
  }
  seal_pack(out, l.total);  // last: the checksum covers every byte written above
}

QdwPackedView view_qdw_packed(const uint8_t* buf, size_t bytes) {
  const PackHeader h = read_pack_header(buf, bytes);
  if (h.format == kPackFormatQs8Dwconv16x2Retired)
    bad_pack("depthwise weights in the 16-channel layout of an earlier edgeopt; quantize the model again");
  if (h.format != kPackFormatQs8Dwconv32x2 || h.nr != kQDwChannelTile || h.kr != 2)
    bad_pack("layout is not the s8 32x2 depthwise layout");
  if (h.weight_max != kQDwWeightMax) bad_pack("depthwise weights packed for range +-" + std::to_string(h.weight_max));
  if (h.n == 0 || h.k == 0 || h.k > kMaxTaps) bad_pack("invalid dims");
  const Layout l = layout_for(h.n, h.k);
  if (h.n_padded != l.c_padded || h.k_padded != l.taps_padded || h.total_bytes != l.total || bytes != l.total)
    bad_pack("header dims (" + std::to_string(h.n) + " channels x " + std::to_string(h.k) +
             " taps) do not match a buffer of " + std::to_string(bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(buf) % 4 != 0) bad_pack("buffer is not 4-byte aligned");
  return QdwPackedView{h, reinterpret_cast<const int32_t*>(buf + l.wsum), reinterpret_cast<const float*>(buf + l.scale),
                       reinterpret_cast<const float*>(buf + l.bias), reinterpret_cast<const int16_t*>(buf + l.blocks)};
}

void validate_qdw_contents(const QdwPackedView& v) {
  const size_t tp = v.taps_padded();
  for (size_t c = 0; c < v.header.n_padded; ++c) {
    const int16_t* block = v.blocks + (c / kQDwChannelTile) * tp * kQDwChannelTile;
    int32_t sum = 0;
    for (size_t t = 0; t < tp; ++t) {
      const int w = block[qdw_packed_index(c % kQDwChannelTile, t)];
      if (c >= v.channels() || t >= v.taps()) {
        if (w != 0) bad_pack("non-zero padding weight at channel " + std::to_string(c) + ", tap " + std::to_string(t));
        continue;
      }
      if (w > kQDwWeightMax || w < -kQDwWeightMax)
        bad_pack("weight " + std::to_string(w) + " at channel " + std::to_string(c) + " is outside [-127, 127]");
      sum += w;
    }
    if (c < v.channels()) {
      if (sum != v.wsum[c]) bad_pack("weight sum of channel " + std::to_string(c) + " does not match its weights");
      if (!(std::isfinite(v.scale[c]) && v.scale[c] > 0.0f))
        bad_pack("scale of channel " + std::to_string(c) + " is not finite and positive");
      if (!std::isfinite(v.bias[c])) bad_pack("bias of channel " + std::to_string(c) + " is not finite");
    }
  }
}

void unpack_qdw_weights(const QdwPackedView& v, int8_t* w, float* scale, float* bias) {
  const size_t taps = v.taps(), tp = v.taps_padded();
  for (size_t c = 0; c < v.channels(); ++c) {
    const int16_t* block = v.blocks + (c / kQDwChannelTile) * tp * kQDwChannelTile;
    for (size_t t = 0; t < taps; ++t) w[c * taps + t] = int8_t(block[qdw_packed_index(c % kQDwChannelTile, t)]);
    scale[c] = v.scale[c];
    bias[c] = v.bias[c];
  }
}

}  // namespace edgeopt

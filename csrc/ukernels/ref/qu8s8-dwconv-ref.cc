// Scalar twin of the depthwise kernel: the definition the AVX2 kernel is tested against, bit for bit.
#include "ukernels/qdwconv.h"
#include "ukernels/ref/epilogue-ref.h"

namespace edgeopt {

void eo_qu8s8_dwconv_minmax_ukernel_16x2__ref(size_t pixels, size_t channels, size_t taps_padded,
                                              const uint8_t* const* rows, const int16_t* w, const QGemmEpilogue& ep,
                                              void* out, size_t out_stride) {
  const size_t elem = ep.out_kind == OutKind::kU8 ? 1 : 4;
  for (size_t p = 0; p < pixels; ++p) {
    const uint8_t* const* taps = rows + p * taps_padded;
    void* o = static_cast<char*>(out) + p * out_stride * elem;
    for (size_t c = 0; c < channels; ++c) {
      const int16_t* block = w + (c / kQDwChannelTile) * taps_padded * kQDwChannelTile;
      int32_t acc = 0;
      for (size_t t = 0; t < taps_padded; ++t) acc += int32_t(taps[t][c]) * block[qdw_packed_index(c % kQDwChannelTile, t)];
      store_epilogue_ref(acc, ep, c, o, c);
    }
  }
}

}  // namespace edgeopt

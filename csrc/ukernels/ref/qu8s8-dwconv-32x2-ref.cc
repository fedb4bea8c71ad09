// Scalar twin of the depthwise kernel: the definition the AVX2 kernel is tested against, bit for bit.
// It reads the weights through the packed layout but nothing else of the lane order: the sum is a plain
// int32 dot product, the epilogue the shared scalar one (zero-point correction included).
#include "ukernels/qdwconv.h"
#include "ukernels/ref/epilogue-ref.h"

namespace edgeopt {

void eo_qu8s8_dwconv_minmax_ukernel_32x2__ref(size_t pixels, size_t channel0, size_t channels, size_t taps_padded,
                                              const uint8_t* const* taps, size_t pixel_step, const int16_t* w,
                                              const QDwEpilogue& ep, void* out, size_t out_stride) {
  const size_t elem = ep.gemm.out_kind == OutKind::kU8 ? 1 : 4;
  for (size_t p = 0; p < pixels; ++p) {
    void* o = static_cast<char*>(out) + p * out_stride * elem;
    for (size_t c = channel0; c < channel0 + channels; ++c) {
      const int16_t* block = w + (c / kQDwChannelTile) * taps_padded * kQDwChannelTile;
      int32_t acc = 0;
      for (size_t t = 0; t < taps_padded; ++t)
        acc += int32_t(taps[t][p * pixel_step + c]) * block[qdw_packed_index(c % kQDwChannelTile, t)];
      store_epilogue_ref(acc, ep.gemm, c, o, c);
    }
  }
}

}  // namespace edgeopt

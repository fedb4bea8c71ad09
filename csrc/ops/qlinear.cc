#include "ops/qlinear.h"

#include <cstring>

namespace edgeopt {

U8QuantParams qlinear(const Qs8PackedView& w, const QLinearCall& call) {
  const QGemmKernels& kern = qgemm_kernels();
  const size_t m = call.m, k = w.k(), kp = w.k_padded();
  const int threads = threads_for_macs(double(m) * double(w.n()) * double(k), call.num_threads);
  if (m == 0) return call.x_params;

  // Activations as u8 rows of k_padded bytes (padding meets zero weights, so its value is irrelevant,
  // but the kernels read whole groups of 4 and must not run past the buffer).
  const uint8_t* a;
  size_t a_stride;
  U8QuantParams xp = call.x_params;
  if (call.x_u8 != nullptr && k % kQGemmKr == 0) {
    a = call.x_u8;
    a_stride = call.x_stride;
  } else {
    uint8_t* buf = thread_scratch(ScratchSlot::kInput, m * kp);
    if (call.x_u8 != nullptr) {
      for (size_t i = 0; i < m; ++i) std::memcpy(buf + i * kp, call.x_u8 + i * call.x_stride, k);
    } else {
      xp = quantize_activations(call.x_f32, m, k, call.x_stride, call.dynamic, xp, buf, kp, threads);
    }
    a = buf;
    a_stride = kp;
  }
  const QGemmEpilogue ep = make_qgemm_epilogue(w.colsum, w.scale, w.bias, xp, call.out_min, call.out_max,
                                               call.out_kind, call.out_params);
  qgemm_tiled(kern, m, w, ep, [&](size_t row0, size_t) { return ARows{a + row0 * a_stride, a_stride}; }, call.out,
              call.out_stride, threads);
  return xp;
}

}  // namespace edgeopt

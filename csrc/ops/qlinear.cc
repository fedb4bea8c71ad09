#include "ops/qlinear.h"

namespace edgeopt {

U8QuantParams qlinear(const Qs8PackedView& w, const QLinearCall& call) {
  const QGemmKernels& kern = qgemm_kernels();
  const size_t m = call.m, k = w.k(), kp = w.k_padded();
  const int threads = threads_for_macs(double(m) * double(w.n()) * double(k), call.num_threads);
  if (m == 0) return call.x_params;

  // Activations as u8 rows of k_padded bytes.
  U8QuantParams xp = call.x_params;
  const ARows in = prepare_u8_input(call.x_f32, call.x_u8, m, k, kp, call.x_stride, call.dynamic, &xp, threads);
  const QGemmEpilogue ep = make_qgemm_epilogue(w.colsum, w.scale, w.bias, xp, call.out_min, call.out_max,
                                               call.out_kind, call.out_params);
  qgemm_tiled(kern, m, w, ep, [&](size_t row0, size_t) { return ARows{in.a + row0 * in.stride, in.stride}; }, call.out,
              call.out_stride, threads);
  return xp;
}

}  // namespace edgeopt

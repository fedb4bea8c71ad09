// pybind11 layer: validates arrays, raises clear Python errors, releases the GIL, calls the ops.
// Arrays are accepted as they are (no forcecast): a wrong dtype or layout is an error, never a copy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "bindings/packed_args.h"
#include "bindings/quant_args.h"
#include "bindings/validate.h"
#include "config/cpu.h"
#include "ops/ceilings.h"
#include "ops/parallel.h"
#include "ops/qlinear.h"
#include "pack/qs8_packed.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;

void register_float_linear(py::module_& m);  // bindings/float_linear.cc (fp16 weights, low rank)
void register_qconv(py::module_& m);         // bindings/qconv.cc (int8 convolution)
void register_pool(py::module_& m);          // bindings/pool.cc (NHWC max and global average pooling)
void register_sparse(py::module_& m);        // bindings/sparse.cc (block-sparse layers)
void register_runtime(py::module_& m);       // bindings/runtime.cc (thread pool read-outs, execution plans)

namespace {

py::array_t<uint8_t> qs8_pack(const py::array& w, const py::array& scale, const py::object& bias) {
  require_dtype<int8_t>(w, "weight");
  require_dtype<float>(scale, "scale");
  if (w.ndim() != 2) value_error("weight must be 2-D (out_features, in_features)");
  require_c_contiguous(w, "weight");
  require_c_contiguous(scale, "scale");
  const size_t n = size_t(w.shape(0)), k = size_t(w.shape(1));
  if (scale.ndim() != 1 || size_t(scale.shape(0)) != n) value_error("scale must have shape (out_features,)");
  py::array bias_arr;
  const float* bias_ptr = optional_bias(bias, n, bias_arr);
  if (n == 0 || k == 0) value_error("cannot pack an empty weight matrix");
  py::array_t<uint8_t> out(qs8_packed_size(n, k));
  try {
    pack_qs8_weights(static_cast<const int8_t*>(w.data()), static_cast<const float*>(scale.data()), bias_ptr, n, k,
                     out.mutable_data(), size_t(out.size()));
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

py::dict qs8_packed_info(const py::array& packed) {
  const Qs8PackedView v = qs8_view(packed);
  try {
    // Once per load, O(n*k): a buffer from a file must meet every assumption the kernels make.
    validate_qs8_contents(v);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  py::dict d;
  d["version"] = v.header.version;
  d["format"] = v.header.format;
  d["out_features"] = v.n();
  d["in_features"] = v.k();
  d["has_bias"] = bool(v.header.has_bias);
  d["weight_max"] = v.header.weight_max;
  return d;
}

py::tuple qs8_unpack(const py::array& packed) {
  const Qs8PackedView v = qs8_view(packed);
  py::array_t<int8_t> w({v.n(), v.k()});
  py::array_t<float> scale(v.n()), bias(v.n());
  unpack_qs8_weights(v, w.mutable_data(), scale.mutable_data(), bias.mutable_data());
  return py::make_tuple(w, scale, bias);
}

py::tuple qlinear_py(const py::array& x, const py::array& packed, py::array& out, bool dynamic, float x_scale,
                     int x_zero_point, float out_min, float out_max, float out_scale, int out_zero_point,
                     int num_threads) {
  const Qs8PackedView w = qs8_view(packed);
  QLinearCall call;
  fill_quant_args(call, x, out, dynamic, x_scale, x_zero_point, out_min, out_max, out_scale, out_zero_point,
                  num_threads);
  fill_linear_rows(call, x, out, w.k(), w.n());
  const U8QuantParams used = call_without_gil([&] { return qlinear(w, call); });
  return py::make_tuple(used.scale, used.zero_point);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgeopt native core (framework-free: numpy arrays in, numpy arrays out)";

  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The ISA path the kernels run on.");
  m.def(
      "set_isa", [](const std::string& name) { set_active_isa(parse_isa(name.c_str())); }, py::arg("name"),
      "Switch the kernel path ('ref' or 'avx2'); raises if this CPU cannot run it.");
  m.def("cpu_info", [] {
    const CpuInfo& c = cpu_info();
    py::dict d;
    d["brand"] = std::string(c.brand);
    d["avx2"] = c.avx2;
    d["avx512f"] = c.avx512f;
    return d;
  });
  m.def("set_worker_spin_us", &set_worker_spin_us, py::arg("microseconds"));
  m.def("worker_spin_us", &worker_spin_us);
  m.def("pool_worker_count", &pool_worker_count);
  m.def(
      "_parallel_selftest",
      [](int calls, int threads) {
        py::gil_scoped_release release;
        return parallel_selftest(calls, threads);
      },
      py::arg("calls"), py::arg("threads"),
      "Stress the pool with calls of changing task counts; returns how many tasks ran other than once.");
  m.def(
      "measure_ceiling",
      [](const std::string& kind, double seconds, int num_threads) {
        if (num_threads < 1) value_error("num_threads must be >= 1");
        if (!(seconds > 0.0) || seconds > 60.0) value_error("seconds must be in (0, 60]");
        CeilingResult r;
        {
          py::gil_scoped_release release;
          r = measure_ceiling(kind, seconds, num_threads);
        }
        return py::make_tuple(r.units, r.seconds);
      },
      py::arg("kind"), py::arg("seconds") = 0.2, py::arg("num_threads") = 1,
      "Machine ceiling: 'f32_fma' (flops), 's8_madd' (int8 MACs), 'read' (bytes). Returns (units, seconds).");

  m.def(
      "choose_u8_params",
      [](float lo, float hi) {
        const U8QuantParams p = choose_u8_params(lo, hi);
        return py::make_tuple(p.scale, p.zero_point);
      },
      py::arg("lo"), py::arg("hi"), "Affine uint8 (scale, zero_point) covering [min(lo,0), max(hi,0)].");
  m.attr("QS8_WEIGHT_MAX") = int(kQGemmWeightMax);
  m.attr("PACK_VERSION") = int(kPackVersion);
  m.def("qs8_pack", &qs8_pack, py::arg("weight"), py::arg("scale"), py::arg("bias") = py::none(),
        "Pack int8 weights (out_features, in_features) in [-63, 63] with per-channel scales and optional bias.");
  m.def("qs8_unpack", &qs8_unpack, py::arg("packed"), "Inverse of qs8_pack: (weight, scale, bias).");
  m.def("qs8_packed_info", &qs8_packed_info, py::arg("packed"), "Validate a packed buffer and describe it.");
  m.def("qlinear", &qlinear_py, py::arg("x"), py::arg("packed"), py::arg("out"), py::arg("dynamic"),
        py::arg("x_scale") = 1.0f, py::arg("x_zero_point") = 0, py::arg("out_min") = -INFINITY,
        py::arg("out_max") = INFINITY, py::arg("out_scale") = 1.0f, py::arg("out_zero_point") = 0,
        py::arg("num_threads") = 1,
        "out = epilogue(quant_u8(x) @ W^T). x: (M, K) float32 or uint8; out: (M, N) float32, uint8 or int32 "
        "(int32 = exact integer result). Returns the input (scale, zero_point) used.");
  register_float_linear(m);
  register_qconv(m);
  register_pool(m);
  register_sparse(m);
  register_runtime(m);
}

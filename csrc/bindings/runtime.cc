// pybind11 bindings of the thread pool's read-outs (ops/parallel.h) and of execution plans
// (runtime/plan.h); registered from module.cc.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <tuple>
#include <string>
#include <vector>

#include "bindings/conv_args.h"
#include "bindings/packed_args.h"
#include "bindings/validate.h"
#include "ops/parallel.h"
#include "runtime/nodes.h"
#include "runtime/plan.h"

namespace py = pybind11;
using namespace edgeopt;
using namespace edgeopt::bind;
using edgeopt::runtime::DType;
using edgeopt::runtime::ValueId;

namespace {

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::kF32;
  if (name == "uint8") return DType::kU8;
  value_error("plan values are 'float32' or 'uint8', got '" + name + "'");
}

runtime::ConvWindow conv_window(const Pair& kernel, const Pair& stride, const Pair& padding, const Pair& dilation) {
  check_window(kernel, stride, padding, dilation);
  runtime::ConvWindow w;
  w.kernel_h = size_t(kernel[0]);
  w.kernel_w = size_t(kernel[1]);
  w.stride_h = size_t(stride[0]);
  w.stride_w = size_t(stride[1]);
  w.pad_h = size_t(padding[0]);
  w.pad_w = size_t(padding[1]);
  w.dilation_h = size_t(dilation[0]);
  w.dilation_w = size_t(dilation[1]);
  return w;
}

py::tuple shape_tuple(const runtime::Shape& s) { return py::make_tuple(s.n, s.h, s.w, s.c); }

runtime::Shape parse_shape(const py::sequence& dims) {
  if (py::len(dims) != 4) value_error("a plan shape is (n, h, w, c)");
  return runtime::Shape{dims[0].cast<size_t>(), dims[1].cast<size_t>(), dims[2].cast<size_t>(), dims[3].cast<size_t>()};
}

// A plan as Python builds and runs it: the core plan plus the packed weight arrays its nodes point into
// (kept alive here; the core is framework-free and holds raw views).
class PyPlan {
 public:
  ValueId add_input(const std::string& dtype, int ndim, const std::string& name) {
    return rethrow_as_value_error([&] { return plan_.add_input(parse_dtype(dtype), ndim, name); });
  }

  ValueId add_qconv2d(ValueId x, const py::array& packed, Pair kernel, Pair stride, Pair padding, Pair dilation,
                      int64_t groups, bool dynamic, float x_scale, int x_zero_point, float out_min, float out_max,
                      bool out_uint8, float out_scale, int out_zero_point, const py::object& residual,
                      const std::string& name) {
    const runtime::ConvWindow win = conv_window(kernel, stride, padding, dilation);
    const runtime::QuantIO q =
        quant_io(x, dynamic, x_scale, x_zero_point, out_min, out_max, out_uint8, out_scale, out_zero_point);
    const bool has_residual = !residual.is_none();
    std::vector<ValueId> inputs{x};
    if (has_residual) {
      const ValueId r = residual.cast<ValueId>();
      if (plan_dtype(r) != DType::kF32) type_error(name + ": the residual must be a float32 value");
      inputs.push_back(r);
    }
    std::unique_ptr<runtime::Node> node;
    const size_t taps = win.kernel_h * win.kernel_w;
    if (is_depthwise_pack(packed)) {
      const QdwPackedView w = dw_view(packed);
      if (groups != int64_t(w.channels()) || w.taps() != taps)
        value_error(name + ": depthwise weights are for " + std::to_string(w.channels()) + " channels x " +
                    std::to_string(w.taps()) + " taps; the node has groups=" + std::to_string(groups) + ", " +
                    std::to_string(taps) + " taps");
      if (win.kernel_h > 32) value_error(name + ": depthwise filters taller than 32 rows are not supported");
      node = runtime::make_qdwconv_node(w, win, q, has_residual);
    } else {
      std::vector<Qs8PackedView> views = group_views(packed, groups);
      if (views[0].k() % taps != 0)
        value_error(name + ": weights of " + std::to_string(views[0].k()) + " inputs per group do not fit a " +
                    std::to_string(win.kernel_h) + "x" + std::to_string(win.kernel_w) + " kernel");
      node = runtime::make_qconv_node(std::move(views), size_t(groups), win, q, has_residual);
    }
    return add(std::move(node), std::move(inputs), q.out_dtype, name, packed);
  }

  ValueId add_qlinear(ValueId x, const py::array& packed, bool dynamic, float x_scale, int x_zero_point,
                      float out_min, float out_max, const std::string& name) {
    const runtime::QuantIO q = quant_io(x, dynamic, x_scale, x_zero_point, out_min, out_max, false, 1.0f, 0);
    return add(runtime::make_qlinear_node(qs8_view(packed), q), {x}, DType::kF32, name, packed);
  }

  ValueId add_max_pool2d(ValueId x, Pair kernel, Pair stride, Pair padding, Pair dilation, bool ceil_mode,
                         const std::string& name) {
    const runtime::ConvWindow win = conv_window(kernel, stride, padding, dilation);
    for (int i = 0; i < 2; ++i)
      if (padding[i] > kernel[i] / 2) value_error(name + ": padding must be at most half the kernel size (as in torch)");
    const DType t = plan_dtype(x);
    return add(runtime::make_maxpool_node(win, ceil_mode, t), {x}, t, name, py::none());
  }

  ValueId add_global_avg_pool2d(ValueId x, float x_scale, int x_zero_point, bool out_uint8, float out_scale,
                                int out_zero_point, const std::string& name) {
    if (plan_dtype(x) != DType::kU8) type_error(name + ": the global average pool takes uint8 input");
    const runtime::QuantIO q =
        quant_io(x, false, x_scale, x_zero_point, -INFINITY, INFINITY, out_uint8, out_scale, out_zero_point);
    return add(runtime::make_global_avgpool_node(q.x_params, q.out_dtype, q.out_params), {x}, q.out_dtype, name,
               py::none());
  }

  ValueId add_flatten(ValueId x, const std::string& name) {
    const DType t = plan_dtype(x);
    return add(runtime::make_flatten_node(t), {x}, t, name, py::none());
  }

  void mark_output(ValueId v) {
    rethrow_as_value_error([&] {
      plan_.mark_output(v);
      return 0;
    });
    output_ids_.push_back(v);
  }

  std::string dtype(ValueId v) { return runtime::dtype_name(plan_dtype(v)); }

  py::list setup(const std::vector<py::sequence>& shapes) {
    std::vector<runtime::Shape> in;
    for (const auto& s : shapes) in.push_back(parse_shape(s));
    return shapes_list(rethrow_as_value_error([&] { return plan_.setup(in); }));
  }

  py::list infer_output_shapes(const std::vector<py::sequence>& shapes) {
    std::vector<runtime::Shape> in;
    for (const auto& s : shapes) in.push_back(parse_shape(s));
    return shapes_list(rethrow_as_value_error([&] { return plan_.infer_output_shapes(in); }));
  }

  // inputs: arrays as the caller holds them (images in NCHW logical order with any strides, or rows);
  // outputs: NHWC-contiguous (or rows) arrays of the shapes setup returned, written in place.
  void run(const std::vector<py::array>& inputs, std::vector<py::array>& outputs, int num_threads) {
    if (num_threads < 1) value_error("num_threads must be >= 1");
    std::vector<runtime::ExternalTensor> ins;
    for (const py::array& a : inputs) {
      runtime::ExternalTensor t;
      if (has_dtype<float>(a)) {
        t.dtype = DType::kF32;
      } else if (has_dtype<uint8_t>(a)) {
        t.dtype = DType::kU8;
      } else {
        type_error("plan inputs must be float32 or uint8, got " + dtype_name(a));
      }
      if (a.ndim() != 4 && a.ndim() != 2) value_error("plan inputs are 4-D or 2-D, got " + std::to_string(a.ndim()) + "-D");
      t.ndim = int(a.ndim());
      for (int d = 0; d < t.ndim; ++d) {
        if (a.strides(d) % a.itemsize() != 0) value_error("plan input strides must be multiples of the element size");
        t.dims[d] = a.shape(d);
        t.strides[d] = a.strides(d) / a.itemsize();
      }
      t.data = a.data();
      ins.push_back(t);
    }
    std::vector<void*> outs;
    std::vector<runtime::Shape> in_shapes;
    for (const auto& t : ins) in_shapes.push_back(runtime::shape_of(t));
    const std::vector<runtime::Shape> expected = rethrow_as_value_error([&] { return plan_.reshape(in_shapes); });
    if (outputs.size() != expected.size())
      value_error("the plan has " + std::to_string(expected.size()) + " outputs, got " + std::to_string(outputs.size()));
    for (size_t j = 0; j < outputs.size(); ++j) {
      py::array& o = outputs[j];
      require_c_contiguous(o, "plan output");
      if (!o.writeable()) value_error("plan output is read-only");
      const std::string want = runtime::dtype_name(plan_.dtype(output_ids_[j]));
      if (dtype_name(o) != want) type_error("plan output " + std::to_string(j) + " must be " + want + ", got " + dtype_name(o));
      if (size_t(o.size()) != expected[j].elements())
        value_error("plan output " + std::to_string(j) + " must hold " + expected[j].str() + ", got " +
                    std::to_string(o.size()) + " elements");
      outs.push_back(o.mutable_data());
    }
    call_without_gil([&] {
      try {
        plan_.run(ins, outs, num_threads);
      } catch (const std::invalid_argument& e) {
        throw std::domain_error(e.what());  // reported as ValueError by call_without_gil
      }
      return 0;
    });
  }

  py::list node_times() const {
    py::list out;
    for (const auto& t : plan_.node_times()) {
      py::dict d;
      d["name"] = t.name;
      d["op"] = t.op;
      d["ns"] = t.ns;
      d["runs"] = t.runs;
      d["macs"] = t.macs;
      out.append(d);
    }
    return out;
  }

  void reset_times() { plan_.reset_times(); }
  uint64_t run_ns() const { return plan_.run_ns(); }
  uint64_t runs() const { return plan_.runs(); }
  size_t arena_bytes() const { return plan_.arena_bytes(); }
  size_t num_nodes() const { return plan_.num_nodes(); }

 private:
  DType plan_dtype(ValueId v) {
    return rethrow_as_value_error([&] { return plan_.dtype(v); });
  }

  runtime::QuantIO quant_io(ValueId x, bool dynamic, float x_scale, int x_zero_point, float out_min, float out_max,
                            bool out_uint8, float out_scale, int out_zero_point) {
    runtime::QuantIO q;
    q.in_dtype = plan_dtype(x);
    if (q.in_dtype == DType::kU8 && dynamic)
      value_error("a uint8 input carries its own quantization parameters; dynamic must be False");
    if (!dynamic) {
      if (!(x_scale > 0.0f) || !std::isfinite(x_scale)) value_error("input scale must be positive and finite");
      if (x_zero_point < 0 || x_zero_point > 255) value_error("input zero point must be in [0, 255]");
    }
    q.dynamic = dynamic;
    q.x_params = {x_scale, x_zero_point};
    if (!(out_min <= out_max)) value_error("clamp bounds must satisfy min <= max (and not be NaN)");
    q.out_min = out_min;
    q.out_max = out_max;
    q.out_dtype = out_uint8 ? DType::kU8 : DType::kF32;
    if (out_uint8) {
      if (!(out_scale > 0.0f) || !std::isfinite(out_scale)) value_error("output scale must be positive and finite");
      if (out_zero_point < 0 || out_zero_point > 255) value_error("output zero point must be in [0, 255]");
    }
    q.out_params = {out_scale, out_zero_point};
    return q;
  }

  ValueId add(std::unique_ptr<runtime::Node> node, std::vector<ValueId> inputs, DType out_dtype,
              const std::string& name, const py::object& keep) {
    node->name = name;
    node->inputs = std::move(inputs);
    const ValueId v = rethrow_as_value_error([&] { return plan_.add_node(std::move(node), out_dtype); });
    if (!keep.is_none()) keep_alive_.push_back(keep);
    return v;
  }

  static py::list shapes_list(const std::vector<runtime::Shape>& shapes) {
    py::list out;
    for (const auto& s : shapes) out.append(shape_tuple(s));
    return out;
  }

  runtime::Plan plan_;
  std::vector<ValueId> output_ids_;
  std::vector<py::object> keep_alive_;
};

}  // namespace

void register_runtime(py::module_& m) {
  m.def(
      "pool_stats",
      [] {
        const PoolStats s = pool_stats();
        py::dict d;
        d["calls"] = s.calls;
        d["inline_calls"] = s.inline_calls;
        d["tasks"] = s.tasks;
        d["caller_tasks"] = s.caller_tasks;
        d["woke_sleepers"] = s.woke_sleepers;
        d["caller_sleeps"] = s.caller_sleeps;
        d["caller_wait_ns"] = s.caller_wait_ns;
        d["preemptions"] = s.preemptions;
        d["regions"] = s.regions;
        return d;
      },
      "What the thread pool has done since the process started (monotonic counters; subtract two readings).");
  // A context manager over ParallelRegion, for calls made from Python (tests, module-by-module runs).
  struct PyRegion {
    int threads;
    std::unique_ptr<ParallelRegion> region;
  };
  py::class_<PyRegion>(m, "ParallelRegion",
                       "with ParallelRegion(threads): keep the pool's workers hot between the native calls inside.")
      .def(py::init([](int threads) { return PyRegion{threads, nullptr}; }), py::arg("num_threads"))
      .def("__enter__", [](PyRegion& r) { r.region = std::make_unique<ParallelRegion>(r.threads); return &r; },
           py::return_value_policy::reference)
      .def("__exit__", [](PyRegion& r, py::args) { r.region.reset(); });
  m.def(
      "_pool_workload",
      [](int layers, int tasks, double task_us, int num_threads, bool region) {
        if (layers < 1 || tasks < 1 || !(task_us > 0) || num_threads < 1) value_error("arguments must be positive");
        py::gil_scoped_release release;
        return pool_workload(layers, tasks, task_us, num_threads, region);
      },
      py::arg("layers"), py::arg("tasks"), py::arg("task_us"), py::arg("num_threads"), py::arg("region") = true,
      "Benchmark hook: seconds of one synthetic inference (layers x tasks CPU-bound tasks of ~task_us).");
  m.def("set_region_spin_us", &set_region_spin_us, py::arg("microseconds"),
        "How long idle workers spin between the calls of one plan invocation (default 2000).");
  m.def("region_spin_us", &region_spin_us);
  m.def("set_contended_spin_us", &set_contended_spin_us, py::arg("microseconds"),
        "How long idle workers spin on a contended machine (default 50).");
  m.def("contended_spin_us", &contended_spin_us);
  m.def("pool_contended", &pool_contended, "Whether a pool thread was preempted within the last 100 ms.");

  m.def(
      "_plan_arena",
      [](const std::vector<std::tuple<size_t, size_t, size_t>>& requests) {
        std::vector<runtime::ArenaRequest> r;
        for (const auto& [bytes, first, last] : requests) {
          if (last < first) value_error("a request's last use comes before its first");
          r.push_back({bytes, first, last});
        }
        const runtime::ArenaLayout layout = runtime::plan_arena(r);
        return py::make_tuple(layout.offsets, layout.total_bytes);
      },
      py::arg("requests"), "Test hook: arena offsets for (bytes, first_use, last_use) requests, and the total.");
  m.attr("ARENA_ALIGNMENT") = runtime::kArenaAlignment;

  py::class_<PyPlan>(m, "Plan",
                     "An execution plan: nodes over values, run as one native call (see csrc/runtime/plan.h).")
      .def(py::init<>())
      .def("add_input", &PyPlan::add_input, py::arg("dtype"), py::arg("ndim"), py::arg("name") = "input")
      .def("add_qconv2d", &PyPlan::add_qconv2d, py::arg("x"), py::arg("packed"), py::arg("kernel"), py::arg("stride"),
           py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("dynamic"), py::arg("x_scale"),
           py::arg("x_zero_point"), py::arg("out_min"), py::arg("out_max"), py::arg("out_uint8"),
           py::arg("out_scale"), py::arg("out_zero_point"), py::arg("residual") = py::none(), py::arg("name") = "")
      .def("add_qlinear", &PyPlan::add_qlinear, py::arg("x"), py::arg("packed"), py::arg("dynamic"),
           py::arg("x_scale"), py::arg("x_zero_point"), py::arg("out_min"), py::arg("out_max"), py::arg("name") = "")
      .def("add_max_pool2d", &PyPlan::add_max_pool2d, py::arg("x"), py::arg("kernel"), py::arg("stride"),
           py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"), py::arg("name") = "")
      .def("add_global_avg_pool2d", &PyPlan::add_global_avg_pool2d, py::arg("x"), py::arg("x_scale"),
           py::arg("x_zero_point"), py::arg("out_uint8"), py::arg("out_scale"), py::arg("out_zero_point"),
           py::arg("name") = "")
      .def("add_flatten", &PyPlan::add_flatten, py::arg("x"), py::arg("name") = "")
      .def("mark_output", &PyPlan::mark_output, py::arg("value"))
      .def("dtype", &PyPlan::dtype, py::arg("value"))
      .def("setup", &PyPlan::setup, py::arg("input_shapes"),
           "Shapes of the outputs (NHWC) for these NHWC input shapes; lays out the arena for them.")
      .def("infer_output_shapes", &PyPlan::infer_output_shapes, py::arg("input_shapes"))
      .def("run", &PyPlan::run, py::arg("inputs"), py::arg("outputs"), py::arg("num_threads"))
      .def("node_times", &PyPlan::node_times, "Per node: name, op, total ns, runs, MACs per run.")
      .def("reset_times", &PyPlan::reset_times)
      .def_property_readonly("run_ns", &PyPlan::run_ns)
      .def_property_readonly("runs", &PyPlan::runs)
      .def_property_readonly("arena_bytes", &PyPlan::arena_bytes)
      .def_property_readonly("num_nodes", &PyPlan::num_nodes);
}

// pybind11 bindings of the thread pool's read-outs (ops/parallel.h) and of the execution plan
// (runtime/plan.h); registered from module.cc.
#include <pybind11/pybind11.h>

#include <memory>

#include "ops/parallel.h"

namespace py = pybind11;
using namespace edgeopt;

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
  m.def("set_region_spin_us", &set_region_spin_us, py::arg("microseconds"),
        "How long idle workers spin between the calls of one plan invocation (default 2000).");
  m.def("region_spin_us", &region_spin_us);
  m.def("set_contended_spin_us", &set_contended_spin_us, py::arg("microseconds"),
        "How long idle workers spin on a contended machine (default 50).");
  m.def("contended_spin_us", &contended_spin_us);
  m.def("pool_contended", &pool_contended, "Whether a pool thread was preempted within the last 100 ms.");
}

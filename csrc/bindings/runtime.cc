// pybind11 bindings of the thread pool's read-outs (ops/parallel.h) and of the execution plan
// (runtime/plan.h); registered from module.cc.
#include <pybind11/pybind11.h>

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
        return d;
      },
      "What the thread pool has done since the process started (monotonic counters; subtract two readings).");
}

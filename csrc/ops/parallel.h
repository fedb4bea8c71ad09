// The one threading story of edgeopt: parallel_for over task indices on a small persistent pool.
//
// Why not OpenMP: an OpenMP region ends at a barrier that waits for *every* team thread, so one thread
// descheduled by an unrelated busy process stalls the whole call (PyTorch's 4-25x slowdowns with one
// core busy), and PyTorch already ships its own libgomp, so a second OpenMP runtime would spin against
// it. Here a call is complete when every *task* has run: tasks are claimed from one atomic counter by
// whichever thread is running (the caller included), and a worker that wakes up late finds nothing left
// and goes back to sleep. The caller can always finish alone, so a call never waits for a sleeping thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace edgeopt {

// Runs fn(i) for every i in [0, n) using up to num_threads threads (the calling thread is one of them).
// Nested or concurrent calls run serially on the calling thread.
void parallel_for_raw(size_t n, int num_threads, void (*fn)(void* ctx, size_t i), void* ctx);

template <class F>
void parallel_for(size_t n, int num_threads, F&& fn) {
  using Fn = std::remove_reference_t<F>;
  parallel_for_raw(n, num_threads, [](void* ctx, size_t i) { (*static_cast<Fn*>(ctx))(i); }, const_cast<void*>(static_cast<const void*>(&fn)));
}

// Keeps the pool's workers spinning between the calls made while it lives -- the layers of one inference,
// which follow each other within microseconds -- so that no call has to wake a sleeping worker. It wakes
// them as it starts, so their wake-up overlaps the caller's own work before the first call. On a
// contended machine (a pool thread was preempted in the last 100 ms) workers sleep between calls as
// outside a region: a spinning worker is preempted mid-task, a sleeping one is woken promptly.
// Regions nest; one opened inside a task does nothing.
class ParallelRegion {
 public:
  explicit ParallelRegion(int num_threads);
  ~ParallelRegion();
  ParallelRegion(const ParallelRegion&) = delete;
  ParallelRegion& operator=(const ParallelRegion&) = delete;

 private:
  bool active_;
  long caller_switches_ = 0;
};

// How long idle workers spin (microseconds) before sleeping; spinning makes back-to-back calls cheap,
// sleeping leaves the core to others. Outside regions default 50; inside regions default 2000; on a
// contended machine default 50.
void set_worker_spin_us(int us);
int worker_spin_us();
void set_region_spin_us(int us);
int region_spin_us();
void set_contended_spin_us(int us);
int contended_spin_us();
// Whether a pool thread was preempted by another process within the last 100 ms.
bool pool_contended();
// Threads created so far (workers only), for `edgeopt info` and tests.
int pool_worker_count();
// What the pool has done since the process started (monotonic; subtract two readings).
struct PoolStats {
  uint64_t calls = 0;           // parallel_for calls shared with workers
  uint64_t inline_calls = 0;    // calls the caller ran alone (one thread, one task)
  uint64_t tasks = 0;           // tasks of the shared calls
  uint64_t caller_tasks = 0;    // ... of which the calling thread ran
  uint64_t woke_sleepers = 0;   // shared calls that had to wake a sleeping worker (a futex wake)
  uint64_t caller_sleeps = 0;   // shared calls whose caller slept: a worker holding a task was off its CPU
  uint64_t caller_wait_ns = 0;  // time callers spent waiting for workers after the last task was claimed
  uint64_t preemptions = 0;     // involuntary context switches seen on pool threads (workers, region callers)
  uint64_t regions = 0;         // ParallelRegions opened
};
PoolStats pool_stats();
// Benchmark hook: seconds of one synthetic inference, `layers` calls of `tasks` CPU-bound tasks of ~task_us.
double pool_workload(int layers, int tasks, double task_us, int num_threads, bool region);
// Test hook: `calls` calls with changing task counts; returns how many tasks did not run exactly once.
long parallel_selftest(int calls, int num_threads);

}  // namespace edgeopt

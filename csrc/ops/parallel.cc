#include "ops/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>
#include <thread>

namespace edgeopt {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

std::atomic<int> g_spin_us{50};
constexpr int kCallerSpinUs = 20;
// Set while this thread runs pool tasks, so a parallel_for inside a task runs inline.
thread_local bool t_in_task = false;

struct TaskScope {
  TaskScope() { t_in_task = true; }
  ~TaskScope() { t_in_task = false; }
};

// Counters of what the pool did, for bench/ and the runtime's profile (relaxed: read while idle).
struct Counters {
  std::atomic<uint64_t> calls{0}, inline_calls{0}, tasks{0}, caller_tasks{0}, woke_sleepers{0}, caller_sleeps{0},
      caller_wait_ns{0};
};
Counters g_counters;

inline void bump(std::atomic<uint64_t>& c, uint64_t by = 1) { c.fetch_add(by, std::memory_order_relaxed); }

class Pool {
 public:
  void run(size_t n, int num_threads, void (*fn)(void*, size_t), void* ctx) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock()) {  // another thread's call holds the pool: do this one here
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    ensure_workers(num_threads - 1);
    participants_.store(num_threads - 1, std::memory_order_relaxed);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = ++gen_counter_;
    job_.store((uint64_t(gen) << 32) | n, std::memory_order_release);
    claim_.store(uint64_t(gen) << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      generation_.notify_all();
      bump(g_counters.woke_sleepers);
    }
    const size_t mine = run_tasks(gen);
    const auto t0 = std::chrono::steady_clock::now();
    wait_done(n);
    bump(g_counters.calls);
    bump(g_counters.tasks, n);
    bump(g_counters.caller_tasks, mine);
    bump(g_counters.caller_wait_ns,
         uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count()));
  }

  // The tasks left are inside workers. Normally they finish within microseconds: spin. If one does not,
  // its worker was most likely descheduled by another process; then sleep rather than spin or yield, so
  // this core goes idle and the kernel's idle balancing pulls the preempted worker onto it at once
  // (sched_yield would leave the core busy and the worker queued behind the other process).
  void wait_done(size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kCallerSpinUs);
    for (unsigned spins = 0;; ++spins) {
      if (done_.load(std::memory_order_acquire) >= n) return;
      cpu_relax();
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
    }
    caller_waiting_.store(true, std::memory_order_seq_cst);
    bump(g_counters.caller_sleeps);
    for (size_t d = done_.load(std::memory_order_seq_cst); d < n; d = done_.load(std::memory_order_seq_cst))
      done_.wait(d, std::memory_order_seq_cst);
    caller_waiting_.store(false, std::memory_order_relaxed);
  }

  void ensure_workers(int count) {
    for (int index = worker_count_.load(); index < count; ++index) {
      std::thread([this, index] { worker_loop(index); }).detach();
      worker_count_.store(index + 1);
    }
  }

  int worker_count() const { return worker_count_.load(); }

 private:
  // Claims and runs tasks of generation gen until none is left. Both the claim word (generation, next
  // index) and the job word (generation, task count) carry the generation, so a thread that stalls
  // between reading them can never pair an old call's index with a newer call's count. A successful claim
  // pins the call (it cannot complete before this task does), so fn_/ctx_ are still that call's.
  // Returns how many tasks this thread ran.
  size_t run_tasks(uint32_t gen) {
    TaskScope scope;
    size_t ran = 0;
    for (;;) {
      uint64_t c = claim_.load(std::memory_order_acquire);
      if (uint32_t(c >> 32) != gen) return ran;
      const uint64_t job = job_.load(std::memory_order_acquire);
      if (uint32_t(job >> 32) != gen) return ran;
      const size_t n = size_t(job & 0xffffffffu);
      if ((c & 0xffffffffu) >= n) return ran;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
      ++ran;
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), size_t(c & 0xffffffffu));
      done_.fetch_add(1, std::memory_order_seq_cst);
      if (caller_waiting_.load(std::memory_order_seq_cst)) done_.notify_all();
    }
  }

  void worker_loop(int index) {
    uint32_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      uint32_t gen = generation_.load(std::memory_order_acquire);
      if (gen == seen) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(g_spin_us.load());
        for (unsigned spins = 0; gen == seen; ++spins) {
          cpu_relax();
          if ((spins & 255) == 255 && std::chrono::steady_clock::now() > deadline) break;
          gen = generation_.load(std::memory_order_acquire);
        }
        if (gen == seen) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          generation_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
          continue;
        }
      }
      seen = gen;
      if (index < participants_.load(std::memory_order_relaxed)) run_tasks(gen);
    }
  }

  std::mutex submit_;
  std::atomic<int> worker_count_{0};
  uint32_t gen_counter_ = 0;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint64_t> job_{0};
  std::atomic<size_t> done_{0};
  std::atomic<void (*)(void*, size_t)> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> participants_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_waiting_{false};
};

// Leaked on purpose: workers are detached and may outlive static destruction at interpreter exit.
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p == nullptr) {
    static std::once_flag once;
    std::call_once(once, [] {
      g_pool.store(new Pool, std::memory_order_release);
      // A forked child has none of the parent's workers: give it a fresh pool.
      pthread_atfork(nullptr, nullptr, [] { g_pool.store(new Pool, std::memory_order_release); });
    });
    p = g_pool.load(std::memory_order_acquire);
  }
  return *p;
}

}  // namespace

void parallel_for_raw(size_t n, int num_threads, void (*fn)(void*, size_t), void* ctx) {
  if (n == 0) return;
  // Inline: one thread asked for, one task, a call from inside a task, or more tasks than a claim word holds.
  if (num_threads <= 1 || n == 1 || t_in_task || n >= 0xffffffffu) {
    if (!t_in_task) bump(g_counters.inline_calls);
    for (size_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  // More threads than hardware threads only adds wake-ups and descheduling.
  const int hardware = std::max(1, int(std::thread::hardware_concurrency()));
  num_threads = std::min({num_threads, hardware, int(n)});
  pool().run(n, num_threads, fn, ctx);
}

void set_worker_spin_us(int us) { g_spin_us.store(us < 0 ? 0 : us); }
int worker_spin_us() { return g_spin_us.load(); }
int pool_worker_count() { return pool().worker_count(); }

PoolStats pool_stats() {
  PoolStats s;
  s.calls = g_counters.calls.load(std::memory_order_relaxed);
  s.inline_calls = g_counters.inline_calls.load(std::memory_order_relaxed);
  s.tasks = g_counters.tasks.load(std::memory_order_relaxed);
  s.caller_tasks = g_counters.caller_tasks.load(std::memory_order_relaxed);
  s.woke_sleepers = g_counters.woke_sleepers.load(std::memory_order_relaxed);
  s.caller_sleeps = g_counters.caller_sleeps.load(std::memory_order_relaxed);
  s.caller_wait_ns = g_counters.caller_wait_ns.load(std::memory_order_relaxed);
  return s;
}

}  // namespace edgeopt

namespace edgeopt {

long parallel_selftest(int calls, int num_threads) {
  // Changing task counts between calls is the case where a stale worker could pair an old call's index
  // with a new call's count; zero spin makes workers sleep and wake late as often as possible.
  static const size_t kCounts[] = {3, 17, 1, 64, 2, 33};
  const int saved_spin = worker_spin_us();
  set_worker_spin_us(0);
  long errors = 0;
  std::vector<std::atomic<int>> hits(64);
  for (int call = 0; call < calls; ++call) {
    const size_t n = kCounts[size_t(call) % (sizeof kCounts / sizeof kCounts[0])];
    for (size_t i = 0; i < n; ++i) hits[i].store(0, std::memory_order_relaxed);
    parallel_for(n, num_threads, [&](size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); });
    for (size_t i = 0; i < n; ++i) errors += hits[i].load(std::memory_order_relaxed) != 1;
  }
  set_worker_spin_us(saved_spin);
  return errors;
}

}  // namespace edgeopt

#include "ops/parallel.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace edgeopt {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

std::atomic<int> g_spin_us{50};

class Pool {
 public:
  void run(size_t n, int num_threads, void (*fn)(void*, size_t), void* ctx) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock()) {  // nested or concurrent: the pool is busy, do it here
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    ensure_workers(num_threads - 1);
    participants_.store(num_threads - 1, std::memory_order_relaxed);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = ++gen_counter_;
    claim_.store(uint64_t(gen) << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
    run_tasks(gen);
    for (unsigned spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
      // A worker is inside a task; it finishes soon unless it was descheduled, in which case yield
      // the core to it rather than burn it.
      if (spins < 4096) cpu_relax(); else sched_yield();
    }
  }

  void ensure_workers(int count) {
    while (int(workers_.size()) < count) {
      const int index = int(workers_.size());
      workers_.emplace_back([this, index] { worker_loop(index); });
      workers_.back().detach();
    }
  }

  int worker_count() { return int(workers_.size()); }

 private:
  // Claims and runs tasks of generation gen until none is left. The claim word packs (generation,
  // next index), so a late thread can never claim a task of a newer call by mistake; a successful claim
  // pins the call (it cannot complete before this task does), so fn_/ctx_ are still that call's.
  void run_tasks(uint32_t gen) {
    for (;;) {
      uint64_t c = claim_.load(std::memory_order_acquire);
      if (uint32_t(c >> 32) != gen) return;
      const size_t n = n_.load(std::memory_order_relaxed);
      if ((c & 0xffffffffu) >= n) return;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), size_t(c & 0xffffffffu));
      done_.fetch_add(1, std::memory_order_release);
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
  std::vector<std::thread> workers_;
  uint32_t gen_counter_ = 0;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<size_t> n_{0};
  std::atomic<size_t> done_{0};
  std::atomic<void (*)(void*, size_t)> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> participants_{0};
  std::atomic<int> sleepers_{0};
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
  if (num_threads <= 1 || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  if (size_t(num_threads) > n) num_threads = int(n);
  pool().run(n, num_threads, fn, ctx);
}

void set_worker_spin_us(int us) { g_spin_us.store(us < 0 ? 0 : us); }
int worker_spin_us() { return g_spin_us.load(); }
int pool_worker_count() { return pool().worker_count(); }

}  // namespace edgeopt

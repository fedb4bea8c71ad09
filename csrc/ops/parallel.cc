#include "ops/parallel.h"

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
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

using Clock = std::chrono::steady_clock;

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

std::atomic<int> g_spin_us{50};
std::atomic<int> g_region_spin_us{2000};
std::atomic<int> g_contended_spin_us{50};
// How often a waiting caller looks at whether the workers holding tasks are on a CPU, and how much of
// that interval a running worker must have run to count as running (its CPU clock advances with wall
// time while it runs; a descheduled one's stands still).
constexpr int64_t kOnCpuCheckNs = 10'000;
constexpr double kOnCpuFraction = 0.5;
// After an involuntary preemption of a pool thread, treat the machine as contended this long.
constexpr int64_t kContendedHoldNs = 100'000'000;
// Workers beyond this are never created (hardware threads bound the count long before).
constexpr int kMaxWorkers = 255;

// Set while this thread runs pool tasks, so a parallel_for inside a task runs inline.
thread_local bool t_in_task = false;

struct TaskScope {
  TaskScope() { t_in_task = true; }
  ~TaskScope() { t_in_task = false; }
};

// Counters of what the pool did, for bench/ and the runtime's profile (relaxed: read while idle).
struct Counters {
  std::atomic<uint64_t> calls{0}, inline_calls{0}, tasks{0}, caller_tasks{0}, woke_sleepers{0}, caller_sleeps{0},
      caller_wait_ns{0}, preemptions{0}, regions{0};
};
Counters g_counters;

inline void bump(std::atomic<uint64_t>& c, uint64_t by = 1) { c.fetch_add(by, std::memory_order_relaxed); }

// Involuntary context switches of the calling thread so far.
long involuntary_switches() {
  rusage ru;
  return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : 0;
}

int64_t cpu_time_ns(clockid_t clock) {
  timespec ts;
  if (clock_gettime(clock, &ts) != 0) return -1;
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// One worker's state that the caller reads while it waits.
struct WorkerSlot {
  std::atomic<bool> holding{false};  // between its first claim attempt of a call and the end of its tasks
  std::atomic<bool> clock_ready{false};
  clockid_t cpu_clock{};
  int64_t last_cpu_ns = 0;  // caller-private: the CPU clock at the caller's previous look
};

class Pool {
 public:
  Pool() : slots_(new WorkerSlot[kMaxWorkers]) {}

  void run(size_t n, int num_threads, void (*fn)(void*, size_t), void* ctx) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock()) {  // another thread's call holds the pool: do this one here
      for (size_t i = 0; i < n; ++i) fn(ctx, i);
      return;
    }
    const uint32_t gen = publish(n, num_threads, fn, ctx);
    const size_t mine = run_tasks(gen);
    const int64_t t0 = now_ns();
    wait_done(n, num_threads - 1);
    bump(g_counters.calls);
    bump(g_counters.tasks, n);
    bump(g_counters.caller_tasks, mine);
    bump(g_counters.caller_wait_ns, uint64_t(now_ns() - t0));
  }

  // Wakes sleeping workers with an empty call, so that they are spinning (not asleep) when the first call
  // of a region arrives: their wake-up overlaps the caller's own work before it.
  void wake(int num_threads) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    publish(0, num_threads, nullptr, nullptr);
  }

  int worker_count() const { return worker_count_.load(); }

 private:
  uint32_t publish(size_t n, int num_threads, void (*fn)(void*, size_t), void* ctx) {
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
    return gen;
  }

  // The tasks left are inside workers. Spin while every worker holding one is running: it finishes
  // within a task's time, and a sleeping caller would pay a wake-up (on a VM, a halted vCPU's). A worker
  // whose CPU clock stands still was descheduled, most likely by another process, possibly onto this
  // very core behind the caller: then sleep, so this core is free for it, and let it wake the caller.
  void wait_done(size_t n, int workers) {
    if (done_.load(std::memory_order_acquire) >= n) return;
    int64_t last_check = now_ns();
    for (int i = 0; i < workers; ++i) {
      WorkerSlot& s = slots_[i];
      if (s.clock_ready.load(std::memory_order_acquire)) s.last_cpu_ns = cpu_time_ns(s.cpu_clock);
    }
    for (unsigned spins = 0;; ++spins) {
      if (done_.load(std::memory_order_acquire) >= n) return;
      cpu_relax();
      if ((spins & 63) != 63) continue;
      const int64_t now = now_ns();
      if (now - last_check < kOnCpuCheckNs) continue;
      if (!holders_running(workers, now - last_check)) break;
      last_check = now;
    }
    note_contention();
    caller_waiting_.store(true, std::memory_order_seq_cst);
    bump(g_counters.caller_sleeps);
    for (size_t d = done_.load(std::memory_order_seq_cst); d < n; d = done_.load(std::memory_order_seq_cst))
      done_.wait(d, std::memory_order_seq_cst);
    caller_waiting_.store(false, std::memory_order_relaxed);
  }

  // Whether every worker that holds a task ran for most of the last `interval_ns`.
  bool holders_running(int workers, int64_t interval_ns) {
    bool running = true;
    for (int i = 0; i < workers; ++i) {
      WorkerSlot& s = slots_[i];
      if (!s.clock_ready.load(std::memory_order_acquire)) continue;
      const int64_t cpu = cpu_time_ns(s.cpu_clock);
      if (s.holding.load(std::memory_order_acquire) && cpu - s.last_cpu_ns < int64_t(kOnCpuFraction * interval_ns))
        running = false;
      s.last_cpu_ns = cpu;
    }
    return running;
  }

  void ensure_workers(int count) {
    count = std::min(count, kMaxWorkers);
    for (int index = worker_count_.load(); index < count; ++index) {
      std::thread([this, index] { worker_loop(index); }).detach();
      worker_count_.store(index + 1);
    }
  }

  // Claims and runs tasks of generation gen until none is left; returns how many this thread ran. Both
  // the claim word (generation, next index) and the job word (generation, task count) carry the
  // generation, so a thread that stalls between reading them can never pair an old call's index with a
  // newer call's count. A successful claim pins the call (it cannot complete before this task does), so
  // fn_/ctx_ are still that call's.
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

  // How long an idle worker spins for the next call before it sleeps. Inside a region (the layers of one
  // inference follow each other within microseconds) long, so no call has to wake it; but not when the
  // machine is contended: a worker that spins looks like a CPU hog to the scheduler and is preempted in
  // the middle of a task, stalling the call, while one that sleeps between calls is woken promptly.
  int64_t spin_budget_ns() const {
    const bool in_region = regions_active.load(std::memory_order_relaxed) > 0;
    if (contended()) return int64_t(g_contended_spin_us.load(std::memory_order_relaxed)) * 1000;
    return int64_t(in_region ? std::max(g_region_spin_us.load(std::memory_order_relaxed), g_spin_us.load())
                             : g_spin_us.load(std::memory_order_relaxed)) *
           1000;
  }

  void worker_loop(int index) {
    WorkerSlot& slot = slots_[index];
    if (pthread_getcpuclockid(pthread_self(), &slot.cpu_clock) == 0)
      slot.clock_ready.store(true, std::memory_order_release);
    long switches = involuntary_switches();
    uint32_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      uint32_t gen = generation_.load(std::memory_order_acquire);
      if (gen == seen) {
        const int64_t start = now_ns();
        for (unsigned spins = 0; gen == seen; ++spins) {
          cpu_relax();
          if ((spins & 255) == 255 && now_ns() - start > spin_budget_ns()) break;
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
      if (index < participants_.load(std::memory_order_relaxed)) {
        slot.holding.store(true, std::memory_order_seq_cst);
        const size_t ran = run_tasks(gen);
        slot.holding.store(false, std::memory_order_release);
        if (ran > 0) {
          const long now_switches = involuntary_switches();
          if (now_switches != switches) {
            note_contention();
            bump(g_counters.preemptions);
          }
          switches = now_switches;
        }
      }
    }
  }

 public:
  static bool contended() { return now_ns() < contended_until.load(std::memory_order_relaxed); }
  static void note_contention() { contended_until.store(now_ns() + kContendedHoldNs, std::memory_order_relaxed); }

  static inline std::atomic<int64_t> contended_until{0};
  static inline std::atomic<int> regions_active{0};

 private:
  std::unique_ptr<WorkerSlot[]> slots_;
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

// More threads than hardware threads only adds wake-ups and descheduling.
int usable_threads(int requested) {
  const int hardware = std::max(1, int(std::thread::hardware_concurrency()));
  return std::min(requested, hardware);
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
  num_threads = std::min(usable_threads(num_threads), int(n));
  pool().run(n, num_threads, fn, ctx);
}

ParallelRegion::ParallelRegion(int num_threads) : active_(num_threads > 1 && !t_in_task) {
  if (!active_) return;
  num_threads = usable_threads(num_threads);
  caller_switches_ = involuntary_switches();
  Pool::regions_active.fetch_add(1, std::memory_order_relaxed);
  bump(g_counters.regions);
  if (num_threads > 1) pool().wake(num_threads);
}

ParallelRegion::~ParallelRegion() {
  if (!active_) return;
  Pool::regions_active.fetch_sub(1, std::memory_order_relaxed);
  // A caller preempted during the region shares its core with another process: the machine is contended.
  if (involuntary_switches() != caller_switches_) {
    Pool::note_contention();
    bump(g_counters.preemptions);
  }
}

void set_worker_spin_us(int us) { g_spin_us.store(us < 0 ? 0 : us); }
int worker_spin_us() { return g_spin_us.load(); }
void set_region_spin_us(int us) { g_region_spin_us.store(us < 0 ? 0 : us); }
int region_spin_us() { return g_region_spin_us.load(); }
void set_contended_spin_us(int us) { g_contended_spin_us.store(us < 0 ? 0 : us); }
int contended_spin_us() { return g_contended_spin_us.load(); }
int pool_worker_count() { return pool().worker_count(); }
bool pool_contended() { return Pool::contended(); }

PoolStats pool_stats() {
  PoolStats s;
  s.calls = g_counters.calls.load(std::memory_order_relaxed);
  s.inline_calls = g_counters.inline_calls.load(std::memory_order_relaxed);
  s.tasks = g_counters.tasks.load(std::memory_order_relaxed);
  s.caller_tasks = g_counters.caller_tasks.load(std::memory_order_relaxed);
  s.woke_sleepers = g_counters.woke_sleepers.load(std::memory_order_relaxed);
  s.caller_sleeps = g_counters.caller_sleeps.load(std::memory_order_relaxed);
  s.caller_wait_ns = g_counters.caller_wait_ns.load(std::memory_order_relaxed);
  s.preemptions = g_counters.preemptions.load(std::memory_order_relaxed);
  s.regions = g_counters.regions.load(std::memory_order_relaxed);
  return s;
}

// A synthetic inference for the pool's own benchmark: `layers` calls of `tasks` CPU-bound tasks of about
// task_us each (a fixed count of dependent integer operations, calibrated once on one thread, so a task
// that is descheduled takes longer instead of ending on time). Returns the seconds of one inference.
namespace {

uint64_t busy_work(uint64_t iterations, uint64_t seed) {
  uint64_t x = seed | 1;
  for (uint64_t i = 0; i < iterations; ++i) x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x;
}

double iterations_per_us() {
  static const double rate = [] {
    const uint64_t n = 2'000'000;
    busy_work(n, 1);
    const auto t0 = Clock::now();
    volatile uint64_t sink = busy_work(n, 2);
    (void)sink;
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    return double(n) / std::max(us, 1.0);
  }();
  return rate;
}

}  // namespace

double pool_workload(int layers, int tasks, double task_us, int num_threads, bool region) {
  const uint64_t iterations = uint64_t(task_us * iterations_per_us());
  std::vector<uint64_t> sink(size_t(std::max(tasks, 1)));
  const auto t0 = Clock::now();
  {
    std::unique_ptr<ParallelRegion> r = region ? std::make_unique<ParallelRegion>(num_threads) : nullptr;
    for (int layer = 0; layer < layers; ++layer)
      parallel_for(size_t(tasks), num_threads, [&](size_t t) { sink[t] += busy_work(iterations, t + layer); });
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  volatile uint64_t keep = sink[0];
  (void)keep;
  return s;
}

}  // namespace edgeopt

namespace edgeopt {

long parallel_selftest(int calls, int num_threads) {
  // Changing task counts between calls is the case where a stale worker could pair an old call's index
  // with a new call's count; zero spin makes workers sleep and wake late as often as possible. Every
  // other call runs inside a region (workers woken by an empty call, then spinning).
  static const size_t kCounts[] = {3, 17, 1, 64, 2, 33};
  const int saved_spin = worker_spin_us(), saved_region = region_spin_us();
  set_worker_spin_us(0);
  set_region_spin_us(0);
  long errors = 0;
  std::vector<std::atomic<int>> hits(64);
  for (int call = 0; call < calls; ++call) {
    const size_t n = kCounts[size_t(call) % (sizeof kCounts / sizeof kCounts[0])];
    for (size_t i = 0; i < n; ++i) hits[i].store(0, std::memory_order_relaxed);
    if (call % 2) {
      ParallelRegion region(num_threads);
      parallel_for(n, num_threads, [&](size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); });
    } else {
      parallel_for(n, num_threads, [&](size_t i) { hits[i].fetch_add(1, std::memory_order_relaxed); });
    }
    for (size_t i = 0; i < n; ++i) errors += hits[i].load(std::memory_order_relaxed) != 1;
  }
  set_worker_spin_us(saved_spin);
  set_region_spin_us(saved_region);
  return errors;
}

}  // namespace edgeopt

// mobilequant/runtime/parallel.cpp
#include "mobilequant/runtime/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mq::rt {

namespace {

thread_local bool tl_in_pool = false;  // set while a thread runs a pool job

/// A CPU hint for busy-wait loops.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// How long a worker (or the caller, waiting for the workers) spins before it sleeps. A
/// prefill issues its loops back to back, a few microseconds apart: a worker still spinning
/// starts the next loop at once, where a sleeping one needs a futex wake (tens of microseconds
/// on a virtual machine, for each of ~1000 loops per prefill).
constexpr auto kSpin = std::chrono::microseconds(300);

/// Spins until done() or the spin budget is spent; true if done() held.
template <class Done>
bool spin_until(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

/// A persistent pool: per job, workers take chunk indices from an atomic counter; the calling
/// thread takes chunks too. Between jobs a worker spins for kSpin, then sleeps on a condition
/// variable. One job at a time: a second caller (another thread, or a nested call) runs its
/// loop inline instead of waiting.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    stop_.store(true);
    {
      std::lock_guard<std::mutex> lock(mutex_);
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  /// Runs job(c) for c in [0, chunks) on the caller and up to `helpers` workers. False if the
  /// pool is busy (the caller then runs the loop itself).
  bool run(int64_t chunks, int helpers, const std::function<void(int64_t)>& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || tl_in_pool) return false;
    job_ = &job;
    chunks_ = chunks;
    next_.store(0, std::memory_order_relaxed);
    const int active = std::min(helpers, workers());
    pending_.store(active, std::memory_order_relaxed);
    // Publishes the job (release): a worker that reads the new word sees it all. The word
    // carries the number of workers wanted, so that a worker never reads a later job's count.
    word_ = (word_ & ~kActiveMask) + (uint64_t{1} << kActiveBits) + static_cast<uint64_t>(active);
    generation_.store(word_, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      // A worker that found the old generation under the mutex is waiting by now.
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    tl_in_pool = true;
    drain();
    tl_in_pool = false;
    auto finished = [this] { return pending_.load(std::memory_order_acquire) == 0; };
    while (!spin_until(finished)) std::this_thread::yield();
    job_ = nullptr;
    return true;
  }

 private:
  void drain() {
    for (int64_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) (*job_)(c);
  }
  void work(int index) {
    tl_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      auto changed = [&] {
        return stop_.load(std::memory_order_acquire) ||
               generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(changed)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, changed);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      if (static_cast<uint64_t>(index) >= (seen & kActiveMask)) continue;  // not needed
      drain();
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_;   // one job at a time
  std::mutex mutex_;  // pairs with wake_ for sleeping workers
  std::condition_variable wake_;
  // The job: written by the caller before it bumps generation_, read by workers after.
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0;
  uint64_t word_ = 0;  // the caller's copy of generation_
  static constexpr int kActiveBits = 24;
  static constexpr uint64_t kActiveMask = (uint64_t{1} << kActiveBits) - 1;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};      // active workers not yet done with the job
  std::atomic<int> sleepers_{0};     // workers waiting on wake_
  std::atomic<uint64_t> generation_{0};  // (job counter << kActiveBits) | workers wanted
  std::atomic<bool> stop_{false};
};

Pool& pool() {
  static Pool p(std::max(resolve_threads(0) - 1, 0));
  return p;
}

}  // namespace

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(std::max(threads, 1), n);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  std::exception_ptr first_error;
  std::mutex mutex;
  const std::function<void(int64_t)> run = [&](int64_t c) {
    const int64_t begin = n * c / chunks;
    const int64_t end = n * (c + 1) / chunks;
    try {
      fn(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  if (!pool().run(chunks, static_cast<int>(chunks - 1), run)) {
    for (int64_t c = 0; c < chunks; ++c) run(c);  // busy or nested: inline, same chunks
  }
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace mq::rt

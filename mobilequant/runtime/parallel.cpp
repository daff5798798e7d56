// mobilequant/runtime/parallel.cpp
#include "mobilequant/runtime/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mobilequant/core/error.h"

namespace mq::rt {

namespace {

thread_local bool tl_in_pool = false;  // set while a thread runs a pool job

/// A CPU hint for busy-wait loops.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// How long a worker (or the caller, waiting for the last chunks) spins before it sleeps
/// (yields): MQ_RUNTIME_SPIN_US, default 50 µs. A prefill issues its loops back to back, a few
/// microseconds apart: a worker still spinning starts the next loop at once, where a sleeping
/// one needs a futex wake-up (tens of microseconds on a virtual machine, for each of ~1000
/// loops per prefill). 0 makes workers sleep at once.
std::chrono::microseconds spin_budget() {
  static const std::chrono::microseconds us = [] {
    const char* env = std::getenv("MQ_RUNTIME_SPIN_US");
    if (env == nullptr || *env == '\0') return std::chrono::microseconds(50);
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end == env || *end != '\0' || v < 0 || v > 1000000) {
      throw Error(std::string("MQ_RUNTIME_SPIN_US='") + env +
                  "': expected microseconds, an integer in [0, 1000000]");
    }
    return std::chrono::microseconds(v);
  }();
  return us;
}

/// Spins until done() or the spin budget is spent; true if done() held.
template <class Done>
bool spin_until(Done&& done) {
  if (done()) return true;
  const auto budget = spin_budget();
  if (budget.count() == 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

/// A persistent pool. Per job, the caller and up to `helpers` workers claim chunk indices
/// from one atomic word (job number, chunk count, next chunk), so that a worker that wakes
/// late finds the job taken or finished and claims nothing; the caller waits only for chunks
/// that were claimed, never for a worker to show up. Between jobs a worker spins for
/// spin_budget(), then sleeps on a condition variable. One job at a time: a second caller
/// (another thread, or a nested call) runs its loop inline instead of waiting.
class Pool {
  static constexpr int kNextBits = 20, kChunkBits = 20;  // claim_: job | chunks | next
  static constexpr uint64_t kNextMask = (uint64_t{1} << kNextBits) - 1;
  static constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;
  static constexpr int kActiveBits = 24;                 // generation_: job | workers wanted
  static constexpr uint64_t kActiveMask = (uint64_t{1} << kActiveBits) - 1;

 public:
  /// The most chunks one job can have.
  static constexpr int64_t kMaxChunks = int64_t{1} << kChunkBits;

  explicit Pool(int workers) {
    (void)spin_budget();  // reads (and checks) MQ_RUNTIME_SPIN_US here, not on a worker
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    stop_.store(true);
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int workers() const { return static_cast<int>(threads_.size()); }

  /// Runs job(c) for c in [0, chunks) on the caller and up to `helpers` workers. False if the
  /// pool is busy (the caller then runs the loop itself).
  bool run(int64_t chunks, int helpers, const std::function<void(int64_t)>& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || tl_in_pool || chunks > kMaxChunks) return false;
    ++job_number_;
    const uint64_t tag = tag_of(job_number_);
    job_ = &job;
    done_.store(0, std::memory_order_relaxed);
    // Publishes the job (release): a claim of this word sees job_.
    claim_.store((tag << (kNextBits + kChunkBits)) | (static_cast<uint64_t>(chunks) << kNextBits),
                 std::memory_order_release);
    const uint64_t active = static_cast<uint64_t>(std::min(helpers, workers()));
    generation_.store((job_number_ << kActiveBits) | active, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      // A worker that found the old word under the mutex is waiting by now.
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    tl_in_pool = true;
    drain(tag);
    tl_in_pool = false;
    auto finished = [&] { return done_.load(std::memory_order_acquire) == chunks; };
    while (!spin_until(finished)) std::this_thread::yield();
    return true;
  }

 private:
  /// A job number's tag in claim_ (its low 24 bits).
  static uint64_t tag_of(uint64_t job) {
    return job & ((uint64_t{1} << (64 - kNextBits - kChunkBits)) - 1);
  }
  /// Claims and runs chunks of job `tag` until none is left.
  void drain(uint64_t tag) {
    for (;;) {
      uint64_t cur = claim_.load(std::memory_order_acquire);
      if ((cur >> (kNextBits + kChunkBits)) != tag) return;  // another job's word
      const uint64_t next = cur & kNextMask, chunks = (cur >> kNextBits) & kChunkMask;
      if (next >= chunks) return;
      if (!claim_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel)) continue;
      // Claimed: the job cannot finish before this chunk does, so job_ is this job's.
      (*job_)(static_cast<int64_t>(next));
      done_.fetch_add(1, std::memory_order_release);
    }
  }
  void work(int index) {
    tl_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      // seq_cst: with the sleepers_ increment below and the caller's store-then-load of
      // generation_ and sleepers_, either the caller sees a sleeper or the worker sees the job.
      auto changed = [&] {
        return stop_.load(std::memory_order_seq_cst) ||
               generation_.load(std::memory_order_seq_cst) != seen;
      };
      if (!spin_until(changed)) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, changed);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      if (static_cast<uint64_t>(index) >= (seen & kActiveMask)) continue;  // not wanted
      drain(tag_of(seen >> kActiveBits));
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_;   // one job at a time
  std::mutex mutex_;  // pairs with wake_ for sleeping workers
  std::condition_variable wake_;
  const std::function<void(int64_t)>* job_ = nullptr;  // written before claim_ is published
  uint64_t job_number_ = 0;                            // the caller's count of jobs
  std::atomic<uint64_t> claim_{0};       // (job tag << 40) | (chunks << 20) | next chunk
  std::atomic<int64_t> done_{0};         // chunks of the current job finished
  std::atomic<int> sleepers_{0};         // workers waiting on wake_
  std::atomic<uint64_t> generation_{0};  // (job number << kActiveBits) | workers wanted
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

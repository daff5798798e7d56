// mobilequant/runtime/parallel.cpp
#include "mobilequant/runtime/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mq::rt {

namespace {

thread_local bool tl_in_pool = false;  // set while a thread runs a pool job

/// A persistent pool: workers sleep on a condition variable and, per job, take chunk indices
/// from an atomic counter; the calling thread takes chunks too. One job at a time: a second
/// caller (another thread, or a nested call) runs its loop inline instead of waiting.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      chunks_ = chunks;
      next_.store(0);
      active_ = std::min(helpers, workers());
      pending_ = active_;
      ++generation_;
    }
    wake_.notify_all();
    tl_in_pool = true;
    drain();
    tl_in_pool = false;
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void drain() {
    for (int64_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) (*job_)(c);
  }
  void work() {
    tl_in_pool = true;
    uint64_t seen = 0;
    int index = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      index = joined_++;
    }
    for (;;) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index >= active_) continue;  // not needed for this job
      lock.unlock();
      drain();
      lock.lock();
      if (--pending_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex busy_;   // one job at a time
  std::mutex mutex_;  // the job's state
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0, pending_ = 0, joined_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
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

// tests/runtime/test_parallel.cpp: the runtime's thread pool (runtime/parallel.h). Every index
// runs exactly once, in contiguous chunks, for any n and thread count, over many loops issued
// back to back (the pattern of a prefill, where workers are still spinning from the last loop
// or wake late); an exception in a chunk reaches the caller and the pool keeps working; a
// nested loop runs inline; loops from two threads at once both complete.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mobilequant/runtime/parallel.h"

TEST_CASE("parallel_for runs every index once, loop after loop", "[unit]") {
  const int hw = mq::rt::resolve_threads(0);
  std::vector<std::atomic<int>> hits(1000);
  int loops = 0;
  for (int rep = 0; rep < 200; ++rep) {
    for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{17}, int64_t{1000}}) {
      for (const int threads : {1, 2, hw, hw + 3}) {
        for (auto& h : hits) h.store(0);
        std::atomic<bool> contiguous{true};
        mq::rt::parallel_for(n, threads, [&](int64_t b, int64_t e) {
          if (!(0 <= b && b < e && e <= n)) contiguous.store(false);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        });
        bool once = true;
        for (int64_t i = 0; i < 1000; ++i) once &= hits[static_cast<size_t>(i)].load() == (i < n ? 1 : 0);
        REQUIRE(contiguous.load());
        REQUIRE(once);
        ++loops;
      }
    }
  }
  CHECK(loops == 200 * 4 * 4);
}

TEST_CASE("parallel_for rethrows a chunk's exception and keeps working; nested loops run inline",
          "[unit]") {
  const int hw = std::max(mq::rt::resolve_threads(0), 2);
  CHECK_THROWS_WITH(mq::rt::parallel_for(64, hw,
                                         [](int64_t b, int64_t) {
                                           if (b == 0) throw std::runtime_error("chunk 0 failed");
                                         }),
                    "chunk 0 failed");
  std::atomic<int64_t> sum{0};
  mq::rt::parallel_for(100, hw, [&](int64_t b, int64_t e) {
    // A nested loop (runs inline on this thread).
    mq::rt::parallel_for(e - b, hw, [&](int64_t ib, int64_t ie) {
      for (int64_t i = ib; i < ie; ++i) sum.fetch_add(b + i);
    });
  });
  CHECK(sum.load() == 99 * 100 / 2);
  // Two threads issuing loops at once: one gets the pool, the other runs inline; both finish.
  std::atomic<int64_t> total{0};
  auto issue = [&] {
    for (int rep = 0; rep < 300; ++rep) {
      mq::rt::parallel_for(50, hw, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
    }
  };
  std::thread other(issue);
  issue();
  other.join();
  CHECK(total.load() == 2 * 300 * 50);
}

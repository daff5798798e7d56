// mobilequant/runtime/parallel.h
// The runtime's only threading primitive: split [0, n) into contiguous chunks, one per thread,
// and run them on a persistent pool (hardware threads - 1 workers, started on first use; the
// caller takes chunks too). Workers spin for MQ_RUNTIME_SPIN_US microseconds (default 50)
// after a loop before they sleep, and the caller waits only for chunks a worker has claimed. A prefill runs dozens of these loops per layer; starting threads
// per call cost about 40 ms per layer on a 16-core machine (results/2026-11-22-integer). A
// nested call, or one while another thread's loop runs, runs inline. Every kernel writes
// disjoint outputs per index and the chunks do not depend on who runs them, so results do not
// depend on the thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace mq::rt {

/// The thread count to use for a request: `requested` when > 0, else all hardware threads.
int resolve_threads(int requested);

/// Runs fn(begin, end) over contiguous chunks covering [0, n) on at most `threads` threads
/// (threads <= 1 or n <= 1: inline). The first exception thrown by any chunk is rethrown.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mq::rt

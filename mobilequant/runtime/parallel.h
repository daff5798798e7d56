// mobilequant/runtime/parallel.h
// The runtime's only threading primitive: split [0, n) into contiguous chunks, one per thread,
// and run them on std::threads (the caller's thread takes the first chunk). Threads are started
// per call: every caller runs milliseconds of work, so the ~20 us start cost does not matter and
// there is no pool state to share. Every kernel writes disjoint outputs per index, so results
// do not depend on the thread count.
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

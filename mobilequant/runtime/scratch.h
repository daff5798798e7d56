// mobilequant/runtime/scratch.h
// Per-thread scratch buffers for the runtime's kernels. A prefill calls each kernel once per
// layer with the same sizes; allocating and zero-filling its temporaries every time (megabytes
// per linear, on the calling thread while the others wait) cost more than some of the kernels'
// arithmetic. A scratch buffer is allocated on first use, grows when a call needs more, and is
// neither shrunk nor cleared: its contents are unspecified, every kernel writes before it reads.
//
// Each (element type, tag type) pair is one buffer per thread. A pointer stays valid until the
// same thread asks for the same pair again, so a kernel uses a tag of its own for each buffer
// and must not call itself (or another user of its tags) while holding one. Inside a
// parallel_for body the buffer is the running thread's own; a buffer filled by the caller is
// passed to the body as a pointer taken before the loop.
#pragma once

#include <cstddef>
#include <memory>

namespace mq::rt {

/// A buffer of at least n elements of T, private to this thread and to Tag (see above).
template <class T, class Tag>
T* scratch(size_t n) {
  struct Buffer {
    std::unique_ptr<T[]> data;
    size_t size = 0;
  };
  static thread_local Buffer b;
  if (b.size < n) {
    b.data.reset(new T[n]);  // default-initialized: no fill
    b.size = n;
  }
  return b.data.get();
}

}  // namespace mq::rt

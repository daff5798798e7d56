// mobilequant/train/denormal_guard.h
// Flush-to-zero and denormals-are-zero on the calling thread for a scope. Training on the CPU
// otherwise slows down about 20x after a few steps: Adam's second moments of parameters with
// tiny gradients (activation ranges, LWC bounds far in the sigmoid's tail) fall into the
// subnormal range, where x86 arithmetic takes a slow path. Values that small do not change
// any update, and the result stays deterministic.
#pragma once

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace mq {

/// Sets FTZ|DAZ in MXCSR while alive (x86; elsewhere it does nothing).
class DenormalGuard {
 public:
#if defined(__x86_64__) || defined(__SSE__)
  DenormalGuard() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~DenormalGuard() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#else
  DenormalGuard() = default;
#endif

 public:
  DenormalGuard(const DenormalGuard&) = delete;
  DenormalGuard& operator=(const DenormalGuard&) = delete;
};

}  // namespace mq

// mobilequant/core/py_random.h
// Python's `random` module, bit for bit, for the parts the reference's data loaders use:
// `random.seed(n)` (MT19937 init_by_array over the 32-bit words of |n|), `getrandbits(k)` and
// `randint(a, b)` (rejection sampling in `_randbelow_with_getrandbits`). With it our
// calibration windows are the very windows `random.seed(1337); randint(0, N - seqlen - 1)`
// draws in the reference (reference-implementation.md §5.1).
#pragma once

#include <array>
#include <cstdint>

namespace mq {

/// CPython's Mersenne Twister with `random.seed(int)` seeding.
class PyRandom {
 public:
  /// Same state as `random.seed(seed)` for a non-negative integer seed.
  explicit PyRandom(uint64_t seed);
  /// The next 32-bit output of MT19937 (genrand_uint32).
  uint32_t next_uint32();
  /// `random.getrandbits(k)` for 1 <= k <= 64.
  uint64_t getrandbits(int k);
  /// `random.randint(a, b)`: uniform in [a, b], both included; requires a <= b.
  int64_t randint(int64_t a, int64_t b);

 private:
  std::array<uint32_t, 624> mt_{};
  int index_ = 625;
};

}  // namespace mq

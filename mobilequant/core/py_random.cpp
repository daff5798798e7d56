// mobilequant/core/py_random.cpp
// CPython's Modules/_randommodule.c (init_genrand, init_by_array, genrand_uint32,
// random_seed for an int, _random_Random_getrandbits_impl) and Lib/random.py
// (randint -> randrange -> _randbelow_with_getrandbits), transcribed for the integer paths.
#include "mobilequant/core/py_random.h"

#include <vector>

#include "mobilequant/core/error.h"

namespace mq {
namespace {

constexpr int kN = 624;
constexpr int kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU;
constexpr uint32_t kUpperMask = 0x80000000U;
constexpr uint32_t kLowerMask = 0x7fffffffU;

/// init_genrand(s) of CPython's _randommodule.c.
void init_genrand(std::array<uint32_t, kN>& mt, uint32_t s) {
  mt[0] = s;
  for (int i = 1; i < kN; ++i) {
    mt[i] = 1812433253U * (mt[i - 1] ^ (mt[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
}

/// init_by_array(key) of CPython's _randommodule.c.
void init_by_array(std::array<uint32_t, kN>& mt, const std::vector<uint32_t>& key) {
  init_genrand(mt, 19650218U);
  const int key_length = static_cast<int>(key.size());
  int i = 1;
  int j = 0;
  for (int k = kN > key_length ? kN : key_length; k; --k) {
    mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525U)) + key[j] +
            static_cast<uint32_t>(j);  // non linear
    ++i;
    ++j;
    if (i >= kN) {
      mt[0] = mt[kN - 1];
      i = 1;
    }
    if (j >= key_length) j = 0;
  }
  for (int k = kN - 1; k; --k) {
    mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941U)) -
            static_cast<uint32_t>(i);  // non linear
    ++i;
    if (i >= kN) {
      mt[0] = mt[kN - 1];
      i = 1;
    }
  }
  mt[0] = 0x80000000U;  // MSB is 1, assuring a non-zero initial array
}

/// Python's int.bit_length() for a non-negative value.
int bit_length(uint64_t n) {
  int k = 0;
  while (n) {
    ++k;
    n >>= 1;
  }
  return k;
}

}  // namespace

PyRandom::PyRandom(uint64_t seed) {
  // random_seed(): the 32-bit words of |seed|, least significant first; 0 gives the key [0].
  std::vector<uint32_t> key;
  for (uint64_t n = seed; n != 0; n >>= 32) key.push_back(static_cast<uint32_t>(n & 0xffffffffU));
  if (key.empty()) key.push_back(0);
  init_by_array(mt_, key);
  index_ = kN;  // init_genrand leaves mti = N: the first draw regenerates the table
}

uint32_t PyRandom::next_uint32() {
  static constexpr uint32_t kMag01[2] = {0x0U, kMatrixA};
  if (index_ >= kN) {  // generate N words at one time
    int kk = 0;
    for (; kk < kN - kM; ++kk) {
      const uint32_t y = (mt_[kk] & kUpperMask) | (mt_[kk + 1] & kLowerMask);
      mt_[kk] = mt_[kk + kM] ^ (y >> 1) ^ kMag01[y & 0x1U];
    }
    for (; kk < kN - 1; ++kk) {
      const uint32_t y = (mt_[kk] & kUpperMask) | (mt_[kk + 1] & kLowerMask);
      mt_[kk] = mt_[kk + (kM - kN)] ^ (y >> 1) ^ kMag01[y & 0x1U];
    }
    const uint32_t y = (mt_[kN - 1] & kUpperMask) | (mt_[0] & kLowerMask);
    mt_[kN - 1] = mt_[kM - 1] ^ (y >> 1) ^ kMag01[y & 0x1U];
    index_ = 0;
  }
  uint32_t y = mt_[index_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= (y >> 18);
  return y;
}

uint64_t PyRandom::getrandbits(int k) {
  MQ_CHECK(k >= 1 && k <= 64, "PyRandom::getrandbits: got k=", k, ", expected 1 <= k <= 64");
  if (k <= 32) return next_uint32() >> (32 - k);
  // CPython fills 32-bit words least significant first; the last (most significant) word
  // keeps only its top k - 32 bits.
  const uint64_t low = next_uint32();
  const uint64_t high = next_uint32() >> (64 - k);
  return (high << 32) | low;
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  MQ_CHECK(a <= b, "PyRandom::randint: empty range [", a, ", ", b, "], expected a <= b");
  // randrange(a, b + 1) -> a + _randbelow(n) with n = b - a + 1 (wraps to 0 for 2^64).
  const uint64_t n = static_cast<uint64_t>(b) - static_cast<uint64_t>(a) + 1U;
  uint64_t r = 0;
  if (n == 0) {
    // n = 2^64 (the whole int64 range): k = 65, i.e. three words of which the last keeps one
    // bit; a draw with that bit set is >= n and redrawn.
    for (;;) {
      const uint64_t low = next_uint32();
      const uint64_t mid = next_uint32();
      if ((next_uint32() >> 31) == 0) {
        r = (mid << 32) | low;
        break;
      }
    }
  } else {
    // _randbelow_with_getrandbits: k = n.bit_length(); redraw until r < n.
    const int k = bit_length(n);
    r = getrandbits(k);
    while (r >= n) r = getrandbits(k);
  }
  return static_cast<int64_t>(static_cast<uint64_t>(a) + r);
}

}  // namespace mq

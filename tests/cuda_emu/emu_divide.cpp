// tests/cuda_emu/emu_divide.cpp
// div_rn (mobilequant/quant/fake_quantize_element.cuh), the division the fused kernels use for
// many values over one divisor, against IEEE fp32 division, bit for bit: every significand of
// the dividend in one binade (the quotient's rounding does not depend on the exponents while no
// step underflows or overflows, which the range checks keep) over divisors chosen to be hard
// (significands of all ones, one ulp above a power of two, small odd integers, the extremes of
// the fast range) and random ones, then random dividends of every exponent and the specials
// (0, -0, inf, NaN, subnormals) for the fallback. Exit status 0 when every quotient matches.
// ctest label cuda-emu (`scripts/test.sh cuda-emu`).
#include "emu.h"

#include "mobilequant/quant/fake_quantize_element.cuh"

#include <cstdio>
#include <limits>
#include <random>
#include <thread>

namespace {

uint32_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
float from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}
/// Same bits, or both NaN.
bool same(float a, float b) { return bits(a) == bits(b) || (std::isnan(a) && std::isnan(b)); }

/// Dividends a in [1, 2) (every significand) over b; returns the mismatches.
int64_t sweep_binade(float b) {
  const mq::Divisor d = mq::divisor(b);
  int64_t bad = 0;
  for (uint32_t m = 0; m < (1u << 23); ++m) {
    const float a = from_bits(0x3f800000u | m);
    if (!same(mq::div_rn(a, d), a / b) || !same(mq::div_rn(-a, d), -a / b)) {
      if (bad++ < 3) std::printf("  mismatch: %a / %a: %a, want %a\n", a, b, mq::div_rn(a, d), a / b);
    }
  }
  return bad;
}

}  // namespace

int main() {
  std::vector<float> divisors = {1.0f, 3.0f, 5.0f, 7.0f, 10.0f, 255.0f, 65535.0f,
                                 0x1.fffffep0f, 0x1.000002p0f, 0x1.fffffep-1f, 0x1.000002p-1f,
                                 0x1.fffffep39f, 0x1p40f, 0x1p-40f, 0x1.000002p-40f,
                                 0x1.555556p-2f, 0x1.99999ap-4f, -0x1.8p3f, 2047.5f, 0.003921569f};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> mant(0, (1u << 23) - 1);
  std::uniform_int_distribution<int> expo(-40, 39);
  while (divisors.size() < 400)
    divisors.push_back(std::ldexp(from_bits(0x3f800000u | mant(rng)), expo(rng)));
  // Two threads over the divisors (the machines that run the tests have two cores or more).
  std::vector<int64_t> bad(divisors.size(), 0);
  auto work = [&](size_t first) {
    for (size_t i = first; i < divisors.size(); i += 2) bad[i] = sweep_binade(divisors[i]);
  };
  std::thread other(work, 1);
  work(0);
  other.join();
  int64_t total = 0;
  for (size_t i = 0; i < divisors.size(); ++i) {
    if (bad[i] != 0) std::printf("FAIL b = %a: %ld of %u dividends differ\n", divisors[i],
                                 static_cast<long>(bad[i]), 2u << 23);
    total += bad[i];
  }
  std::printf("%s every significand of [1, 2) and its negation over %zu divisors\n",
              total == 0 ? "ok  " : "FAIL", divisors.size());
  // Every exponent, the fast range's edges, and the specials, over every divisor.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> dividends = {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                                  0x1p-80f, 0x1.fffffep-81f, 0x1p80f, 0x1.000002p80f,
                                  std::numeric_limits<float>::denorm_min(), 0x1p-126f,
                                  std::numeric_limits<float>::max()};
  for (int k = 0; k < 200000; ++k) dividends.push_back(from_bits(static_cast<uint32_t>(rng())));
  int64_t special_bad = 0;
  for (float b : divisors) {
    const mq::Divisor d = mq::divisor(b);
    for (float a : dividends)
      if (!same(mq::div_rn(a, d), a / b) && special_bad++ < 3)
        std::printf("  mismatch: %a / %a: %a, want %a\n", a, b, mq::div_rn(a, d), a / b);
  }
  for (float b : {0x1p-60f, 0x1p60f, 0.0f, inf, std::numeric_limits<float>::denorm_min()}) {
    const mq::Divisor d = mq::divisor(b);  // outside the fast range: __fdiv_rn throughout
    for (float a : dividends)
      if (!same(mq::div_rn(a, d), a / b) && special_bad++ < 6)
        std::printf("  mismatch: %a / %a: %a, want %a\n", a, b, mq::div_rn(a, d), a / b);
  }
  std::printf("%s %zu dividends of every exponent and the specials: %ld differ\n",
              special_bad == 0 ? "ok  " : "FAIL", dividends.size(), static_cast<long>(special_bad));
  total += special_bad;
  return total == 0 ? 0 : 1;
}

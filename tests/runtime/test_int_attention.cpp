// tests/runtime/test_int_attention.cpp: causal attention in row blocks (runtime/int_attention.h)
// against the whole-head kernels int_qk, int_softmax_row and int_pv (the reference path of the
// prefill, themselves checked against int64 loops in test_int_ops.cpp), exactly: any split of
// the rows into blocks, 8- and 16-bit q codes, a probability zero point inside and outside the
// code range (masked keys then add a nonzero term), depths that are not multiples of 4, both
// the one-pass path and the int64 one (16-bit q at D = 130), q and the context read and
// written in place in [T, heads, D] with the scores and probabilities not kept, on
// gemmlowp and, where the CPU has AVX-512 VNNI, on the VNNI kernels with their packed views.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "mobilequant/runtime/int_attention.h"
#include "mobilequant/runtime/int_ops.h"
#include "mobilequant/runtime/vnni_gemm.h"

namespace {

/// Restores the backend the environment chose when a test changes it.
struct BackendGuard {
  ~BackendGuard() { mq::rt::set_gemm_backend(mq::rt::GemmBackend::kAuto); }
};

std::vector<int32_t> codes(int64_t n, int32_t hi, std::mt19937_64& g) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& e : v) e = static_cast<int32_t>(g() % (static_cast<uint64_t>(hi) + 1));
  return v;
}

}  // namespace

TEST_CASE("causal_head_rows equals int_qk, int_softmax_row and int_pv exactly, in any row blocks",
          "[unit]") {
  using mq::rt::ActQuant;
  using mq::rt::Multiplier;
  BackendGuard guard;
  std::vector<mq::rt::GemmBackend> backends{mq::rt::GemmBackend::kGemmlowp};
  if (mq::rt::vnni_supported()) backends.push_back(mq::rt::GemmBackend::kVnni);
  else WARN("this CPU has no AVX-512 VNNI: only the gemmlowp path is checked here");
  std::mt19937_64 g(21);
  const int score_bits = 12;
  std::vector<int64_t> lut(1u << score_bits);  // [2^12] exp(-a i) with 52 fraction bits
  for (size_t i = 0; i < lut.size(); ++i) lut[i] = std::llround(std::ldexp(std::exp(-0.004 * i), 52));
  int checked = 0;
  bool narrow_seen = false, wide_seen = false;
  for (const auto backend : backends) {
    mq::rt::set_gemm_backend(backend);
    for (const int64_t t : {1, 7, 37}) {
      for (const int64_t d : {6, 8, 130}) {
        for (const int q_bits : {8, 16}) {
          for (const int32_t zp : {3, -5}) {
            mq::rt::AttentionQuant aq;
            // 16-bit q at D = 130 with zero points at the ends of the code ranges makes the
            // centered scores wider than int32: 130 * 65535 * 255 > 2^31.
            const bool wide = q_bits == 16 && d == 130;
            aq.q = ActQuant{q_bits, q_bits == 8 ? 121 : (wide ? 0 : 30000), 0.0};
            aq.k = ActQuant{8, wide ? 255 : 133, 0.0};
            aq.qk = Multiplier{static_cast<int64_t>((uint64_t{1} << 62) + g() % (uint64_t{1} << 62)),
                               q_bits == 8 ? 45 : 53};
            aq.scores = ActQuant{score_bits, 2048, 0.0};
            aq.exp_lut = lut.data();
            aq.exp_lut_size = static_cast<int64_t>(lut.size());
            aq.softmax = Multiplier{int64_t{1} << 62, 45};
            aq.probs = ActQuant{16, zp, 0.0};
            aq.v = ActQuant{8, 126, 0.0};
            aq.pv = Multiplier{static_cast<int64_t>((uint64_t{1} << 62) + g() % (uint64_t{1} << 62)), 69};
            aq.context = ActQuant{8, 128, 0.0};
            const auto q = codes(t * d, (1 << q_bits) - 1, g);  // [T, D]
            const auto k = codes(t * d, 255, g);                // [T, D]
            const auto v = codes(t * d, 255, g);                // [T, D]
            REQUIRE(mq::rt::causal_head_applies(aq));
            const bool narrow = mq::rt::causal_head_narrow(aq, d);
            CHECK(narrow == !wide);
            (narrow ? narrow_seen : wide_seen) = true;
            // The reference: the whole head at once, on int32/int64 loops (no GEMM).
            std::vector<int32_t> s_ref(static_cast<size_t>(t * t), 0);  // [T, T]
            std::vector<int32_t> p_ref(static_cast<size_t>(t * t));     // [T, T]
            std::vector<int32_t> c_ref(static_cast<size_t>(t * d));     // [T, D]
            mq::rt::int_qk(q.data(), k.data(), t, d, aq.q.zero_point, aq.k.zero_point, aq.qk,
                           aq.scores, s_ref.data());
            const int32_t masked = std::max(zp, 0);
            for (int64_t i = 0; i < t; ++i) {
              mq::rt::int_softmax_row(s_ref.data() + i * t, i + 1, lut.data(),
                                      static_cast<int64_t>(lut.size()), aq.softmax, aq.probs,
                                      p_ref.data() + i * t);
              std::fill(s_ref.begin() + i * t + i + 1, s_ref.begin() + (i + 1) * t, 0);
              std::fill(p_ref.begin() + i * t + i + 1, p_ref.begin() + (i + 1) * t, masked);
            }
            mq::rt::int_pv(p_ref.data(), v.data(), t, d, zp, aq.v.zero_point, aq.probs.qmax(),
                           aq.pv, aq.context, c_ref.data());
            const mq::rt::CausalHead head =
                mq::rt::prepare_causal_head(k.data(), v.data(), t, d, aq);
            for (const int64_t rb : {int64_t{1}, int64_t{5}, int64_t{16}, t}) {
              std::vector<int32_t> s(static_cast<size_t>(t * t), -7), p(s.size(), -7);
              std::vector<int32_t> c(static_cast<size_t>(t * d), -7);
              mq::rt::Uint8Gemm gemm(1);
              // Blocks in reverse order, as the prefill schedules them.
              for (int64_t i0 = (t - 1) / rb * rb; i0 >= 0; i0 -= rb) {
                mq::rt::causal_head_rows(head, aq, q.data(), i0, std::min(t, i0 + rb), gemm,
                                         s.data(), p.data(), c.data());
              }
              INFO("backend " << mq::rt::gemm_backend_name() << " T " << t << " D " << d
                              << " q bits " << q_bits << " z_p " << zp << " rows/block " << rb);
              CHECK(s == s_ref);
              CHECK(p == p_ref);
              CHECK(c == c_ref);
              // In place in [T, 3, D] (head 1), scores and probabilities not kept.
              std::vector<int32_t> q3(static_cast<size_t>(t * 3 * d), -1);  // [T, 3, D]
              for (int64_t i = 0; i < t; ++i)
                std::copy_n(q.data() + i * d, d, q3.data() + (i * 3 + 1) * d);
              std::vector<int32_t> c3(q3.size(), -7);                      // [T, 3, D]
              for (int64_t i0 = (t - 1) / rb * rb; i0 >= 0; i0 -= rb) {
                mq::rt::causal_head_rows(head, aq, q3.data() + d, i0, std::min(t, i0 + rb), gemm,
                                         nullptr, nullptr, c3.data() + d, 3 * d, 3 * d);
              }
              bool same = true, untouched = true;
              for (int64_t i = 0; i < t; ++i) {
                for (int64_t x = 0; x < d; ++x) {
                  same &= c3[static_cast<size_t>((i * 3 + 1) * d + x)] == c_ref[static_cast<size_t>(i * d + x)];
                  untouched &= c3[static_cast<size_t>(i * 3 * d + x)] == -7 &&
                               c3[static_cast<size_t>((i * 3 + 2) * d + x)] == -7;
                }
              }
              CHECK(same);
              CHECK(untouched);
              ++checked;
            }
          }
        }
      }
    }
  }
  CHECK(checked == static_cast<int>(backends.size()) * 3 * 3 * 2 * 2 * 4);
  CHECK(narrow_seen);
  CHECK(wide_seen);
  // The path takes 8-bit keys and values and at most 16-bit queries and probabilities.
  mq::rt::AttentionQuant aq;
  aq.probs = ActQuant{16, 0, 0.0};
  CHECK(mq::rt::causal_head_applies(aq));
  aq.v.bits = 16;
  CHECK_FALSE(mq::rt::causal_head_applies(aq));
  aq.v.bits = 8;
  aq.k.bits = 9;
  CHECK_FALSE(mq::rt::causal_head_applies(aq));
  aq.k.bits = 8;
  // Blocks outside the head are refused.
  const std::vector<int32_t> z(8, 0);
  const auto head = mq::rt::prepare_causal_head(z.data(), z.data(), 2, 4, aq);
  mq::rt::Uint8Gemm gemm(1);
  std::vector<int32_t> s(4), p(4), c(8);
  CHECK_THROWS_WITH(mq::rt::causal_head_rows(head, aq, z.data(), 1, 3, gemm, s.data(), p.data(),
                                             c.data()),
                    Catch::Contains("rows [1, 3) outside [0, 2)"));
}

// tests/runtime/test_vnni_gemm.cpp: the AVX-512 VNNI uint8 GEMM (runtime/vnni_gemm.h) against a
// naive int64 triple loop and against gemmlowp, exactly, over shapes that exercise every row
// and column tail of the 6 x 64 micro-tile and depths that are not multiples of 4. On a CPU
// without VNNI the product tests say so and check only the packing (the GPU machine's CPU has
// VNNI: scripts/gpu runs these tests there).
#include <catch2/catch.hpp>

#include <atomic>

#include <random>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/int_ops.h"
#include "mobilequant/runtime/vnni_gemm.h"

namespace {

constexpr int64_t kExact = 0;  // integer products: no tolerance

std::vector<uint8_t> random_codes(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(d(rng));
  return v;
}

/// Restores the backend the environment chose when a test changes it.
struct BackendGuard {
  ~BackendGuard() { mq::rt::set_gemm_backend(mq::rt::GemmBackend::kAuto); }
};

}  // namespace

TEST_CASE("VnniPackedB packs 16 columns x 4 depths per 64-byte vector, b - 128, zero padding",
          "[unit]") {
  std::mt19937 rng(7);
  const int64_t n = 17, k = 6;  // two column blocks, depth padded to 8
  const auto b = random_codes(n * k, rng);  // [N, K]
  const auto p = mq::rt::VnniPackedB::pack(b.data(), n, k);
  REQUIRE(p.k4 == 8);
  REQUIRE(p.blocks == 2);
  REQUIRE(p.data.size() == static_cast<size_t>(2 * 8 * 16));
  for (int64_t row = 0; row < 32; ++row) {
    for (int64_t kk = 0; kk < 8; ++kk) {
      const int8_t got = p.data[static_cast<size_t>((row / 16) * 8 * 16 + (kk / 4) * 64 +
                                                    (row % 16) * 4 + kk % 4)];
      const int expect = (row < n && kk < k) ? b[static_cast<size_t>(row * k + kk)] - 128 : 0;
      CHECK(int{got} == expect);
    }
  }
  CHECK_THROWS_WITH(mq::rt::VnniPackedB::pack(b.data(), 1, 40000),
                    Catch::Contains("K <= 33025"));
}

TEST_CASE("vnni_multiply equals the int64 triple loop and gemmlowp exactly", "[unit]") {
  if (!mq::rt::vnni_supported()) {
    WARN("this CPU has no AVX-512 VNNI: the VNNI products are not run here");
    CHECK_THROWS_WITH(mq::rt::set_gemm_backend(mq::rt::GemmBackend::kVnni),
                      Catch::Contains("no AVX-512 VNNI"));
    return;
  }
  BackendGuard guard;
  std::mt19937 rng(11);
  const std::vector<int64_t> ts{1, 5, 6, 7, 13, 64};
  const std::vector<int64_t> ns{1, 15, 16, 17, 63, 64, 65, 130};
  const std::vector<int64_t> ks{1, 3, 4, 5, 64, 577};
  for (const int64_t t : ts) {
    for (const int64_t n : ns) {
      for (const int64_t k : ks) {
        const auto a = random_codes(t * k, rng);  // [T, K]
        const auto b = random_codes(n * k, rng);  // [N, K]
        std::vector<int64_t> ref(static_cast<size_t>(t * n), 0);  // [T, N]
        for (int64_t i = 0; i < t; ++i)
          for (int64_t j = 0; j < n; ++j)
            for (int64_t x = 0; x < k; ++x)
              ref[static_cast<size_t>(i * n + j)] +=
                  int64_t{a[static_cast<size_t>(i * k + x)]} * b[static_cast<size_t>(j * k + x)];
        const auto packed = mq::rt::VnniPackedB::pack(b.data(), n, k);
        for (const int threads : {1, 3}) {
          std::vector<int32_t> c(static_cast<size_t>(t * n), -1);  // [T, N]
          mq::rt::vnni_multiply(a.data(), t, packed, threads, c.data());
          int64_t worst = 0;
          for (size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::abs(c[i] - ref[i]));
          INFO("T " << t << " N " << n << " K " << k << " threads " << threads);
          CHECK(worst == kExact);
          // The same through a tile sink, with the row sums given: every element once.
          std::vector<uint32_t> sums(static_cast<size_t>(t), 0);  // [T]
          for (int64_t i = 0; i < t; ++i)
            for (int64_t x = 0; x < k; ++x) sums[static_cast<size_t>(i)] += a[static_cast<size_t>(i * k + x)];
          std::vector<int32_t> via(static_cast<size_t>(t * n), -1);  // [T, N]
          std::vector<std::atomic<int>> seen(static_cast<size_t>(t * n));
          const mq::rt::VnniTileSink sink = [&](int64_t r0, int rows, int64_t c0, int cols,
                                                const int32_t* tile) {
            for (int r = 0; r < rows; ++r) {
              for (int j = 0; j < cols; ++j) {
                via[static_cast<size_t>((r0 + r) * n + c0 + j)] = tile[r * 64 + j];
                seen[static_cast<size_t>((r0 + r) * n + c0 + j)].fetch_add(1);
              }
            }
          };
          mq::rt::vnni_multiply(a.data(), t, packed, threads, nullptr, -1, -1, sums.data(), &sink);
          bool once = true;
          for (auto& e : seen) once &= e.load() == 1;
          CHECK(once);
          CHECK(via == c);
        }
        std::vector<int32_t> lowp(static_cast<size_t>(t * n)), vnni(lowp.size());  // [T, N]
        mq::rt::set_gemm_backend(mq::rt::GemmBackend::kGemmlowp);
        mq::rt::Uint8Gemm g(2);
        g.multiply(a.data(), b.data(), t, n, k, lowp.data());
        mq::rt::set_gemm_backend(mq::rt::GemmBackend::kVnni);
        g.multiply(a.data(), b.data(), t, n, k, vnni.data());  // packs per call
        INFO("T " << t << " N " << n << " K " << k << ": gemmlowp vs vnni");
        CHECK(lowp == vnni);
      }
    }
  }
  // The largest depth the int32 sums allow, all 255: 33025 * 255^2 = 2147450625 < 2^31.
  const int64_t k = 33025;
  const int64_t want = k * 255 * 255;
  REQUIRE(want < (int64_t{1} << 31));
  const std::vector<uint8_t> a(static_cast<size_t>(2 * k), 255), b(static_cast<size_t>(3 * k), 255);
  std::vector<int32_t> c(6);
  mq::rt::vnni_multiply(a.data(), 2, mq::rt::VnniPackedB::pack(b.data(), 3, k), 1, c.data());
  for (const int32_t v : c) CHECK(v == want);
}

TEST_CASE("vnni_multiply on a view (first rows, first depths) equals the smaller product exactly",
          "[unit]") {
  if (!mq::rt::vnni_supported()) {
    WARN("this CPU has no AVX-512 VNNI: the VNNI views are not run here");
    return;
  }
  std::mt19937 rng(17);
  const int64_t n = 70, k = 23;  // the packed operand
  const auto b = random_codes(n * k, rng);  // [N, K]
  const auto packed = mq::rt::VnniPackedB::pack(b.data(), n, k);
  for (const int64_t nv : {int64_t{1}, int64_t{16}, int64_t{33}, n}) {
    for (const int64_t kv : {int64_t{1}, int64_t{5}, int64_t{8}, int64_t{22}, k}) {
      const int64_t t = 7;
      const auto a = random_codes(t * kv, rng);  // [T, kv]
      std::vector<int32_t> c(static_cast<size_t>(t * nv), -1);  // [T, nv]
      mq::rt::vnni_multiply(a.data(), t, packed, 2, c.data(), nv, kv);
      int64_t worst = 0;
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = 0; j < nv; ++j) {
          int64_t ref = 0;
          for (int64_t x = 0; x < kv; ++x)
            ref += int64_t{a[static_cast<size_t>(i * kv + x)]} * b[static_cast<size_t>(j * k + x)];
          worst = std::max(worst, std::abs(c[static_cast<size_t>(i * nv + j)] - ref));
        }
      }
      INFO("view [" << nv << ", " << kv << "] of [" << n << ", " << k << "]");
      CHECK(worst == kExact);
    }
  }
  std::vector<int32_t> c(7);
  const auto a = random_codes(7 * k, rng);
  CHECK_THROWS_WITH(mq::rt::vnni_multiply(a.data(), 1, packed, 1, c.data(), n + 1, k),
                    Catch::Contains("view of a packed [70, 23] operand"));
}

TEST_CASE("vnni_lm_head equals the exact int64 dot product, also at |y| = |w| = 32767", "[unit]") {
  std::mt19937 rng(13);
  // Packing runs everywhere: 16 rows x 2 depths per vector, zero padding.
  {
    const std::vector<int16_t> w{1, 2, 3, 4, 5, 6};  // [2, 3]
    const auto p = mq::rt::VnniPackedI16::pack(w.data(), 2, 3);
    REQUIRE(p.k2 == 2);
    REQUIRE(p.blocks == 1);
    CHECK(p.data[0] == 1);
    CHECK(p.data[1] == 2);
    CHECK(p.data[2] == 4);   // row 1, depths 0 and 1
    CHECK(p.data[3] == 5);
    CHECK(p.data[32] == 3);  // row 0, depth pair 1: (3, 0)
    CHECK(p.data[33] == 0);
    CHECK(p.data[34] == 6);
  }
  if (!mq::rt::vnni_supported()) {
    WARN("this CPU has no AVX-512 VNNI: vnni_lm_head is not run here");
    return;
  }
  // Shapes: token tails of the 3-row tile, vocabulary tails of 16 and 64, odd depths, and a
  // depth past two int32 flushes (2 x 128 pairs).
  struct Shape { int64_t t, v, c; };
  for (const Shape sh : {Shape{1, 1, 1}, Shape{2, 17, 5}, Shape{4, 65, 64}, Shape{7, 130, 577},
                         Shape{3, 64, 600}}) {
    for (const bool extreme : {false, true}) {
      std::uniform_int_distribution<int> d(-32767, 32767), sign(0, 1);
      std::vector<int16_t> y(static_cast<size_t>(sh.t * sh.c)), w(static_cast<size_t>(sh.v * sh.c));
      for (auto& x : y) x = static_cast<int16_t>(extreme ? (sign(rng) ? 32767 : -32767) : d(rng));
      for (auto& x : w) x = static_cast<int16_t>(extreme ? (sign(rng) ? 32767 : -32767) : d(rng));
      if (extreme) std::fill(y.begin(), y.begin() + sh.c, int16_t{32767});  // one all-max row
      if (extreme) std::fill(w.begin(), w.begin() + sh.c, int16_t{32767});
      std::vector<float> scale(static_cast<size_t>(sh.v));
      std::uniform_real_distribution<float> u(1e-6f, 1e-3f);
      for (auto& s : scale) s = u(rng);
      const float s_f = 3e-4f;
      std::vector<float> got(static_cast<size_t>(sh.t * sh.v)), want(got.size());  // [T, V]
      for (int64_t i = 0; i < sh.t; ++i) {
        for (int64_t j = 0; j < sh.v; ++j) {
          int64_t acc = 0;
          for (int64_t x = 0; x < sh.c; ++x)
            acc += int64_t{y[static_cast<size_t>(i * sh.c + x)]} * w[static_cast<size_t>(j * sh.c + x)];
          const double sc = static_cast<double>(s_f) * static_cast<double>(scale[static_cast<size_t>(j)]);
          want[static_cast<size_t>(i * sh.v + j)] = static_cast<float>(sc * static_cast<double>(acc));
        }
      }
      const auto packed = mq::rt::VnniPackedI16::pack(w.data(), sh.v, sh.c);
      for (const int threads : {1, 3}) {
        mq::rt::vnni_lm_head(y.data(), sh.t, packed, scale.data(), s_f, threads, got.data());
        INFO("T " << sh.t << " V " << sh.v << " C " << sh.c << " extreme " << extreme << " threads "
                  << threads);
        CHECK(got == want);  // the same float from the same exact int64 sum: bitwise
      }
    }
  }
}

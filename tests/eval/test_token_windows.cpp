// tests/eval/test_token_windows.cpp
// The windowing rules: lm-eval's rolling windows (its documented example, every token scored
// exactly once, full-length later inputs), GPTQ's window count, document cuts.
#include <catch2/catch.hpp>

#include <numeric>

#include "mobilequant/eval/token_windows.h"

namespace {

/// The ids first..first+n-1.
std::vector<int64_t> iota_ids(int64_t n, int64_t first = 0) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

/// The scored targets of a window, in order.
std::vector<int64_t> targets(const mq::ScoringWindow& w) {
  return {w.tokens.end() - w.num_scored, w.tokens.end()};
}

}  // namespace

TEST_CASE("rolling windows reproduce lm-eval's documented example", "[unit]") {
  // loglikelihood_rolling's docstring: tokens 0..9, prefix EOT, max length 4 ->
  //   INPUT EOT 0 1 2 / PRED 0 1 2 3;  INPUT 3 4 5 6 / PRED 4 5 6 7;  INPUT 5 6 7 8 / PRED 8 9.
  constexpr int64_t kEot = 99;
  const auto w = mq::rolling_token_windows(iota_ids(10), kEot, 4, 7);
  REQUIRE(w.size() == 3);
  CHECK(w[0].tokens == std::vector<int64_t>{kEot, 0, 1, 2, 3});
  CHECK(w[0].num_scored == 4);
  CHECK(w[1].tokens == std::vector<int64_t>{3, 4, 5, 6, 7});
  CHECK(w[1].num_scored == 4);
  CHECK(w[2].tokens == std::vector<int64_t>{5, 6, 7, 8, 9});
  CHECK(w[2].num_scored == 2);
  for (const auto& x : w) CHECK(x.document == 7);
}

TEST_CASE("rolling windows score every token exactly once after an EOS prefix", "[unit]") {
  constexpr int64_t kEos = 2;
  for (int64_t n : {1, 5, 16, 17, 33, 100}) {
    for (int64_t max_len : {1, 2, 7, 16, 200}) {
      const auto ids = iota_ids(n, 10);
      const auto w = mq::rolling_token_windows(ids, kEos, max_len);
      INFO("n=" << n << " max_length=" << max_len);
      REQUIRE(!w.empty());
      CHECK(w.front().tokens.front() == kEos);
      std::vector<int64_t> scored;
      for (size_t i = 0; i < w.size(); ++i) {
        const auto t = targets(w[i]);
        scored.insert(scored.end(), t.begin(), t.end());
        CHECK(w[i].input_length() <= max_len);
        // Every window after the first has a full-length input.
        if (i > 0) CHECK(w[i].input_length() == max_len);
        CHECK(w[i].num_scored >= 1);
      }
      CHECK(scored == ids);
      CHECK(mq::count_scored(w) == n);
      // Each window's input is the contiguous stretch of (EOS + tokens) before its targets.
      for (size_t i = 1; i < w.size(); ++i) {
        const int64_t end = w[i].tokens.back() - 10 + 1;
        const std::vector<int64_t> expect(ids.begin() + (end - max_len - 1), ids.begin() + end);
        CHECK(w[i].tokens == expect);
      }
    }
  }
  CHECK(mq::rolling_token_windows({}, kEos, 8).empty());
}

TEST_CASE("GPTQ windows are numel / seqlen non-overlapping slices scoring seqlen-1 each",
          "[unit]") {
  const auto ids = iota_ids(10);
  const auto w = mq::gptq_windows(ids, 4);
  REQUIRE(w.size() == 2);  // 10 // 4, the tail (8, 9) dropped
  CHECK(w[0].tokens == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(w[1].tokens == std::vector<int64_t>{4, 5, 6, 7});
  CHECK(w[0].num_scored == 3);
  CHECK(mq::count_scored(w) == 6);
  CHECK(mq::gptq_windows(iota_ids(2048 * 3 + 2047), 2048).size() == 3);
  CHECK(mq::gptq_windows(iota_ids(3), 4).empty());
}

TEST_CASE("document windows put BOS first and cut at max_length ids", "[unit]") {
  constexpr int64_t kBos = 1;
  const auto w = mq::prefixed_document_window(iota_ids(10, 5), kBos, 4, 3);
  REQUIRE(w.size() == 1);
  CHECK(w[0].tokens == std::vector<int64_t>{kBos, 5, 6, 7});
  CHECK(w[0].num_scored == 3);
  CHECK(w[0].document == 3);
  const auto short_doc = mq::prefixed_document_window(iota_ids(2, 5), kBos, 512);
  CHECK(short_doc[0].tokens == std::vector<int64_t>{kBos, 5, 6});
  CHECK(short_doc[0].num_scored == 2);
  CHECK(mq::prefixed_document_window({}, kBos, 512).empty());
}

// tests/calib/test_calibration_data.cpp
// Calibration windows as the reference draws them (reference-implementation.md §5.1): the
// offsets of `random.seed(seed); randint(0, N - seqlen - 1)` (from mq::PyRandom and from
// values printed by Python), the windows as slices at them, determinism per seed, documents
// re-joined with "\n\n", BOS handling and the too-short error. A byte tokenizer stands in
// for a real one.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "mobilequant/calib/calibration_data.h"
#include "mobilequant/core/error.h"
#include "mobilequant/core/py_random.h"
#include "tests/support/fakes.h"
#include "tests/support/test_support.h"

namespace {

/// Bytes b -> ids b+3; 0 unk, 1 BOS (or none), 2 EOS.
using mq::test::ByteTokenizer;

/// N ids with distinct values (so a window identifies its offset).
std::vector<int64_t> distinct_ids(int64_t n) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(1000 + 3 * i);
  return ids;
}

}  // namespace

TEST_CASE("Calibration windows are Python's seed/randint slices of the token stream",
          "[unit]") {
  const auto ids = distinct_ids(5000);
  mq::CalibrationOptions opts;
  opts.num_samples = 8;
  opts.seqlen = 64;
  // random.seed(s); [random.randint(0, 5000 - 64 - 1) for _ in range(8)] in Python 3.11.
  const std::vector<std::pair<uint64_t, std::vector<int64_t>>> python = {
      {1337, {4368, 2997, 4677, 4798, 1357, 2726, 3143, 2947}},
      {7, {2652, 1235, 3234, 395, 593, 4389, 771, 2995}},
  };
  for (const auto& [seed, want] : python) {
    INFO("seed " << seed);
    opts.seed = seed;
    const auto offsets = mq::calibration_offsets(5000, opts, "ids");
    CHECK(offsets == want);
    mq::PyRandom rng(seed);  // the same draws, spelled out
    for (int64_t o : offsets) CHECK(o == rng.randint(0, 5000 - 64 - 1));
    const auto windows = mq::calibration_windows(ids, opts, "ids");  // [8, 64]
    REQUIRE(windows.sizes() == torch::IntArrayRef({8, 64}));
    REQUIRE(windows.scalar_type() == torch::kInt64);
    for (int64_t s = 0; s < 8; ++s) {
      const std::vector<int64_t> want_row(ids.begin() + want[s], ids.begin() + want[s] + 64);
      const auto row = windows[s].contiguous();  // [64]
      const std::vector<int64_t> got(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 64);
      CHECK(got == want_row);
    }
  }
}

TEST_CASE("Calibration windows are deterministic per seed and differ between seeds", "[unit]") {
  const auto ids = distinct_ids(3000);
  mq::CalibrationOptions opts;
  opts.num_samples = 16;
  opts.seqlen = 32;
  opts.seed = 1337;
  const auto a = mq::calibration_windows(ids, opts, "ids");  // [16, 32]
  const auto b = mq::calibration_windows(ids, opts, "ids");  // [16, 32]
  CHECK(torch::equal(a, b));
  opts.seed = 1338;
  const auto c = mq::calibration_windows(ids, opts, "ids");  // [16, 32]
  CHECK_FALSE(torch::equal(a, c));
  // The smallest stream that fits: N = seqlen + 1 gives offset 0 every time.
  const std::vector<int64_t> tight(ids.begin(), ids.begin() + 33);
  const auto t = mq::calibration_windows(tight, opts, "tight");  // [16, 32]
  for (int64_t s = 0; s < 16; ++s) CHECK(t[s][0].item<int64_t>() == ids[0]);
}

TEST_CASE("Calibration ids join separated documents with blank lines and add BOS as HF does",
          "[unit]") {
  const std::string text = "  first doc \n<|endoftext|>\n\nsecond\r\n<|endoftext|>\n"
                           "<|endoftext|>\nthird\n";
  const auto bytes = [](const std::string& s, int64_t bos) {
    std::vector<int64_t> v;
    if (bos >= 0) v.push_back(bos);
    for (unsigned char c : s) v.push_back(static_cast<int64_t>(c) + 3);
    return v;
  };
  mq::CalibrationOptions opts;
  opts.separator = "<|endoftext|>";
  const ByteTokenizer with_bos(true, 1);
  CHECK(mq::calibration_token_ids(with_bos, text, opts) ==
        bytes("first doc\n\nsecond\n\nthird", 1));
  // No separator: the text as it is, encoded once.
  opts.separator.clear();
  CHECK(mq::calibration_token_ids(with_bos, text, opts) == bytes(text, 1));
  // A tokenizer that does not add BOS, or has none, gets none.
  CHECK(mq::calibration_token_ids(ByteTokenizer(false, 1), "ab", opts) == bytes("ab", -1));
  CHECK(mq::calibration_token_ids(ByteTokenizer(true, -1), "ab", opts) == bytes("ab", -1));
  // Only separators: nothing to calibrate on.
  opts.separator = "<|endoftext|>";
  CHECK_THROWS_WITH(mq::calibration_token_ids(with_bos, "<|endoftext|>\n \n", opts),
                    Catch::Contains("no non-empty document") &&
                        Catch::Contains("<|endoftext|>"));
}

TEST_CASE("Calibration on a text shorter than seqlen+1 ids names the file and the counts",
          "[unit]") {
  mq::CalibrationOptions opts;
  opts.seqlen = 2048;
  const auto ids = distinct_ids(2048);
  CHECK_THROWS_AS(mq::calibration_windows(ids, opts, "data/pile_val.txt"), mq::Error);
  CHECK_THROWS_WITH(mq::calibration_windows(ids, opts, "data/pile_val.txt"),
                    Catch::Contains("too short") && Catch::Contains("data/pile_val.txt") &&
                        Catch::Contains("gives 2048 token ids") &&
                        Catch::Contains("seqlen+1 = 2049"));
  opts.seqlen = 0;
  CHECK_THROWS_WITH(mq::calibration_offsets(100, opts, "x"), Catch::Contains("seqlen=0"));
}

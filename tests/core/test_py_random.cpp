// tests/core/test_py_random.cpp
// mq::PyRandom against CPython's `random`: hard-coded values taken from Python 3.11
// (always run), and a comparison with the repository's Python over several seeds, randint
// ranges (n = 1, powers of two, up to 2^40 and the whole int64 range) and getrandbits(k)
// for every k in 1..64 (skips when the Python binary is absent).
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/core/py_random.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

/// One stream to compare: after seed(seed), `count` draws of randint(a, b) (op 'r') or
/// getrandbits(k) for k = 1..64 in turn (op 'b', a and b unused).
struct Case {
  uint64_t seed;
  char op;
  int64_t a;
  int64_t b;
  int count;
};

std::vector<Case> cases() {
  const uint64_t seeds[] = {0ULL, 1ULL, 1337ULL, (1ULL << 32) + 5, 1ULL << 40};
  const std::pair<int64_t, int64_t> ranges[] = {
      {0, 0},                  // n = 1: k = 1, half the draws rejected
      {0, 1},                  // n = 2
      {0, 7},                  // n = 8, a power of two (k = 4)
      {0, 1023},               // n = 1024
      {0, 1000},               // n = 1001
      {5, 17},                 // offset range
      {-100, 100},             // negative a
      {0, (1LL << 31) - 1},    // n = 2^31 (k = 32)
      {0, (1LL << 32) - 1},    // n = 2^32 (k = 33, two words)
      {0, 1LL << 32},          // n = 2^32 + 1
      {0, (1LL << 40) - 1},    // n = 2^40
      {0, 1LL << 40},          // n = 2^40 + 1
      {0, 1LL << 62},          // k = 63
      {INT64_MIN, INT64_MAX},  // n = 2^64 (k = 65 in Python)
      {0, 300000 - 2048 - 1},  // a calibration-sized range
  };
  std::vector<Case> out;
  for (uint64_t s : seeds) {
    out.push_back({s, 'b', 0, 0, 64});
    for (const auto& [a, b] : ranges) out.push_back({s, 'r', a, b, 40});
  }
  return out;
}

/// Our output of one case, as Python prints it: numbers separated by spaces.
std::string ours(const Case& c) {
  mq::PyRandom rng(c.seed);
  std::ostringstream os;
  for (int i = 0; i < c.count; ++i) {
    if (i > 0) os << ' ';
    if (c.op == 'b') {
      os << rng.getrandbits(i + 1);
    } else {
      os << rng.randint(c.a, c.b);
    }
  }
  return os.str();
}

constexpr const char* kScript = R"(import random, sys
for line in open(sys.argv[1]):
    seed, op, a, b, count = line.split()
    random.seed(int(seed))
    if op == 'b':
        out = [random.getrandbits(k + 1) for k in range(int(count))]
    else:
        out = [random.randint(int(a), int(b)) for _ in range(int(count))]
    print(' '.join(map(str, out)))
)";

}  // namespace

TEST_CASE("PyRandom: seeds, getrandbits and randint give Python's hard-coded values", "[unit]") {
  // random.seed(s); [random.getrandbits(32) for _ in range(3)] in Python 3.11.
  const std::vector<std::pair<uint64_t, std::vector<uint32_t>>> words = {
      {0, {3626764237U, 1654615998U, 3255389356U}},
      {1, {577090037U, 2444712010U, 3639700191U}},
      {1337, {2653228291U, 3975144315U, 2290358181U}},
      {(1ULL << 32) + 5, {675479763U, 2085189291U, 1213270837U}},
      {1ULL << 40, {445128065U, 1517081360U, 2880015531U}},
  };
  for (const auto& [seed, want] : words) {
    INFO("seed " << seed);
    mq::PyRandom rng(seed);
    for (uint32_t w : want) CHECK(rng.next_uint32() == w);
  }
  {  // random.seed(1337); [random.randint(0, 1000) for _ in range(5)]
    mq::PyRandom rng(1337);
    for (int64_t want : {632, 947, 546, 726, 374}) CHECK(rng.randint(0, 1000) == want);
  }
  {  // random.seed(1337); getrandbits(64) twice, then getrandbits(33)
    mq::PyRandom rng(1337);
    CHECK(rng.getrandbits(64) == 17073114832458550531ULL);
    CHECK(rng.getrandbits(64) == 13094974362849908645ULL);
    CHECK(rng.getrandbits(33) == 5866274047ULL);
  }
  {  // random.seed(2**40); [random.randint(0, 2**40) for _ in range(3)]
    mq::PyRandom rng(1ULL << 40);
    for (int64_t want : {773539241345LL, 144613936299LL, 104911681769LL}) {
      CHECK(rng.randint(0, 1LL << 40) == want);
    }
  }
  {  // random.seed(0); [random.randint(-5, 5) for _ in range(5)]
    mq::PyRandom rng(0);
    for (int64_t want : {1, 1, -5, -1, 3}) CHECK(rng.randint(-5, 5) == want);
  }
  {  // random.seed(0); [random.randint(-2**63, 2**63 - 1) for _ in range(3)]
    mq::PyRandom rng(0);
    for (int64_t want : {-1465195632138975614LL, 6084712057446794809LL, -431710025170174585LL}) {
      CHECK(rng.randint(INT64_MIN, INT64_MAX) == want);
    }
  }
  mq::PyRandom rng(0);
  CHECK_THROWS_WITH(rng.randint(3, 2), Catch::Contains("empty range [3, 2]"));
  CHECK_THROWS_WITH(rng.getrandbits(65), Catch::Contains("k=65"));
}

TEST_CASE("PyRandom: randint and getrandbits equal the Python interpreter's", "[unit]") {
  const fs::path py = mq::test::python();
  if (!fs::exists(py)) MQ_SKIP("no Python at " << py << " (run scripts/setup.sh)");
  const auto dir = mq::test::scratch_dir("py_random");
  const auto all = cases();
  {
    std::ofstream script(dir / "draw.py");
    script << kScript;
    std::ofstream spec(dir / "cases.txt");
    for (const Case& c : all) {
      spec << c.seed << ' ' << c.op << ' ' << c.a << ' ' << c.b << ' ' << c.count << '\n';
    }
  }
  const std::string cmd = "'" + py.string() + "' '" + (dir / "draw.py").string() + "' '" +
                          (dir / "cases.txt").string() + "'";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  REQUIRE(::pclose(pipe) == 0);
  std::istringstream lines(output);
  for (const Case& c : all) {
    std::string want;
    REQUIRE(std::getline(lines, want));
    const std::string what = c.op == 'b' ? "getrandbits(k) for k = 1..64"
                                         : "randint(" + std::to_string(c.a) + ", " +
                                               std::to_string(c.b) + ")";
    INFO("seed " << c.seed << ", " << what);
    CHECK(ours(c) == want);
  }
  mq::remove_tree(dir.string());
}

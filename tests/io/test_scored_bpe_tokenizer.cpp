// tests/io/test_scored_bpe_tokenizer.cpp
// The heap-based merge equals llama2.c's quadratic reference (written out here, as
// run.c states it) on real text, and decode inverts encode.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "mobilequant/io/scored_bpe_tokenizer.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

/// llama2.c's encode(): dummy prefix, characters (bytes + 3 when unknown), then repeatedly
/// merge the leftmost adjacent pair with the highest score. Quadratic; a reference only.
std::vector<int64_t> reference_encode(const std::vector<std::string>& pieces,
                                      const std::vector<float>& scores, const std::string& text) {
  auto find = [&](const std::string& s) -> int64_t {
    for (size_t i = 0; i < pieces.size(); ++i)
      if (pieces[i] == s) return static_cast<int64_t>(i);
    return -1;
  };
  std::vector<int64_t> ids;
  if (text.empty()) return ids;
  ids.push_back(find(" "));
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0xF0) n = 4; else if (c >= 0xE0) n = 3; else if (c >= 0xC0) n = 2;
    n = std::min(n, text.size() - i);
    const int64_t id = find(text.substr(i, n));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (size_t k = 0; k < n; ++k) ids.push_back(static_cast<unsigned char>(text[i + k]) + 3);
    }
    i += n;
  }
  while (true) {
    float best = -1e10f;
    int64_t best_id = -1, best_idx = -1;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int64_t id = find(pieces[ids[i]] + pieces[ids[i + 1]]);
      if (id >= 0 && scores[id] > best) {
        best = scores[id];
        best_id = id;
        best_idx = static_cast<int64_t>(i);
      }
    }
    if (best_idx < 0) break;
    ids[best_idx] = best_id;
    ids.erase(ids.begin() + best_idx + 1);
  }
  return ids;
}

/// Reads tok512.bin's pieces and scores directly (independently of the class under test).
void read_raw(const fs::path& path, int n, std::vector<std::string>& pieces,
              std::vector<float>& scores) {
  std::ifstream in(path, std::ios::binary);
  int32_t max_len = 0;
  in.read(reinterpret_cast<char*>(&max_len), 4);
  for (int i = 0; i < n; ++i) {
    float s = 0;
    int32_t len = 0;
    in.read(reinterpret_cast<char*>(&s), 4);
    in.read(reinterpret_cast<char*>(&len), 4);
    std::string p(len, '\0');
    in.read(p.data(), len);
    pieces.push_back(p);
    scores.push_back(s);
  }
}

}  // namespace

TEST_CASE("scored BPE equals llama2.c's reference merge on TinyStories text", "[model]") {
  const auto tok = mq::test::shared_dir() / "models" / "stories260K" / "tok512.bin";
  const auto data = mq::test::shared_dir() / "data" / "tinystories" / "valid.head.txt";
  if (!fs::exists(tok) || !fs::exists(data)) MQ_SKIP("no " << tok << " or " << data);
  auto t = mq::ScoredBpeTokenizer::from_llama2c(tok.string(), 512);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  read_raw(tok, 512, pieces, scores);

  std::ifstream in(data);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string story = ss.str().substr(0, 3000);
  const std::vector<std::string> texts = {
      story, "Once upon a time,", "héllo wörld — ✓ 日本 🙂", "a  b\n\n\tc   ", "12345 3.14", ""};
  for (const auto& text : texts) {
    INFO("text: " << text.substr(0, 60));
    REQUIRE(t->encode(text) == reference_encode(pieces, scores, text));
    REQUIRE(t->decode(t->encode(text)) == text);
  }
  CHECK(t->bos_id() == 1);
  CHECK(t->eos_id() == 2);
  CHECK(t->encode("Once").front() != t->bos_id());  // encode() adds no BOS
}

TEST_CASE("scored BPE merges the highest score first and falls back to bytes", "[unit]") {
  // Vocabulary: unk, bos, eos, 256 byte pieces, then " ", "a", "b", "ab", " a", " ab".
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    pieces.push_back(buf);
    scores.push_back(0);
  }
  const int64_t base = 259;
  for (auto [p, s] : std::vector<std::pair<std::string, float>>{
           {"\xE2\x96\x81", -1}, {"a", -1}, {"b", -1}, {"ab", -2}, {"\xE2\x96\x81" "a", -1},
           {"\xE2\x96\x81" "ab", -3}}) {
    pieces.push_back(p);
    scores.push_back(s);
  }
  mq::ScoredBpeTokenizer t(pieces, scores, {});
  // " ab": " a" (score -1) beats "ab" (-2), then " a"+"b" = " ab".
  REQUIRE(t.encode("ab") == std::vector<int64_t>{base + 5});
  // "é" is not in the vocabulary: its two UTF-8 bytes become byte pieces.
  REQUIRE(t.encode("é") == std::vector<int64_t>{base, 3 + 0xC3, 3 + 0xA9});
  REQUIRE(t.decode(t.encode("é")) == "é");
  REQUIRE(t.decode({1, base + 5, 2}) == "ab");
}

// tests/io/test_gguf_llama_tokenizer.cpp
// GGUF's "llama" tokenizer kind (SentencePiece BPE as scored pieces) against libsentencepiece:
// the real Llama-2 tokenizer.model is written into a small llama GGUF the way llama.cpp's
// converter does it (tokens with "▁", scores, token types, special ids, add_bos_token,
// add_space_prefix), read back through mq::read_checkpoint, and its encode() must equal
// SentencePiece's Encode (no BOS) on tricky texts and on wikitext-2 lines; decode must invert
// encode wherever SentencePiece itself round-trips.
#include <sentencepiece_processor.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mobilequant/core/file_util.h"
#include "mobilequant/io/gguf_reader.h"
#include "mobilequant/io/scored_bpe_tokenizer.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

/// A minimal GGUF v3 writer (little-endian): metadata entries, then F32 tensors.
class GgufBuilder {
 public:
  void u32(const std::string& key, uint32_t v) { scalar(key, mq::GgufType::kUint32, v); }
  void f32(const std::string& key, float v) { scalar(key, mq::GgufType::kFloat32, v); }
  void boolean(const std::string& key, bool v) {
    scalar(key, mq::GgufType::kBool, static_cast<uint8_t>(v ? 1 : 0));
  }
  void string(const std::string& key, const std::string& v) {
    head(key, mq::GgufType::kString);
    str(kv_, v);
    ++n_kv_;
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    array_head(key, mq::GgufType::kString, v.size());
    for (const auto& s : v) str(kv_, s);
  }
  template <typename T>
  void array(const std::string& key, mq::GgufType elem, const std::vector<T>& v) {
    array_head(key, elem, v.size());
    for (const T& x : v) pod(kv_, x);
  }
  /// An F32 tensor of torch shape `t.sizes()` (ggml's ne is that reversed).
  void tensor(const std::string& name, const torch::Tensor& t) {
    auto c = t.contiguous().to(torch::kFloat32);
    tensors_.push_back({name, {c.sizes().rbegin(), c.sizes().rend()},
                        std::string(reinterpret_cast<const char*>(c.data_ptr<float>()),
                                    static_cast<size_t>(c.numel()) * 4)});
  }

  void write(const fs::path& path) const {
    constexpr uint64_t kAlign = 32;  // GGUF's default general.alignment
    std::string out = "GGUF";
    pod<uint32_t>(out, 3);
    pod<uint64_t>(out, tensors_.size());
    pod<uint64_t>(out, n_kv_);
    out += kv_;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      str(out, t.name);
      pod<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
      for (int64_t n : t.ne) pod<uint64_t>(out, static_cast<uint64_t>(n));
      pod<uint32_t>(out, 0);  // GGML_TYPE_F32
      pod<uint64_t>(out, offset);
      offsets.push_back(offset);
      offset += (t.data.size() + kAlign - 1) / kAlign * kAlign;
    }
    const size_t start = (out.size() + kAlign - 1) / kAlign * kAlign;
    out.resize(start + offset, '\0');
    for (size_t k = 0; k < tensors_.size(); ++k) {
      std::memcpy(&out[start + offsets[k]], tensors_[k].data.data(), tensors_[k].data.size());
    }
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    REQUIRE(f.good());
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    std::string data;
  };
  template <typename T>
  static void pod(std::string& out, T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    out.append(raw, sizeof(T));
  }
  static void str(std::string& out, const std::string& s) {
    pod<uint64_t>(out, s.size());
    out += s;
  }
  void head(const std::string& key, mq::GgufType type) {
    str(kv_, key);
    pod<uint32_t>(kv_, static_cast<uint32_t>(type));
  }
  template <typename T>
  void scalar(const std::string& key, mq::GgufType type, T v) {
    head(key, type);
    pod(kv_, v);
    ++n_kv_;
  }
  void array_head(const std::string& key, mq::GgufType elem, size_t n) {
    head(key, mq::GgufType::kArray);
    pod<uint32_t>(kv_, static_cast<uint32_t>(elem));
    pod<uint64_t>(kv_, n);
    ++n_kv_;
  }

  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

/// Removes a scratch directory when the test case ends, pass or fail.
struct RemoveOnExit {
  fs::path dir;
  ~RemoveOnExit() {
    try {
      mq::remove_tree(dir.string());
    } catch (...) {  // a destructor must not throw; the temp dir stays behind
    }
  }
};

/// llama.cpp's convert_hf_to_gguf.py (_create_vocab_from_sentencepiece) token types.
constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUnused = 5, kByte = 6;

/// A one-block llama (hidden 8, 2 heads, ffn 16) whose tokenizer is `sp`, written to `path`.
void write_llama_gguf(const sentencepiece::SentencePieceProcessor& sp, const fs::path& path) {
  GgufBuilder g;
  g.string("general.architecture", "llama");
  g.u32("llama.context_length", 64);
  g.u32("llama.embedding_length", 8);
  g.u32("llama.feed_forward_length", 16);
  g.u32("llama.block_count", 1);
  g.u32("llama.attention.head_count", 2);
  g.u32("llama.attention.head_count_kv", 2);
  g.u32("llama.rope.dimension_count", 4);
  g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);

  const int n = sp.GetPieceSize();
  std::vector<std::string> tokens(n);
  std::vector<float> scores(n);
  std::vector<int32_t> types(n);
  for (int id = 0; id < n; ++id) {
    tokens[id] = sp.IdToPiece(id);
    scores[id] = sp.GetScore(id);
    types[id] = sp.IsUnknown(id)   ? kUnknown
                : sp.IsControl(id) ? kControl
                : sp.IsUnused(id)  ? kUnused
                : sp.IsByte(id)    ? kByte
                                   : kNormal;
  }
  g.string("tokenizer.ggml.model", "llama");
  g.strings("tokenizer.ggml.tokens", tokens);
  g.array<float>("tokenizer.ggml.scores", mq::GgufType::kFloat32, scores);
  g.array<int32_t>("tokenizer.ggml.token_type", mq::GgufType::kInt32, types);
  g.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(sp.bos_id()));
  g.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(sp.eos_id()));
  g.u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(sp.unk_id()));
  g.boolean("tokenizer.ggml.add_bos_token", true);
  g.boolean("tokenizer.ggml.add_eos_token", false);
  // The converter copies normalizer_spec.add_dummy_prefix; Llama-2's model sets it.
  g.boolean("tokenizer.ggml.add_space_prefix", true);

  torch::manual_seed(3);
  g.tensor("token_embd.weight", torch::randn({n, 8}));
  g.tensor("blk.0.attn_norm.weight", torch::rand({8}));
  g.tensor("blk.0.attn_q.weight", torch::randn({8, 8}));
  g.tensor("blk.0.attn_k.weight", torch::randn({8, 8}));
  g.tensor("blk.0.attn_v.weight", torch::randn({8, 8}));
  g.tensor("blk.0.attn_output.weight", torch::randn({8, 8}));
  g.tensor("blk.0.ffn_norm.weight", torch::rand({8}));
  g.tensor("blk.0.ffn_gate.weight", torch::randn({16, 8}));
  g.tensor("blk.0.ffn_up.weight", torch::randn({16, 8}));
  g.tensor("blk.0.ffn_down.weight", torch::randn({8, 16}));
  g.tensor("output_norm.weight", torch::rand({8}));
  g.tensor("output.weight", torch::randn({n, 8}));
  g.write(path);
}

std::vector<int64_t> sp_encode(const sentencepiece::SentencePieceProcessor& sp,
                               const std::string& text) {
  std::vector<int> ids;
  const auto status = sp.Encode(text, &ids);
  REQUIRE(status.ok());
  return {ids.begin(), ids.end()};
}

std::string sp_decode(const sentencepiece::SentencePieceProcessor& sp,
                      const std::vector<int64_t>& ids) {
  std::string out;
  const auto status = sp.Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  REQUIRE(status.ok());
  return out;
}

/// Pieces of `ids` for failure messages.
std::string show(const sentencepiece::SentencePieceProcessor& sp, const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) out += std::to_string(id) + ":" + sp.IdToPiece(static_cast<int>(id)) + " ";
  return out;
}

}  // namespace

TEST_CASE("gguf llama tokenizer: Llama-2's SentencePiece vocabulary encodes like libsentencepiece",
          "[model]") {
  const fs::path model = mq::test::shared_dir() / "models" / "llama2-tokenizer" / "tokenizer.model";
  if (!fs::exists(model)) MQ_SKIP("no Llama-2 tokenizer.model at " << model.string());
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(model.string()).ok());

  auto dir = mq::test::scratch_dir("gguf_llama_tok");
  RemoveOnExit cleanup{dir};
  const fs::path path = dir / "llama2-tok.gguf";
  write_llama_gguf(sp, path);
  const mq::Checkpoint ckpt = mq::read_checkpoint(path.string());
  REQUIRE(ckpt.format == "gguf");
  CHECK(ckpt.config.vocab_size == sp.GetPieceSize());
  REQUIRE(ckpt.tokenizer != nullptr);
  const auto* tok = dynamic_cast<const mq::ScoredBpeTokenizer*>(ckpt.tokenizer.get());
  REQUIRE(tok != nullptr);
  CHECK(tok->vocab_size() == 32000);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(tok->adds_bos());

  CHECK(tok->encode("Once upon a time,") == std::vector<int64_t>{9038, 2501, 263, 931, 29892});
  CHECK(sp_encode(sp, "Once upon a time,") == std::vector<int64_t>{9038, 2501, 263, 931, 29892});

  std::vector<std::string> texts = {
      "Once upon a time,",
      "Hello world",
      "The quick brown fox jumps over the lazy dog.",
      "It's a beautiful day; isn't it? \"Yes!\" (she said) -- 100% sure.",
      " leading space",
      "   three leading spaces",
      "trailing space ",
      "trailing spaces   ",
      "multiple   spaces    between     words",
      " ",
      "  ",
      "        ",
      "a",
      "line one\nline two\n\nline four\n",
      "\n",
      "\n\n\nx",
      "tab\tseparated\tvalues\t\t",
      "mixed \t \n whitespace \n\t",
      "digits 0123456789 3.14159 1,000,000 2024-01-31",
      "1234567890123",
      "Café naïve résumé façade Ångström Ærø über straße",
      "Ελληνικά Русский текст עברית العربية",
      "日本語のテキストと中文文本，还有한국어.",
      "emoji: 😀🎉👍🏽 👨‍👩‍👧 🦙",
      "rare chars: \xF0\x9F\x9B\xB8 \xE2\x98\x83 \xE1\xBA\x9E \xF0\x90\x8C\xB0",
      "symbols ~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
      "literal pieces: <s> </s> <unk> <0x41> \xE2\x96\x81 ▁▁x",
      "def f(x):\n    return x ** 2  # comment\n",
      "URL https://example.com/path?q=1&r=two#frag",
      "CamelCaseWordsAndALLCAPS and snake_case_words",
      // Malformed UTF-8: SentencePiece reads each bad byte as U+FFFD (no round trip).
      "a\xE2\x96" "b",
      "\x96" "abc",
      "ab\xC0\x80",
      "\xED\xA0\x80z",
      "\xF4\x90\x80\x80 end",
  };
  for (int k = 1; k <= 17; k += 4) {
    texts.push_back(std::string(static_cast<size_t>(k), ' '));
    texts.push_back("x" + std::string(static_cast<size_t>(k), ' ') + "y");
    texts.push_back(std::string(static_cast<size_t>(k), '\n') + "z");
  }
  // A few hundred lines of wikitext-2's raw test split.
  const fs::path wiki = mq::test::shared_dir() / "data" / "wikitext2" / "wiki.test.raw.txt";
  size_t wiki_lines = 0;
  if (fs::exists(wiki)) {
    std::ifstream in(wiki);
    std::string line;
    while (wiki_lines < 400 && std::getline(in, line)) {
      if (line.empty()) continue;
      texts.push_back(line);
      ++wiki_lines;
    }
  } else {
    WARN("no wikitext-2 at " << wiki.string() << "; only the hand-written texts are checked");
  }

  size_t mismatches = 0, round_trips = 0;
  for (const std::string& text : texts) {
    INFO("text: [" << text << "]");
    const std::vector<int64_t> want = sp_encode(sp, text);
    const std::vector<int64_t> got = tok->encode(text);
    INFO("libsentencepiece: " << show(sp, want));
    INFO("gguf tokenizer:   " << show(sp, got));
    CHECK(got == want);
    if (got != want) ++mismatches;
    if (sp_decode(sp, want) == text) {
      CHECK(tok->decode(got) == text);
      ++round_trips;
    }
  }
  CHECK(mismatches == 0);
  CHECK(round_trips > texts.size() / 2);
  std::cout << "gguf llama tokenizer: " << texts.size() << " texts (" << wiki_lines
            << " wikitext lines), " << mismatches << " mismatches, " << round_trips
            << " round trips checked" << std::endl;
}

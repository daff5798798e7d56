// tests/models/test_llama2c_checkpoint.cpp
// stories260K (llama2.c legacy .bin + tok512.bin) loads, reproduces llama2.c's greedy text,
// and broken files fail with messages that name what is wrong.
#include <catch2/catch.hpp>

#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/models/generation.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/core/file_util.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

fs::path stories_dir() { return mq::test::shared_dir() / "models" / "stories260K"; }

/// Copies the first `bytes` bytes of `from` to `to`.
void copy_prefix(const fs::path& from, const fs::path& to, size_t bytes) {
  std::ifstream in(from, std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  std::ofstream(to, std::ios::binary).write(data.data(), static_cast<std::streamsize>(bytes));
}

}  // namespace

TEST_CASE("unpermute_rotary_rows turns Meta's interleaved pairs into HF's halves", "[unit]") {
  // One head of width 4: Meta rows [a0, b0, a1, b1] (pairs (a_i, b_i)) -> HF [a0, a1, b0, b1].
  auto w = torch::tensor({10.f, 20.f, 11.f, 21.f}).view({4, 1});             // [4, 1]
  auto hf = mq::unpermute_rotary_rows(w, 1);
  REQUIRE(torch::equal(hf.view({4}), torch::tensor({10.f, 11.f, 20.f, 21.f})));
  // Two heads are permuted independently.
  auto w2 = torch::arange(8, torch::kFloat32).view({8, 1});
  REQUIRE(torch::equal(mq::unpermute_rotary_rows(w2, 2).view({8}),
                       torch::tensor({0.f, 2.f, 1.f, 3.f, 4.f, 6.f, 5.f, 7.f})));
  REQUIRE_THROWS_WITH(mq::unpermute_rotary_rows(torch::zeros({6, 2}), 2), Contains("6 rows"));
}

TEST_CASE("stories260K reproduces llama2.c's greedy text from BOS", "[model]") {
  const auto bin = stories_dir() / "stories260K.bin";
  if (!fs::exists(bin)) MQ_SKIP("no " << bin << " (set MQ_SHARED_DIR to the shared folder)");
  auto m = mq::load_model(bin.string());
  REQUIRE(m.format == "llama2c");
  REQUIRE(m.tokenizer != nullptr);
  const auto& cfg = m.model->config();
  CHECK(cfg.hidden_size == 64);
  CHECK(cfg.num_hidden_layers == 5);
  CHECK(cfg.num_key_value_heads == 4);
  int64_t params = 0;
  for (const auto& p : m.model->parameters()) params += p.numel();
  CHECK(params == 260032);
  auto out = mq::generate_greedy(m.model, {m.tokenizer->bos_id()}, 64);
  const std::string text = m.tokenizer->decode(out);
  const std::string expected =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball.";
  INFO("generated: " << text);
  REQUIRE(text.rfind(expected, 0) == 0);
}

TEST_CASE("broken llama2.c checkpoints and tokenizers fail with a clear message", "[model]") {
  const auto bin = stories_dir() / "stories260K.bin";
  const auto tok = stories_dir() / "tok512.bin";
  if (!fs::exists(bin)) MQ_SKIP("no " << bin << " (set MQ_SHARED_DIR to the shared folder)");
  const auto dir = mq::test::scratch_dir("llama2c");

  const auto truncated = dir / "truncated.bin";
  copy_prefix(bin, truncated, fs::file_size(bin) - 100);
  REQUIRE_THROWS_WITH(mq::read_checkpoint(truncated.string(), tok.string()),
                      Contains("truncated.bin") && Contains("bytes, expected") &&
                          Contains(std::to_string(fs::file_size(bin))));

  const auto header_only = dir / "short.bin";
  copy_prefix(bin, header_only, 10);
  REQUIRE_THROWS_WITH(mq::read_checkpoint(header_only.string(), tok.string()),
                      Contains("shorter than the 28-byte header"));

  const auto garbage = dir / "garbage.bin";
  std::ofstream(garbage, std::ios::binary) << std::string(4096, '\x7f');
  REQUIRE_THROWS_WITH(mq::read_checkpoint(garbage.string(), tok.string()),
                      Contains("implausible header"));

  const auto bad_tok = dir / "tok.bin";
  copy_prefix(tok, bad_tok, 1000);
  REQUIRE_THROWS_WITH(mq::read_checkpoint(bin.string(), bad_tok.string()),
                      Contains("tok.bin") && Contains("truncated"));

  REQUIRE_THROWS_WITH(mq::read_checkpoint((dir / "missing.bin").string()),
                      Contains("missing.bin") && Contains("no such file"));
  REQUIRE_THROWS_WITH(mq::read_checkpoint((dir / "model.xyz").string()), Contains("no such file"));
  std::ofstream(dir / "model.xyz") << "x";
  REQUIRE_THROWS_WITH(mq::read_checkpoint((dir / "model.xyz").string()),
                      Contains("unknown format") && Contains(".xyz"));
  mq::remove_tree(dir.string());
}

// tests/io/test_spm_tokenizer.cpp
// SpmTokenizer over the shared Llama-2 tokenizer.model (skipped where the shared folder is
// absent), and its load errors.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/io/spm_tokenizer.h"
#include "tests/support/test_support.h"

using Catch::Contains;

TEST_CASE("SpmTokenizer: Llama-2 tokenizer.model encodes and decodes as transformers", "[unit]") {
  const auto path = mq::test::shared_dir() / "models" / "llama2-tokenizer" / "tokenizer.model";
  if (!std::filesystem::exists(path)) MQ_SKIP("no " << path.string());
  mq::SpmTokenizer tok(path.string());
  const std::vector<int64_t> ids = tok.encode("Once upon a time,");
  REQUIRE(ids == std::vector<int64_t>{9038, 2501, 263, 931, 29892});  // no BOS
  REQUIRE(tok.vocab_size() == 32000);
  REQUIRE(tok.bos_id() == 1);
  REQUIRE(tok.eos_id() == 2);
  REQUIRE(tok.unk_id() == 0);
  REQUIRE(tok.adds_bos());
  std::vector<int64_t> with_special = {1};
  with_special.insert(with_special.end(), ids.begin(), ids.end());
  with_special.push_back(2);
  REQUIRE(tok.decode(with_special) == "Once upon a time,");
  REQUIRE_THROWS_WITH(tok.decode({32000}), Contains("id 32000 out of range [0, 32000)"));
}

TEST_CASE("SpmTokenizer: missing or corrupt files are errors naming the file", "[unit]") {
  auto dir = mq::test::scratch_dir("spm_bad");
  const auto missing = (dir / "missing.model").string();
  REQUIRE_THROWS_WITH(mq::SpmTokenizer(missing), Contains(missing) && Contains("no such file"));
  const auto junk = (dir / "junk.model").string();
  std::ofstream(junk) << "this is not a protobuf";
  REQUIRE_THROWS_WITH(mq::SpmTokenizer(junk),
                      Contains(junk) && Contains("not a SentencePiece model"));
}

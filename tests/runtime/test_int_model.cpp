// tests/runtime/test_int_model.cpp: loading a synthetic integer model and running its prefill.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/int_model.h"
#include "mobilequant/runtime/int_prefill.h"
#include "tests/runtime/int_model_fixture.h"
#include "tests/support/test_support.h"

namespace {
std::vector<int32_t> some_tokens(int64_t t, int64_t v) {
  std::vector<int32_t> tok;
  for (int64_t i = 0; i < t; ++i) tok.push_back(static_cast<int32_t>((7 * i + 3) % v));
  return tok;
}
}  // namespace

TEST_CASE("prefill of a tiny int model: shape, finite, deterministic across threads", "[unit]") {
  const auto dir = mq::test::scratch_dir("int_model");
  mq::test::TinyIntModelSpec spec;
  mq::test::write_tiny_int_model(dir, spec);
  const auto m = mq::rt::IntModel::load(dir.string());
  REQUIRE(m.config().hidden_size == 16);
  REQUIRE(m.config().num_hidden_layers == 2);
  REQUIRE(m.layers().size() == 2);
  REQUIRE(m.layers()[0].w2.codes.size() == 16 * 32);  // 4-bit packed, unpacked at load
  for (uint8_t code : m.layers()[0].w2.codes) REQUIRE(code <= 15);

  const auto tokens = some_tokens(40, spec.v);
  mq::rt::PrefillOptions one;
  one.threads = 1;
  mq::rt::PrefillOptions two;
  two.threads = 2;
  std::set<std::string> sites;
  two.observer = [&](int64_t layer, const std::string& site, const std::vector<int32_t>& codes,
                     const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    REQUIRE(static_cast<int64_t>(codes.size()) == n);
    if (layer == 0) sites.insert(site);
  };
  const auto a = mq::rt::prefill(m, tokens, one);
  const auto b = mq::rt::prefill(m, tokens, two);
  REQUIRE(a.size() == tokens.size() * static_cast<size_t>(spec.v));
  for (float x : a) REQUIRE(std::isfinite(x));
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  REQUIRE(sites.count("self_attn.qk_bmm.output") == 1);
  REQUIRE(sites.count("mlp.w2.output") == 1);
  REQUIRE(sites.size() == 21);
  // Not all logits equal (the model is not degenerate).
  REQUIRE(*std::max_element(a.begin(), a.end()) != *std::min_element(a.begin(), a.end()));
  // The logits of a prefix are the prefix of the logits (causal attention).
  const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + 10);
  const auto c = mq::rt::prefill(m, prefix, one);
  REQUIRE(std::memcmp(a.data(), c.data(), c.size() * sizeof(float)) == 0);

  REQUIRE_THROWS_WITH(mq::rt::prefill(m, {1, 50, 2}),
                      Catch::Contains("token 50 at position 1"));
  REQUIRE_THROWS_WITH(mq::rt::prefill(m, some_tokens(65, spec.v)),
                      Catch::Contains("65 tokens") && Catch::Contains("64"));
  REQUIRE_THROWS_WITH(mq::rt::prefill(m, {}), Catch::Contains("0 tokens"));
  mq::remove_tree(dir.string());
}

TEST_CASE("an untied tiny int model loads its own lm_head", "[unit]") {
  const auto dir = mq::test::scratch_dir("int_model_untied");
  mq::test::TinyIntModelSpec spec;
  spec.tied = false;
  spec.pack_w2 = false;
  mq::test::write_tiny_int_model(dir, spec);
  const auto m = mq::rt::IntModel::load(dir.string());
  REQUIRE(m.lm_head_q.size() == static_cast<size_t>(spec.v * spec.c));
  const auto logits = mq::rt::prefill(m, some_tokens(5, spec.v));
  REQUIRE(logits.size() == static_cast<size_t>(5 * spec.v));
  mq::remove_tree(dir.string());
}

TEST_CASE("IntModel::load names the tensor that is missing or misshapen", "[unit]") {
  const auto dir = mq::test::scratch_dir("int_model_bad");
  mq::test::TinyIntModelSpec spec;
  spec.omit = "model.layers.1.self_attn.k_proj.requant_shift";
  mq::test::write_tiny_int_model(dir, spec);
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("missing tensor 'model.layers.1.self_attn.k_proj.requant_shift'") &&
                          Catch::Contains("model.safetensors"));
  spec.omit.clear();
  spec.reshape = "model.layers.0.mlp.w1.weight_q";
  mq::test::write_tiny_int_model(dir, spec);
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("'model.layers.0.mlp.w1.weight_q' has shape [32, 16, 1], "
                                      "expected [32, 16]"));
  spec.reshape = "rope.cos";
  mq::test::write_tiny_int_model(dir, spec);
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("'rope.cos' has shape [64, 4, 1], expected [64, 4]"));
  // An unknown format or version is refused.
  spec.reshape.clear();
  mq::test::write_tiny_int_model(dir, spec);
  auto edit_manifest = [&](const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(dir / "manifest.json");
    auto j = nlohmann::json::parse(in);
    edit(j);
    std::ofstream(dir / "manifest.json") << j.dump();
  };
  edit_manifest([](nlohmann::json& j) { j["version"] = 7; });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("version 7, expected 6"));
  // Version 5 (int32 embedding codes) is refused with the reason.
  edit_manifest([](nlohmann::json& j) { j["version"] = 5; });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("version 5, expected 6") &&
                          Catch::Contains("rounded embeddings to int32 codes"));
  // Version 4 (31-bit multipliers, Q30 rotary tables) is refused with the reason.
  edit_manifest([](nlohmann::json& j) { j["version"] = 4; });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("version 4, expected 6") && Catch::Contains("31-bit multipliers") &&
                          Catch::Contains("export the run again"));
  // Version 3 (30-bit softmax exponentials) is refused with the reason and what to do.
  edit_manifest([](nlohmann::json& j) { j["version"] = 3; });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("version 3, expected 6") &&
                          Catch::Contains("30 bits of the softmax's exponentials") &&
                          Catch::Contains("export the run again"));
  // Exponentials whose row sum could pass 2^62 at max_positions are refused.
  edit_manifest([](nlohmann::json& j) {
    j["version"] = 6;
    j["softmax"]["exp_bits"] = 57;  // 64 positions * 2^57 = 2^63
  });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("softmax exp_bits 57 with max_positions 64") &&
                          Catch::Contains("must not pass 2^62"));
  // Version 1 (integer eps terms) is refused with the reason and what to do.
  edit_manifest([](nlohmann::json& j) { j["version"] = 1; });
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("version 1, expected 6") && Catch::Contains("export the run again"));
  // An eps shift out of range names its tensor.
  spec.bad_eps_shift = true;
  mq::test::write_tiny_int_model(dir, spec);
  REQUIRE_THROWS_WITH(mq::rt::IntModel::load(dir.string()),
                      Catch::Contains("'model.layers.0.input_layernorm.eps_shift' is 49, expected in [0, 48]"));
  mq::remove_tree(dir.string());
}

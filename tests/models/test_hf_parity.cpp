// tests/models/test_hf_parity.cpp
// The shared decoder against Hugging Face `transformers` on the tiny random models of
// tests/golden (make_golden.py): logits of llama, gemma and stablelm on unpadded,
// right-padded and left-padded batches (compared at real tokens only), the storage
// variants (sharded, bf16, fp16), and the activation taps (site names, and each layer's
// output against transformers' decoder-layer output).
#include <catch2/catch.hpp>

#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include "mobilequant/models/model_loader.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace {

/// Largest |logit - transformers' logit| accepted at a real (non-padding) position.
constexpr double kLogitTolerance = 1e-4;
/// The same bound for each decoder layer's output (hidden states are O(1) too).
constexpr double kHiddenTolerance = 1e-4;

mq::LoadedModel load(const std::string& name) {
  return mq::load_model((mq::test::golden_dir() / name).string());
}

/// Compares `model`'s logits on golden case `prefix`.`case_name` with `expected_prefix`'s
/// logits, at real tokens only; prints and returns max|diff|.
double check_case(mq::CausalLm& model, const std::string& prefix, const std::string& case_name,
                  const std::string& expected_prefix) {
  const auto r = mq::test::run_golden_case(model, prefix, case_name, expected_prefix);
  const double diff = mq::test::max_abs_diff(r.got, r.want);
  std::cout << "  " << prefix << " " << case_name << ": max|diff| = " << diff << " over "
            << r.got.size(0) << " positions" << std::endl;
  REQUIRE_ALLCLOSE(r.got, r.want, kLogitTolerance);
  return diff;
}

void check_architecture(const std::string& name, mq::Arch arch) {
  auto loaded = load(name);
  REQUIRE(loaded.format == "hf");
  REQUIRE(loaded.model->config().arch == arch);
  for (const char* c : mq::test::kGoldenCases) check_case(loaded.model, name, c, name);
}

}  // namespace

TEST_CASE("HF parity: tiny llama (GQA 8:2) logits match transformers", "[unit]") {
  check_architecture("tiny-llama", mq::Arch::kLlama);
}

TEST_CASE("HF parity: tiny gemma (MQA, wide heads, tied) logits match transformers", "[unit]") {
  check_architecture("tiny-gemma", mq::Arch::kGemma);
}

TEST_CASE("HF parity: tiny stablelm (partial rotary, qkv bias) logits match transformers",
          "[unit]") {
  check_architecture("tiny-stablelm", mq::Arch::kStableLm);
}

TEST_CASE("HF parity: sharded, bf16- and fp16-stored checkpoints match transformers", "[unit]") {
  auto sharded = load("tiny-gemma-sharded");
  for (const char* c : mq::test::kGoldenCases)
    check_case(sharded.model, "tiny-gemma", c, "tiny-gemma");
  auto bf16 = load("tiny-llama-bf16");
  check_case(bf16.model, "tiny-llama-bf16", "unpadded", "tiny-llama-bf16");
  auto fp16 = load("tiny-stablelm-fp16");
  check_case(fp16.model, "tiny-stablelm-fp16", "unpadded", "tiny-stablelm-fp16");
}

TEST_CASE("HF parity: activation taps fire at every site and match transformers' layers",
          "[unit]") {
  std::set<mq::ActSite> global;
  for (const mq::ActSite site : mq::EnumValues<mq::ActSite>::values())
    if (!mq::is_block_site(site)) global.insert(site);
  for (const std::string name : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << name);
    auto loaded = load(name);
    // Every block site fires, except SiLU's sigmoid in a GELU model.
    std::set<mq::ActSite> per_layer;
    for (const mq::ActSite site : mq::EnumValues<mq::ActSite>::values()) {
      if (!mq::is_block_site(site)) continue;
      if (site == mq::ActSite::kActIn2 &&
          loaded.model->config().hidden_act != mq::Activation::kSilu)
        continue;
      per_layer.insert(site);
    }
    std::map<int64_t, std::set<mq::ActSite>> seen;
    std::map<int64_t, torch::Tensor> layer_out;  // layer -> [B, T, C]
    loaded.model->set_observer([&](int64_t layer, mq::ActSite site, const torch::Tensor& v) {
      seen[layer].insert(site);
      if (site == mq::ActSite::kResidAdd2Out) layer_out[layer] = v.detach().clone();
    });
    // The observed path computes attention explicitly; it must agree with transformers too.
    check_case(loaded.model, name, "unpadded", name);
    const int64_t n_layers = loaded.model->config().num_hidden_layers;
    REQUIRE(seen.size() == static_cast<size_t>(n_layers + 1));
    REQUIRE(seen[-1] == global);
    for (int64_t i = 0; i < n_layers; ++i) {
      INFO("layer " << i);
      REQUIRE(seen[i] == per_layer);
      const auto& want = mq::test::golden_at(name + ".unpadded.layer" + std::to_string(i) + ".out");
      std::cout << "  " << name << " layer " << i << " output: max|diff| = "
                << mq::test::max_abs_diff(layer_out[i], want) << std::endl;
      REQUIRE_ALLCLOSE(layer_out[i], want, kHiddenTolerance);
    }
    loaded.model->set_observer(nullptr);
  }
}

// tests/eval/test_layer_error.cpp
// eval/layer_error.h: the fp64 sums against hand-computed values, the float model against
// itself (exactly zero everywhere), a copy with one block perturbed (exactly zero before it,
// positive from it on), the tap passing a quantized forward through bit for bit, and the
// choice of WikiText windows.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/eval/layer_error.h"
#include "mobilequant/eval/perplexity.h"
#include "mobilequant/eval/wikitext.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/fakes.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_quantized.h"

using Catch::Contains;

namespace {

/// |cosine - expected| of fp64 sums over a handful of positions.
constexpr double kCosineAtol = 1e-12;
/// The explicit (hooked) float path against the plain one (SDPA, fused SiLU), fp32 logits.
constexpr double kExplicitPathAtol = 1e-4;

constexpr int64_t kLayers = 4;

/// A 4-layer GQA llama with random weights over 259 ids; equal seeds give equal weights.
mq::CausalLm tiny_model(uint64_t seed = 77) {
  return mq::test::tiny_byte_llama(kLayers, seed);
}

/// Windows of `lengths` input tokens with deterministic ids in [3, 259).
std::vector<mq::ScoringWindow> windows_of(const std::vector<int64_t>& lengths) {
  std::vector<mq::ScoringWindow> out;
  for (size_t k = 0; k < lengths.size(); ++k) {
    mq::ScoringWindow w;
    for (int64_t i = 0; i <= lengths[k]; ++i)
      w.tokens.push_back((static_cast<int64_t>(k) * 41 + i * 13) % 256 + 3);
    w.num_scored = lengths[k];
    w.document = static_cast<int64_t>(k);
    out.push_back(w);
  }
  return out;
}

}  // namespace

TEST_CASE("LayerErrorSums adds squared errors, reference energy and cosines in fp64", "[unit]") {
  const auto h = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({1, 2, 2});      // [B, T, C]
  const auto ref = torch::tensor({1.0f, 1.0f, 1.0f, 1.0f}).reshape({1, 2, 2});    // [B, T, C]
  mq::LayerErrorSums s;
  CHECK(std::isnan(s.rel_mse()));
  CHECK(std::isnan(s.cosine()));
  s.add(h, ref, "layer 0");
  CHECK(s.sq_diff == 14.0);  // 0 + 1 + 4 + 9
  CHECK(s.sq_ref == 4.0);
  CHECK(s.rel_mse() == 3.5);
  CHECK(s.positions == 2);
  const double want = (3.0 / std::sqrt(10.0) + 7.0 / std::sqrt(50.0)) / 2.0;
  CHECK(std::abs(s.cosine() - want) <= kCosineAtol);
  s.add(ref, ref, "layer 0");  // a second window without error
  CHECK(s.sq_diff == 14.0);
  CHECK(s.sq_ref == 8.0);
  CHECK(s.positions == 4);
  REQUIRE_THROWS_WITH(s.add(h, ref.reshape({2, 2, 1}), "layer 3 (resid_add_2.output)"),
                      Contains("layer 3 (resid_add_2.output)") && Contains("[1, 2, 2]") &&
                          Contains("[2, 2, 1]"));
}

TEST_CASE("layer-error of the float model against itself is exactly zero at every layer",
          "[unit]") {
  auto model = tiny_model();
  auto copy = tiny_model();
  const auto windows = windows_of({12, 7, 12});
  int64_t calls = 0;
  const auto progress = [&](const mq::ScoreProgress& p) {
    ++calls;
    CHECK(p.windows_done == calls);
    CHECK(p.windows_total == 3);
  };
  for (mq::CausalLm* ref : {&model, &copy}) {
    calls = 0;
    const mq::LayerErrorResult r = mq::evaluate_layer_error(model, *ref, windows, progress);
    CHECK(calls == 3);
    CHECK(r.windows == 3);
    CHECK(r.tokens == 31);
    REQUIRE(r.layers.size() == static_cast<size_t>(kLayers));
    for (size_t i = 0; i < r.layers.size(); ++i) {
      INFO("layer " << i);
      CHECK(r.layers[i].sq_diff == 0.0);
      CHECK(r.layers[i].rel_mse() == 0.0);
      CHECK(r.layers[i].sq_ref > 0.0);
      CHECK(r.layers[i].positions == 31);
      CHECK(std::abs(r.layers[i].cosine() - 1.0) <= kCosineAtol);
    }
    CHECK(r.final_norm.sq_diff == 0.0);
    CHECK(r.final_norm.positions == 31);
  }
  CHECK(model->hooks() == nullptr);  // the taps are gone again
}

TEST_CASE("layer-error is zero before a perturbed block and positive from it on", "[unit]") {
  auto reference = tiny_model();
  for (int64_t k : {int64_t{0}, int64_t{2}, kLayers - 1}) {
    auto perturbed = tiny_model();
    {
      torch::NoGradGuard no_grad;
      auto& w = perturbed->layer(k)->mlp->down_proj->weight;  // [C, F]
      w.add_(torch::full_like(w, 0.01));
    }
    const mq::LayerErrorResult r =
        mq::evaluate_layer_error(perturbed, reference, windows_of({10, 10}));
    for (int64_t i = 0; i < kLayers; ++i) {
      INFO("perturbed layer " << k << ", layer " << i << ": rel_mse "
                              << r.layers[static_cast<size_t>(i)].rel_mse());
      if (i < k) {
        CHECK(r.layers[static_cast<size_t>(i)].sq_diff == 0.0);
      } else {
        CHECK(r.layers[static_cast<size_t>(i)].rel_mse() > 0.0);
        CHECK(r.layers[static_cast<size_t>(i)].cosine() < 1.0);
      }
    }
    CHECK(r.final_norm.rel_mse() > 0.0);
  }
}

TEST_CASE("BlockOutputTap passes a quantized forward through bit for bit", "[unit]") {
  auto s = mq::test::make_tiny_w4a8();
  torch::NoGradGuard no_grad;
  mq::ForwardHooks* installed = s.lm.model->hooks();
  REQUIRE(installed != nullptr);  // the simulated quantization
  const auto ids = s.windows.narrow(0, 0, 2);                    // [2, 24]
  const auto plain = s.lm.model->forward(ids);                   // [2, 24, V]
  const int64_t layers = s.lm.model->config().num_hidden_layers;
  std::vector<int64_t> reported;
  torch::Tensor final_norm;  // [2, 24, C]
  mq::BlockOutputTap tap(installed, [&](int64_t layer, const torch::Tensor& h) {
    reported.push_back(layer);
    if (layer < 0) final_norm = h;
  });
  torch::Tensor tapped;  // [2, 24, V]
  {
    mq::ScopedHooks guard(s.lm.model, &tap);
    CHECK(s.lm.model->hooks() == &tap);
    tapped = s.lm.model->forward(ids);
  }
  CHECK(s.lm.model->hooks() == installed);
  CHECK(torch::equal(plain, tapped));
  std::vector<int64_t> expected;
  for (int64_t i = 0; i < layers; ++i) expected.push_back(i);
  expected.push_back(-1);
  CHECK(reported == expected);
  CHECK(torch::equal(final_norm, s.lm.model->hidden_states(ids)));

  // The quantized model against its float original: an error at every block.
  auto reference = mq::load_model((mq::test::golden_dir() / "tiny-llama").string()).model;
  mq::ScoringWindow w;
  for (int64_t i = 0; i < 25; ++i) w.tokens.push_back(s.windows[3][i % 24].item<int64_t>());
  w.num_scored = 24;
  const mq::LayerErrorResult r = mq::evaluate_layer_error(s.lm.model, reference, {w});
  for (size_t i = 0; i < r.layers.size(); ++i) {
    INFO("layer " << i);
    CHECK(r.layers[i].rel_mse() > 0.0);
  }
  CHECK(s.lm.model->hooks() == installed);
}

TEST_CASE("BlockOutputTap without inner hooks is the float model on its explicit path",
          "[unit]") {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(3, 259, {1, 16}, torch::kLong);  // [1, 16]
  const auto plain = model->forward(ids);                          // [1, 16, V] (SDPA path)
  int64_t calls = 0;
  mq::BlockOutputTap tap(nullptr, [&](int64_t, const torch::Tensor&) { ++calls; });
  mq::ScopedHooks guard(model, &tap);
  const auto tapped = model->forward(ids);                         // [1, 16, V] explicit path
  CHECK(calls == kLayers + 1);
  REQUIRE_ALLCLOSE(tapped, plain, kExplicitPathAtol);
}

TEST_CASE("layer_error_windows takes the first lm-eval wikitext windows in order", "[unit]") {
  const std::vector<std::string> rows = {
      "", " = Alpha = \n", "", " The alpha ( first ) letter , it 's said , is \" A \" . \n", "",
      "", " = Beta = \n", "", " Beta follows alpha ; N letters later comes omega . \n", ""};
  std::string dump;
  for (size_t i = 0; i < rows.size(); ++i) dump += (i ? "\n\n" : "") + rows[i];
  const mq::test::ByteTokenizer tok(false);
  const auto all = mq::lm_eval_wikitext_windows(tok, mq::wikitext_documents(dump), 16);
  REQUIRE(all.size() >= 5);
  const auto first = mq::layer_error_windows(tok, dump, 16, 3);
  REQUIRE(first.size() == 3);
  for (size_t i = 0; i < first.size(); ++i) {
    CHECK(first[i].tokens == all[i].tokens);
    CHECK(first[i].document == all[i].document);
  }
  CHECK(mq::layer_error_windows(tok, dump, 16, 1000).size() == all.size());
  REQUIRE_THROWS_WITH(mq::layer_error_windows(tok, dump, 16, 0),
                      Contains("layer-error") && Contains("got 0"));
}

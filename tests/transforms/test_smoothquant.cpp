// tests/transforms/test_smoothquant.cpp
// SmoothQuant (transforms/smoothquant.h) folds exactly the scales of §1.5 into the weights:
// s_j = max(a_j^alpha / max(w_j, 1e-5)^(1-alpha), 1e-5), recomputed here independently from
// the statistics and the original weights, per KV head for v -> o under GQA (tiny llama, 8:2);
// the model's fp32 output is unchanged; the static variant leaves up/down and v/o alone.
#include <catch2/catch.hpp>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/smoothquant.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace {

/// Largest relative max|Δ| of fp32 logits accepted after smoothing (an equivalent transform).
constexpr double kSmoothRelTolerance = 1e-5;

torch::Tensor expected_scale(const torch::Tensor& a, const torch::Tensor& w, double alpha) {
  auto out = torch::empty_like(a);
  for (int64_t j = 0; j < a.numel(); ++j) {
    const double aj = a[j].item<double>();
    const double wj = std::max(w[j].item<double>(), 1e-5);
    out[j] = std::max(std::pow(aj, alpha) / std::pow(wj, 1.0 - alpha), 1e-5);
  }
  return out;
}

}  // namespace

TEST_CASE("SmoothQuant-Edge folds the closed-form scales, per KV head under GQA", "[unit]") {
  auto lm = mq::load_model((mq::test::golden_dir() / "tiny-llama").string());
  const auto& cfg = lm.model->config();
  const auto ids = mq::test::golden_at("tiny-llama.unpadded.input_ids");      // [B, T]
  torch::NoGradGuard no_grad;
  const auto want = lm.model->forward(ids);
  const auto stats = mq::collect_act_stats(lm.model, ids, 1);
  const auto before = lm.model->layer(1)->weights();
  auto copy = [](const torch::Tensor& t) { return t.detach().clone(); };
  const auto norm1 = copy(before.input_layernorm.weight), q = copy(before.q_proj.weight),
             k = copy(before.k_proj.weight), v = copy(before.v_proj.weight),
             o = copy(before.o_proj.weight), up = copy(before.up_proj.weight),
             down = copy(before.down_proj.weight), norm2 = copy(before.post_attention_layernorm.weight),
             gate = copy(before.gate_proj.weight);
  constexpr double alpha = 0.5;
  mq::apply_smoothquant(lm.model, stats, alpha, mq::SmoothQuantVariant::kEdge);
  const auto after = lm.model->layer(1)->weights();

  // norm -> q/k/v: w_j over the three weights' columns, a from the norm output.
  auto w_qkv = torch::stack({q.abs().amax(0), k.abs().amax(0), v.abs().amax(0)}).amax(0);
  auto s_qkv = expected_scale(stats.at(1, mq::ActSite::kInputNormOut).absmax(), w_qkv, alpha);
  REQUIRE_ALLCLOSE(after.input_layernorm.weight, norm1 / s_qkv, 1e-6);
  REQUIRE_ALLCLOSE(after.q_proj.weight, q * s_qkv.unsqueeze(0), 1e-6);
  // norm -> gate/up.
  auto w_fc1 = torch::stack({gate.abs().amax(0), up.abs().amax(0)}).amax(0);
  auto s_fc1 = expected_scale(stats.at(1, mq::ActSite::kPostNormOut).absmax(), w_fc1, alpha);
  REQUIRE_ALLCLOSE(after.post_attention_layernorm.weight, norm2 / s_fc1, 1e-6);
  // up -> down.
  auto s_fc2 = expected_scale(stats.at(1, mq::ActSite::kDownIn).absmax(), down.abs().amax(0), alpha);
  REQUIRE_ALLCLOSE(after.down_proj.weight, down * s_fc2.unsqueeze(0), 1e-6);
  REQUIRE_ALLCLOSE(after.up_proj.weight, up * s_fc1.unsqueeze(0) / s_fc2.unsqueeze(1), 1e-6);
  // v -> o per KV head: a and w are maxima over the query heads each KV head serves.
  const int64_t h = cfg.num_attention_heads, kv = cfg.num_key_value_heads, d = cfg.head_dim;
  auto a_o = stats.at(1, mq::ActSite::kPvBmmOut).absmax().view({kv, h / kv, d}).amax(1).reshape({-1});
  auto w_o = o.abs().amax(0).view({kv, h / kv, d}).amax(1).reshape({-1});
  auto s_o = expected_scale(a_o, w_o, alpha);                                   // [KV*D]
  auto s_o_cols = s_o.view({kv, d}).repeat_interleave(h / kv, 0).reshape({-1}); // [H*D]
  REQUIRE_ALLCLOSE(after.o_proj.weight, o * s_o_cols.unsqueeze(0), 1e-6);
  REQUIRE_ALLCLOSE(after.v_proj.weight, v * s_qkv.unsqueeze(0) / s_o.unsqueeze(1), 1e-6);

  const auto got = lm.model->forward(ids);
  const double rel = (got - want).abs().max().item<double>() / want.abs().max().item<double>();
  CHECK(rel <= kSmoothRelTolerance);
}

TEST_CASE("SmoothQuant-Static smooths only the norms' consumers", "[unit]") {
  auto lm = mq::load_model((mq::test::golden_dir() / "tiny-stablelm").string());
  const auto ids = mq::test::golden_at("tiny-stablelm.unpadded.input_ids");
  torch::NoGradGuard no_grad;
  const auto stats = mq::collect_act_stats(lm.model, ids, 1);
  const auto before = lm.model->layer(0)->weights();
  const auto down = before.down_proj.weight.clone(), o = before.o_proj.weight.clone(),
             bias = before.input_layernorm.bias.clone();
  mq::apply_smoothquant(lm.model, stats, 0.6, mq::SmoothQuantVariant::kStatic);
  const auto after = lm.model->layer(0)->weights();
  REQUIRE(torch::equal(after.down_proj.weight, down));
  REQUIRE(torch::equal(after.o_proj.weight, o));
  REQUIRE_FALSE(torch::equal(after.input_layernorm.bias, bias));  // LayerNorm bias divided too
}

TEST_CASE("SmoothQuant: bad alpha and missing statistics are errors naming them", "[unit]") {
  auto lm = mq::load_model((mq::test::golden_dir() / "tiny-llama").string());
  mq::ActStats empty;
  REQUIRE_THROWS_WITH(mq::apply_smoothquant(lm.model, empty, 1.5, mq::SmoothQuantVariant::kEdge),
                      Catch::Contains("alpha") && Catch::Contains("1.5"));
  REQUIRE_THROWS_WITH(mq::apply_smoothquant(lm.model, empty, 0.5, mq::SmoothQuantVariant::kEdge),
                      Catch::Contains("model.layers.0.input_layernorm.output"));
}

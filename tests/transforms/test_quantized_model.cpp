// tests/transforms/test_quantized_model.cpp
// The equivalent transforms and the quantized wrapper (transforms/smooth_scales.h,
// transforms/quantized_model.h): with every quantizer off, arbitrary scales on every pair
// (norm -> q/k/v, norm -> gate/up, up -> down, v -> o per KV head, q <-> k tied through RoPE)
// leave fp32 outputs unchanged, applied on the fly and after folding, on llama (GQA 8:2),
// gemma (MQA, 1 + w norms) and stablelm (LayerNorm with bias, q/k/v bias, partial rotary) and
// on the real models; folding keeps the quantized forward too; saving and loading a quantized
// model gives the same logits.
#include <catch2/catch.hpp>

#include <filesystem>
#include <iostream>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/transforms/quantized_model.h"
#include "mobilequant/transforms/smoothquant.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

/// Largest max|Δ| / max|reference| of fp32 logits accepted for an equivalent transform.
constexpr double kEquivalenceRelTolerance = 1e-5;
/// The same bound for the quantized forward before and after folding (same arithmetic,
/// re-associated only by the order of the scale products).
constexpr double kFoldQuantRelTolerance = 1e-5;

mq::LoadedModel load_tiny(const std::string& name) {
  return mq::load_model((mq::test::golden_dir() / name).string());
}

/// Every site off: the "fp" preset.
mq::QuantConfig all_off() {
  mq::QuantConfig q;
  q.name = "off";
  for (auto& s : q.weights) s.enabled = false;
  for (auto& s : q.activations) s.enabled = false;
  return q;
}

/// The presets shipped in configs/quant.
mq::QuantConfig preset(const std::string& name) {
  return mq::load_quant_config(name, (mq::test::source_dir() / "configs" / "quant").string());
}

/// Sets every LET scale to a random value with |s| in [0.25, 4] and a random sign.
void randomize_scales(mq::QuantizedModelImpl& qm, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : qm.let_parameters()) {
    auto mag = torch::exp(torch::empty(p.sizes()).uniform_(std::log(0.25), std::log(4.0), gen));
    auto sign = torch::empty(p.sizes()).uniform_(0.0, 1.0, gen).lt(0.2).to(torch::kFloat32) * -2 + 1;
    p.copy_(mag * sign);
  }
}

double rel_diff(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

/// Input ids and mask of a golden padded batch (exercises masks and per-sequence positions).
std::pair<torch::Tensor, torch::Tensor> golden_batch(const std::string& name) {
  return {mq::test::golden_at(name + ".left_padded.input_ids"),
          mq::test::golden_at(name + ".left_padded.attention_mask")};
}

void check_equivalence(mq::CausalLm model, const torch::Tensor& ids, const torch::Tensor& mask,
                       const std::string& label) {
  torch::NoGradGuard no_grad;
  auto want = model->forward(ids, mask);                                      // [B, T, V]
  torch::Tensor norm_out_plain;                                               // [B, T, C]
  model->set_observer([&](int64_t layer, mq::ActSite site, const torch::Tensor& v) {
    if (layer == 0 && site == mq::ActSite::kInputNormOut) norm_out_plain = v.clone();
  });
  model->forward(ids, mask);
  model->set_observer(nullptr);

  mq::LetPairs all;  // every pair on
  mq::QuantizedModel qm(model, mq::QuantizedModelOptions(all_off()).let(all));
  randomize_scales(*qm, 7);
  torch::Tensor norm_out_scaled;
  qm->set_observer([&](int64_t layer, mq::ActSite site, const torch::Tensor& v) {
    if (layer == 0 && site == mq::ActSite::kInputNormOut) norm_out_scaled = v.clone();
  });
  auto on_the_fly = qm->forward(ids, mask);
  qm->set_observer(nullptr);
  const double d1 = rel_diff(on_the_fly, want);
  // The transform really acted: the norm output is the plain one divided by s.
  const auto s = qm->layer(0)->scales->qkv_smooth_scale.detach();
  REQUIRE_ALLCLOSE(norm_out_scaled, norm_out_plain / s, 1e-5);
  REQUIRE((norm_out_scaled - norm_out_plain).abs().max().item<double>() > 1e-3);

  qm->fold();
  for (auto& p : qm->let_parameters()) REQUIRE(torch::all(p == 1).item<bool>());
  auto folded_wrapped = qm->forward(ids, mask);
  const double d2 = rel_diff(folded_wrapped, want);
  model->set_hooks(nullptr);
  auto folded_plain = model->forward(ids, mask);
  const double d3 = rel_diff(folded_plain, want);
  std::cout << "  " << label << ": rel max|diff| on the fly " << d1 << ", folded (wrapped) " << d2
            << ", folded (plain) " << d3 << std::endl;
  CHECK(d1 <= kEquivalenceRelTolerance);
  CHECK(d2 <= kEquivalenceRelTolerance);
  CHECK(d3 <= kEquivalenceRelTolerance);
}

}  // namespace

TEST_CASE("LET: arbitrary scales on every pair leave the fp32 tiny models unchanged", "[unit]") {
  for (const std::string name : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << name);
    auto lm = load_tiny(name);
    auto [ids, mask] = golden_batch(name);
    check_equivalence(lm.model, ids, mask, name);
  }
}

TEST_CASE("LET: q/k scales are tied across rotary pairs and per KV head", "[unit]") {
  auto lm = load_tiny("tiny-stablelm");  // head_dim 16, rotary 4 (partial 0.25), 4 heads
  const auto& cfg = lm.model->config();
  mq::LayerScalesImpl s(cfg, mq::LetPairs{});
  REQUIRE(s.qkt_smooth_scale.sizes() ==
          torch::IntArrayRef({cfg.num_key_value_heads, cfg.head_dim - cfg.rotary_dim() / 2}));
  {
    torch::NoGradGuard no_grad;
    s.qkt_smooth_scale.copy_(torch::arange(s.qkt_smooth_scale.numel()).view_as(s.qkt_smooth_scale).to(torch::kFloat32) + 1);
  }
  auto rows = s.qkt_rows().view({cfg.num_key_value_heads, cfg.head_dim});       // [KV, D]
  const int64_t half = cfg.rotary_dim() / 2;
  REQUIRE(torch::equal(rows.narrow(1, 0, half), rows.narrow(1, half, half)));
  // Unrotated dims have their own scales, all distinct.
  REQUIRE(std::get<0>(torch::_unique(rows.reshape({-1}))).numel() == s.qkt_smooth_scale.numel());

  auto llama = load_tiny("tiny-llama");  // 8 query heads over 2 KV heads
  const auto& lc = llama.model->config();
  mq::LayerScalesImpl g(lc, mq::LetPairs{});
  {
    torch::NoGradGuard no_grad;
    g.out_smooth_scale.copy_(torch::arange(g.out_smooth_scale.numel()).to(torch::kFloat32) + 1);
  }
  auto cols = g.out_columns().view({lc.num_attention_heads, lc.head_dim});      // [H, D]
  const int64_t rep = lc.num_attention_heads / lc.num_key_value_heads;
  for (int64_t h = 0; h < lc.num_attention_heads; ++h)
    REQUIRE(torch::equal(cols[h], g.out_smooth_scale.view({lc.num_key_value_heads, lc.head_dim})[h / rep]));
}

TEST_CASE("LET: scales below 1e-2 in magnitude are truncated as in the reference", "[unit]") {
  auto lm = load_tiny("tiny-llama");
  mq::LayerScalesImpl s(lm.model->config(), mq::LetPairs{true, false, false, false, false});
  {
    torch::NoGradGuard no_grad;
    s.qkv_smooth_scale.fill_(1.0);
    s.qkv_smooth_scale[0] = 0.005;
    s.qkv_smooth_scale[1] = -0.001;
    s.qkv_smooth_scale[2] = 0.0;
    s.qkv_smooth_scale[3] = -3.0;
  }
  s.truncate();
  REQUIRE(s.qkv_smooth_scale[0].item<float>() == 0.01f);
  REQUIRE(s.qkv_smooth_scale[1].item<float>() == -0.01f);
  REQUIRE(s.qkv_smooth_scale[2].item<float>() == 0.0f);
  REQUIRE(s.qkv_smooth_scale[3].item<float>() == -3.0f);
}

TEST_CASE("Quantized model: folding LET and LWC keeps the quantized forward", "[unit]") {
  for (const std::string name : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << name);
    auto lm = load_tiny(name);
    auto [ids, mask] = golden_batch(name);
    torch::NoGradGuard no_grad;
    auto stats = mq::collect_act_stats(lm.model, ids, 1);
    mq::QuantizedModel qm(lm.model, mq::QuantizedModelOptions(preset("w4a8")).let(mq::LetPairs{}));
    randomize_scales(*qm, 11);
    // Ranges of the transformed model: observe it with quantization off.
    qm->set_quantization(false);
    mq::ActStats transformed;
    qm->set_observer([&](int64_t l, mq::ActSite s, const torch::Tensor& v) { transformed.observe(l, s, v); });
    qm->forward(ids, mask);
    qm->set_observer(nullptr);
    transformed.finish();
    qm->set_quantization(true);
    qm->set_act_ranges(transformed);
    qm->enable_lwc();
    auto gen = at::detail::createCPUGenerator(3);
    for (auto& p : qm->lwc_parameters()) p.copy_(torch::empty(p.sizes()).uniform_(0.0, 4.0, gen));
    auto before = qm->forward(ids, mask);
    auto plain = torch::Tensor();
    {
      lm.model->set_hooks(nullptr);
      plain = lm.model->forward(ids, mask);
      lm.model->set_hooks(qm.get());
    }
    REQUIRE(rel_diff(before, plain) > 1e-3);  // quantization is really on
    qm->fold();
    REQUIRE(qm->lwc_parameters().empty());
    auto after = qm->forward(ids, mask);
    const double d = rel_diff(after, before);
    std::cout << "  " << name << " w4a8: rel max|diff| of the quantized forward across fold " << d
              << std::endl;
    CHECK(d <= kFoldQuantRelTolerance);
  }
}

TEST_CASE("Quantized model: set_export_codes runs an fp64 model on its fp32 weight codes; "
          "LET scales are an error",
          "[unit]") {
  auto lm = load_tiny("tiny-llama");
  auto [ids, mask] = golden_batch("tiny-llama");
  torch::NoGradGuard no_grad;
  const mq::ActStats stats = mq::collect_act_stats(lm.model, ids, 1);  // of the float model
  mq::QuantizedModel qm(lm.model, mq::QuantizedModelOptions(preset("w4a8")));
  qm->set_act_ranges(stats);
  const mq::LayerWeights stored32 = lm.model->layer(0)->weights();
  const mq::LayerWeights w32 = qm->layer_weights(0, stored32);
  qm->to(torch::kFloat64);
  qm->set_export_codes(true);
  const mq::LayerWeights stored64 = lm.model->layer(0)->weights();
  REQUIRE(stored64.q_proj.weight.scalar_type() == torch::kFloat64);
  const mq::LayerWeights w64 = qm->layer_weights(0, stored64);
  for (const mq::WeightSite site : mq::EnumValues<mq::WeightSite>::values()) {
    INFO("site " << mq::to_string(site));
    const torch::Tensor& a = mq::weight_of(w64, site);
    REQUIRE(a.scalar_type() == torch::kFloat64);
    CHECK(torch::equal(a.to(torch::kFloat32), mq::weight_of(w32, site)));
  }
  CHECK(torch::isfinite(qm->forward(ids, mask)).all().item<bool>());
  qm->set_export_codes(false);
  qm->to(torch::kFloat32);

  mq::QuantizedModel let(lm.model, mq::QuantizedModelOptions(preset("w4a8")).let(mq::LetPairs{}));
  let->set_act_ranges(stats);
  let->set_export_codes(true);
  REQUIRE_THROWS_WITH(let->forward(ids, mask),
                      Catch::Contains("block 0 has LET scales") && Catch::Contains("folded"));
}

TEST_CASE("Quantized model: save and load give the same logits", "[unit]") {
  auto lm = load_tiny("tiny-llama");
  auto [ids, mask] = golden_batch("tiny-llama");
  torch::NoGradGuard no_grad;
  auto stats = mq::collect_act_stats(lm.model, ids, 1);
  mq::apply_smoothquant(lm.model, stats, 0.5, mq::SmoothQuantVariant::kEdge);
  auto smoothed = mq::collect_act_stats(lm.model, ids, 1);
  // With learnable scales on every pair, moved off 1 as training moves them (the saved model
  // folds them and keeps them at 1 under their names; loading must accept that).
  const bool with_let = GENERATE(false, true);
  INFO("LET scales: " << with_let);
  auto opts = mq::QuantizedModelOptions(preset("w8a8"));
  if (with_let) opts.let(mq::LetPairs{true, true, true, true, true});
  mq::QuantizedModel qm(lm.model, opts);
  auto gen = at::detail::createCPUGenerator(5);
  for (auto& p : qm->let_parameters()) p.mul_(1 + 0.2 * torch::rand(p.sizes(), gen));
  qm->set_act_ranges(smoothed);
  auto want = qm->forward(ids, mask);
  const auto dir = mq::test::scratch_dir("quantized_model") / "q";
  mq::QuantizedManifest manifest;
  manifest.base_model = (mq::test::golden_dir() / "tiny-llama").string();
  manifest.method = "smoothquant-edge";
  mq::save_quantized_model(dir.string(), *qm, manifest);
  for (const char* f : {"config.json", "model.safetensors", "quantizers.safetensors", "quantization.json"})
    REQUIRE(fs::exists(dir / f));
  auto loaded = mq::load_quantized_model(dir.string());
  REQUIRE(loaded.manifest.method == "smoothquant-edge");
  REQUIRE(loaded.manifest.quant.name == "w8a8");
  auto got = loaded.model->forward(ids, mask);
  REQUIRE_ALLCLOSE(got, want, 1e-6);
  // Writing again replaces the directory (no leftovers beside it).
  mq::save_quantized_model(dir.string(), *loaded.model, manifest);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.parent_path())) {
    (void)e;
    ++entries;
  }
  REQUIRE(entries == 1);
  mq::remove_tree(dir.parent_path().string());
}

TEST_CASE("Quantized model: a stray tensor in the quantizers file is an error naming it", "[unit]") {
  auto lm = load_tiny("tiny-llama");
  mq::QuantizedModel qm(lm.model, mq::QuantizedModelOptions(preset("w8a8")));
  mq::TensorMap t{{"model.layers.0.self_attn.bogus_quantizer.scale", torch::ones({})}};
  REQUIRE_THROWS_WITH(qm->load_quant_state(t, "x.safetensors"),
                      Catch::Contains("x.safetensors") &&
                          Catch::Contains("model.layers.0.self_attn.bogus_quantizer.scale"));
  mq::TensorMap bad{{"model.layers.0.mlp.w2.output_quantizer.scale", torch::ones({3})},
                    {"model.layers.0.mlp.w2.output_quantizer.offset", torch::ones({3})}};
  REQUIRE_THROWS_WITH(qm->load_quant_state(bad, "y.safetensors"),
                      Catch::Contains("model.layers.0.mlp.w2.output_quantizer"));
}

TEST_CASE("LET: arbitrary scales leave stories260K and SmolLM2-135M unchanged", "[model]") {
  const auto stories = mq::test::shared_dir() / "models" / "stories260K" / "stories260K.bin";
  const auto smol = mq::test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
  int ran = 0;
  for (const auto& path : {stories, smol}) {
    if (!fs::exists(path)) continue;
    auto lm = mq::load_model(path.string());
    auto gen = at::detail::createCPUGenerator(5);
    auto ids = torch::randint(0, lm.model->config().vocab_size, {2, 64}, gen);  // [2, 64]
    check_equivalence(lm.model, ids, torch::ones_like(ids), path.filename().string());
    ++ran;
  }
  if (ran == 0) MQ_SKIP("neither " << stories << " nor " << smol << " found");
}

TEST_CASE("Quantized model on CUDA: parameters beside the weights, logits as on the CPU", "[model]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  auto lm = load_tiny("tiny-llama");
  auto [ids, mask] = golden_batch("tiny-llama");
  torch::NoGradGuard no_grad;
  auto stats = mq::collect_act_stats(lm.model, ids, 1);
  mq::QuantizedModel cpu(lm.model, mq::QuantizedModelOptions(preset("w8a8")));
  cpu->set_act_ranges(stats);
  auto want = cpu->forward(ids, mask);
  auto state = cpu->quant_state();
  cpu = nullptr;  // uninstalls its hooks

  lm.model->to(torch::kCUDA);
  mq::QuantizedModel gpu(lm.model, mq::QuantizedModelOptions(preset("w8a8")));
  gpu->set_act_ranges(stats);  // CPU statistics, CUDA parameters
  for (const auto& p : gpu->lrl_parameters()) REQUIRE(p.is_cuda());
  gpu->set_weight_cache(true);
  auto got = gpu->forward(ids.cuda(), mask.cuda()).cpu();
  const double rel = rel_diff(got, want);
  std::cout << "  tiny-llama w8a8 CUDA vs CPU: rel max|diff| " << rel << std::endl;
  // Ranges are equal bit for bit; float differences between the devices can move a value
  // across a rounding boundary of the 8-bit grid, so compare loosely.
  CHECK(rel <= 1e-2);
  for (const auto& [name, t] : gpu->quant_state()) REQUIRE(torch::equal(t, state.at(name)));
}

TEST_CASE("Quantized model: with everything off the float path runs untouched", "[unit]") {
  auto lm = load_tiny("tiny-llama");
  auto [ids, mask] = golden_batch("tiny-llama");
  torch::NoGradGuard no_grad;
  auto want = lm.model->forward(ids, mask);
  {
    mq::QuantizedModel off(lm.model, mq::QuantizedModelOptions(preset("fp")));
    REQUIRE(lm.model->hooks() == nullptr);  // the SDPA path, at its own speed
    REQUIRE(torch::equal(off->forward(ids, mask), want));
    mq::QuantizedModel on(lm.model, mq::QuantizedModelOptions(preset("w8a8")));
    REQUIRE(lm.model->hooks() == on.get());
    on->set_quantization(false);
    REQUIRE(lm.model->hooks() == nullptr);
    on->set_quantization(true);
    REQUIRE(lm.model->hooks() == on.get());
  }
  REQUIRE(lm.model->hooks() == nullptr);  // the wrapper's destructor uninstalled itself
}

// tests/calib/test_act_stats.cpp
// Activation statistics: observe() per channel and per tensor, running over batches, in fp32
// for bf16 input; the non-finite check naming the site; the safetensors round trip and its
// errors; collect_act_stats on the tiny golden llama against min/max computed by a separate
// observer over the same windows (exact), and the model's hooks put back afterwards, also
// when the pass throws.
#include <catch2/catch.hpp>

#include <filesystem>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace {

using Key = std::pair<int64_t, mq::ActSite>;

/// Hooks that count their calls and change nothing (the "previously installed" hooks).
class CountingHooks : public mq::ForwardHooks {
 public:
  torch::Tensor activation(int64_t, mq::ActSite, const torch::Tensor& x) override {
    ++calls;
    return x;
  }
  int64_t calls = 0;
};

/// Running min/max the plain way: flatten to [rows, C] (or everything) and take min/max.
struct Reference {
  std::map<Key, std::pair<torch::Tensor, torch::Tensor>> range;  // [C] or [1] each, fp32
  std::map<Key, int64_t> batches;
  void add(int64_t layer, mq::ActSite site, const torch::Tensor& x) {
    const auto f = x.detach().to(torch::kCPU).to(torch::kFloat32);
    const auto rows = mq::has_channel_dim(site) ? f.flatten(0, -2) : f.reshape({-1, 1});
    auto mn = std::get<0>(rows.min(0));  // [C] or [1]
    auto mx = std::get<0>(rows.max(0));  // [C] or [1]
    auto it = range.find({layer, site});
    if (it != range.end()) {
      mn = torch::min(mn, it->second.first);
      mx = torch::max(mx, it->second.second);
    }
    range[{layer, site}] = {mn, mx};
    ++batches[{layer, site}];
  }
};

}  // namespace

TEST_CASE("ActStats::observe keeps running per-channel and per-tensor ranges in fp32",
          "[unit]") {
  torch::manual_seed(7);
  const auto a = torch::randn({2, 3, 4});  // [B, T, C]
  const auto b = torch::randn({1, 5, 4});  // [B, T, C]
  const auto s = torch::randn({2, 2, 3, 3});  // [B, H, T, T] scores
  mq::ActStats stats;
  stats.observe(0, mq::ActSite::kDownIn, a);
  stats.observe(0, mq::ActSite::kDownIn, b);
  stats.observe(1, mq::ActSite::kQkBmmOut, s);
  stats.finish();
  const auto& ch = stats.at(0, mq::ActSite::kDownIn);
  const auto both = torch::cat({a.reshape({-1, 4}), b.reshape({-1, 4})});  // [11, 4]
  CHECK(ch.batches == 2);
  CHECK(ch.min.sizes() == torch::IntArrayRef({4}));
  CHECK(torch::equal(ch.min, std::get<0>(both.min(0))));
  CHECK(torch::equal(ch.max, std::get<0>(both.max(0))));
  CHECK(torch::equal(ch.absmax(), std::get<0>(both.abs().max(0))));
  CHECK(ch.tensor_min().item<float>() == both.min().item<float>());
  CHECK(ch.tensor_max().item<float>() == both.max().item<float>());
  const auto& pt = stats.at(1, mq::ActSite::kQkBmmOut);
  CHECK(pt.batches == 1);
  CHECK(pt.min.sizes() == torch::IntArrayRef({1}));
  CHECK(pt.min.item<float>() == s.min().item<float>());
  CHECK(pt.max.item<float>() == s.max().item<float>());
  CHECK(stats.contains(0, mq::ActSite::kDownIn));
  CHECK_FALSE(stats.contains(1, mq::ActSite::kDownIn));
  CHECK_THROWS_WITH(stats.at(1, mq::ActSite::kDownIn),
                    Catch::Contains("model.layers.1.mlp.w2.input") &&
                        Catch::Contains("never observed"));
  // A different channel count at the same site is an error naming it.
  CHECK_THROWS_WITH(stats.observe(0, mq::ActSite::kDownIn, torch::zeros({2, 5})),
                    Catch::Contains("model.layers.0.mlp.w2.input") &&
                        Catch::Contains("got 5 channels") && Catch::Contains("expected 4"));

  // bf16 input: the stats are fp32 and equal the bf16 values exactly.
  mq::ActStats half;
  const auto x = (torch::randn({3, 8}) * 100).to(torch::kBFloat16);  // [T, C] bf16
  half.observe(-1, mq::ActSite::kLmHeadOut, x);
  half.finish();
  const auto& h = half.at(-1, mq::ActSite::kLmHeadOut);
  CHECK(h.min.scalar_type() == torch::kFloat32);
  CHECK(torch::equal(h.min, std::get<0>(x.to(torch::kFloat32).min(0))));
  CHECK(torch::equal(h.max, std::get<0>(x.to(torch::kFloat32).max(0))));
}

TEST_CASE("ActStats::finish rejects NaN and inf naming the site and the value", "[unit]") {
  auto x = torch::zeros({2, 3, 4});  // [B, T, C]
  x[1][2][3] = std::numeric_limits<float>::quiet_NaN();
  mq::ActStats stats;
  stats.observe(3, mq::ActSite::kUpOut, torch::ones({2, 3, 4}));
  stats.observe(3, mq::ActSite::kDownOut, torch::ones({2, 3, 4}));
  stats.observe(3, mq::ActSite::kDownOut, x);  // the NaN arrives in a later batch
  CHECK_THROWS_WITH(stats.finish(), Catch::Contains("model.layers.3.mlp.w2.output") &&
                                        Catch::Contains("nan") && Catch::Contains("index 3"));
  mq::ActStats inf;
  auto y = torch::tensor({0.0F, 1.0F, 2.0F, 3.0F}).reshape({2, 2});  // [T, C]
  y[1][0] = std::numeric_limits<float>::infinity();
  inf.observe(-1, mq::ActSite::kEmbedOut, y);
  CHECK_THROWS_WITH(inf.finish(), Catch::Contains("model.embed_tokens.output") &&
                                      Catch::Contains("max is inf at index 0"));
}

TEST_CASE("ActStats save/load round-trips ranges, batches and metadata", "[unit]") {
  torch::manual_seed(3);
  mq::ActStats stats;
  stats.observe(0, mq::ActSite::kInputNormIn, torch::randn({2, 4, 6}));
  stats.observe(0, mq::ActSite::kInputNormIn, torch::randn({2, 4, 6}));
  stats.observe(1, mq::ActSite::kPvBmmIn, torch::rand({1, 2, 4, 4}));
  stats.observe(-1, mq::ActSite::kFinalNormOut, torch::randn({2, 4, 6}));
  stats.finish();
  const auto dir = mq::test::scratch_dir("act_stats");
  const std::string path = (dir / "act_stats.safetensors").string();
  const std::map<std::string, std::string> meta = {{"model", "tiny"}, {"windows", "128x2048"}};
  stats.save(path, meta);

  std::map<std::string, std::string> got_meta;
  const auto loaded = mq::ActStats::load(path, &got_meta);
  CHECK(got_meta == meta);
  REQUIRE(loaded.entries().size() == stats.entries().size());
  for (const auto& [key, s] : stats.entries()) {
    INFO(mq::qualified_site_name(key.first, key.second));
    REQUIRE(loaded.contains(key.first, key.second));
    const auto& l = loaded.at(key.first, key.second);
    CHECK(torch::equal(l.min, s.min));
    CHECK(torch::equal(l.max, s.max));
    CHECK(l.batches == s.batches);
  }
  CHECK(loaded.at(0, mq::ActSite::kInputNormIn).batches == 2);
  // The tensor names are the qualified site names.
  const auto header = mq::read_safetensors_header(path);
  CHECK(header.tensors.count("model.layers.1.self_attn.pv_bmm.input.min") == 1);
  CHECK(header.tensors.count("model.norm.output.max") == 1);
  mq::remove_tree(dir.string());
}

TEST_CASE("ActStats::load names the file and the tensor it cannot place", "[unit]") {
  const auto dir = mq::test::scratch_dir("act_stats_bad");
  const std::string path = (dir / "bad.safetensors").string();
  const auto one = torch::ones({4});  // [C]
  const auto count = torch::tensor({int64_t{1}}, torch::kInt64);  // [1]
  mq::write_safetensors(path, {{"model.layers.0.mlp.w2.input.min", one},
                               {"model.layers.0.mlp.w2.input.max", one},
                               {"model.layers.0.mlp.w2.input.batches", count},
                               {"model.layers.0.mlp.bogus.input.min", one}});
  CHECK_THROWS_WITH(mq::ActStats::load(path),
                    Catch::Contains(path) &&
                        Catch::Contains("model.layers.0.mlp.bogus.input.min") &&
                        Catch::Contains("unknown tensor"));
  mq::write_safetensors(path, {{"lm_head.output.min", one}, {"lm_head.output.batches", count}});
  CHECK_THROWS_WITH(mq::ActStats::load(path),
                    Catch::Contains(path) && Catch::Contains("lm_head.output.max"));
  mq::write_safetensors(path, {{"model.layers.1.self_attn.qk_bmm.output.min", one},
                               {"model.layers.1.self_attn.qk_bmm.output.max", one},
                               {"model.layers.1.self_attn.qk_bmm.output.batches", count}});
  CHECK_THROWS_WITH(mq::ActStats::load(path),
                    Catch::Contains("'model.layers.1.self_attn.qk_bmm.output.m") &&
                        Catch::Contains("has shape [4], expected [1]"));
  // A block site without a layer, and a model-level site with one, are unknown too.
  mq::write_safetensors(path, {{"mlp.w2.input.min", one}});
  CHECK_THROWS_WITH(mq::ActStats::load(path), Catch::Contains("'mlp.w2.input.min'"));
  mq::write_safetensors(path, {{"model.layers.0.lm_head.output.min", one}});
  CHECK_THROWS_WITH(mq::ActStats::load(path), Catch::Contains("unknown tensor"));
  mq::remove_tree(dir.string());
}

TEST_CASE("collect_act_stats on tiny llama equals a separate observer and restores hooks",
          "[unit]") {
  auto loaded = mq::load_model((mq::test::golden_dir() / "tiny-llama").string());
  auto& model = loaded.model;
  model->eval();
  const int64_t vocab = model->config().vocab_size;
  torch::manual_seed(11);
  const auto windows = torch::randint(vocab, {5, 9}, torch::kInt64);  // [N, T]
  constexpr int64_t kBatch = 2;

  CountingHooks previous;
  model->set_hooks(&previous);
  using Progress = std::vector<std::pair<int64_t, int64_t>>;
  Progress progress;
  const auto stats = mq::collect_act_stats(model, windows, kBatch, [&](int64_t done, int64_t n) {
    progress.emplace_back(done, n);
  });
  CHECK(model->hooks() == &previous);
  CHECK(previous.calls == 0);
  CHECK(progress == Progress{{2, 5}, {4, 5}, {5, 5}});

  // The same windows in the same batches through a plain observer.
  Reference ref;
  model->set_observer([&](int64_t layer, mq::ActSite site, const torch::Tensor& x) {
    ref.add(layer, site, x);
  });
  {
    torch::NoGradGuard no_grad;
    for (int64_t b = 0; b < 5; b += kBatch) model->forward(windows.slice(0, b, b + kBatch));
  }
  model->set_observer({});
  REQUIRE(stats.entries().size() == ref.range.size());
  // Every site of every layer, plus the model-level ones.
  const auto layers = model->config().num_hidden_layers;
  CHECK(stats.contains(layers - 1, mq::ActSite::kResidAdd2Out));
  CHECK(stats.contains(-1, mq::ActSite::kLmHeadOut));
  for (const auto& [key, want] : ref.range) {
    INFO(mq::qualified_site_name(key.first, key.second));
    REQUIRE(stats.contains(key.first, key.second));
    const auto& s = stats.at(key.first, key.second);
    CHECK(s.min.device().is_cpu());
    CHECK(s.batches == ref.batches.at(key));
    CHECK(torch::equal(s.min, want.first));
    CHECK(torch::equal(s.max, want.second));
  }

  // An observer installed before is kept too, and a pass that throws still restores.
  int64_t observed = 0;
  model->set_observer([&](int64_t, mq::ActSite, const torch::Tensor&) { ++observed; });
  mq::ForwardHooks* const before = model->hooks();
  CHECK_THROWS_WITH(mq::collect_act_stats(model, windows, kBatch,
                                          [](int64_t, int64_t) {
                                            throw std::runtime_error("stop after a batch");
                                          }),
                    Catch::Contains("stop after a batch"));
  CHECK(model->hooks() == before);
  CHECK(observed == 0);
  {
    torch::NoGradGuard no_grad;
    model->forward(windows.slice(0, 0, 1));
  }
  CHECK(observed > 0);
  model->set_observer({});
}

// tests/eval/test_int_site_report.cpp
// mq::compare_int_sites and site_report_markdown (eval/int_site_report.h) on the golden tiny
// llama at W8A8 with random transforms and clipping (folded), its integer model written:
//   - against the fp64 simulation on the export's codes, every code of every site is equal;
//   - with one block's w2 multipliers edited, the first site that differs is that block's
//     mlp.w2.output, and the report names it;
//   - above the square-site limit, the [H, T, T] sites are left out and the report says so.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <filesystem>

#include "mobilequant/eval/int_site_report.h"
#include "mobilequant/export/int_model.h"
#include "mobilequant/io/safetensors_reader.h"
#include "tests/export/export_fixture.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

/// The golden tiny llama at W8A8, folded, its integer model under <scratch>/int.
struct Subject {
  mq::test::DeployedSubject s;
  fs::path dir;
  nlohmann::json activations;
  std::vector<int32_t> prompt;  // [T]
};

Subject make_subject(const std::string& tag, int64_t t) {
  Subject x;
  const auto quant = mq::load_quant_config(
      "w8a8", (mq::test::source_dir() / "configs" / "quant").string());
  x.s = mq::test::make_deployed_subject((mq::test::golden_dir() / "tiny-llama").string(), quant, 5);
  x.dir = mq::test::scratch_dir("int_sites_" + tag) / "int";
  mq::write_int_model(x.dir.string(), *x.s.qm, x.s.table);
  x.activations = mq::test::read_json_file(x.dir / "manifest.json")["activations"];
  auto gen = at::detail::createCPUGenerator(11);
  const auto ids = torch::randint(3, x.s.lm.model->config().vocab_size, {t}, gen);  // [T]
  for (int64_t i = 0; i < t; ++i) x.prompt.push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
  // The simulation as eval --runtime int --sites runs it: fp64, on the export's weight codes.
  x.s.qm->to(torch::kFloat64);
  x.s.qm->set_export_codes(true);
  return x;
}

}  // namespace

TEST_CASE("int site report: every site of the tiny llama equals the fp64 simulation",
          "[unit]") {
  Subject x = make_subject("equal", 24);
  const mq::rt::IntModel im = mq::rt::IntModel::load(x.dir.string());
  const auto sites = mq::compare_int_sites(*x.s.qm, im, x.activations, x.prompt, 1);
  const int64_t layers = x.s.lm.model->config().num_hidden_layers;
  // Every quantized block site of the manifest, each compared once.
  int64_t block_sites = 0;
  for (auto it = x.activations.begin(); it != x.activations.end(); ++it)
    block_sites += it.key().rfind("model.layers.", 0) == 0 ? 1 : 0;
  REQUIRE(static_cast<int64_t>(sites.size()) == block_sites);
  REQUIRE(sites.front().layer == 0);
  REQUIRE(sites.front().site == "input_layernorm.input");  // the order of computation
  REQUIRE(sites.back().layer == layers - 1);
  for (const auto& s : sites) {
    INFO("block " << s.layer << " " << s.site);
    CHECK(s.compared);
    CHECK(s.codes > 0);
    CHECK(s.equal == s.codes);
    CHECK(s.first_token == -1);
  }
  CHECK_THAT(mq::site_report_markdown(sites),
             Contains("Every code of every compared site equals the simulation's"));
  mq::remove_tree(x.dir.parent_path().string());
}

TEST_CASE("int site report: an edited multiplier is the first site that differs", "[unit]") {
  Subject x = make_subject("edited", 24);
  // Block 1's w2 multipliers 1/256 smaller (M - M/256, shifted up by one bit where that leaves
  // the 62-bit range): its output codes move, nothing before it does.
  const std::string p = (x.dir / "model.safetensors").string();
  mq::TensorMap t = mq::read_safetensors(p, /*keep_dtype=*/true);
  torch::Tensor& m = t.at("model.layers.1.mlp.w2.requant_multiplier");  // [N] int64
  torch::Tensor& n = t.at("model.layers.1.mlp.w2.requant_shift");       // [N] int32
  m.sub_(m.div(256, "floor"));
  const torch::Tensor low = m.abs() < (int64_t{1} << 62);               // [N]
  m.copy_(torch::where(low, m * 2, m));
  n.copy_(torch::where(low, n + 1, n));
  mq::write_safetensors(p, t);
  const mq::rt::IntModel im = mq::rt::IntModel::load(x.dir.string());
  const auto sites = mq::compare_int_sites(*x.s.qm, im, x.activations, x.prompt, 1);
  const mq::SiteAgreement* first = nullptr;
  for (const auto& s : sites)
    if (first == nullptr && s.equal < s.codes) first = &s;
  REQUIRE(first != nullptr);
  CHECK(first->layer == 1);
  CHECK(first->site == "mlp.w2.output");
  CHECK(first->max_diff >= 1);
  CHECK(first->first_token >= 0);
  CHECK(first->first_token < static_cast<int64_t>(x.prompt.size()));
  CHECK_THAT(mq::site_report_markdown(sites), Contains("First difference: block 1 mlp.w2.output"));
  mq::remove_tree(x.dir.parent_path().string());
}

TEST_CASE("int site report: [H, T, T] sites above the token limit are left out", "[unit]") {
  Subject x = make_subject("square", 24);
  const mq::rt::IntModel im = mq::rt::IntModel::load(x.dir.string());
  const auto sites = mq::compare_int_sites(*x.s.qm, im, x.activations, x.prompt, 1,
                                           /*max_square_tokens=*/8);
  int64_t left_out = 0;
  for (const auto& s : sites) {
    const bool square = s.site == "self_attn.qk_bmm.output" || s.site == "self_attn.pv_bmm.input";
    CHECK(s.compared == !square);
    left_out += square ? 1 : 0;
  }
  CHECK(left_out == 2 * x.s.lm.model->config().num_hidden_layers);
  CHECK_THAT(mq::site_report_markdown(sites), Contains("[H, T, T] sites left out"));
  mq::remove_tree(x.dir.parent_path().string());
}

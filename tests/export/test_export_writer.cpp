// tests/export/test_export_writer.cpp
// mq::export_model (export/export_writer.h) end to end on the golden tiny models:
//   - the exported files rebuild the simulated-quantization model bit for bit (CPU fp32):
//     hf/ + reference/default_qcfg.json + act_dict.json give the logits of the model exported;
//   - hf/ alone loads with our loader and gives the folded float model's logits bit for bit;
//   - AIMET min/max/scale/offset agree exactly, equal our quantizers' scales, and follow the
//     preset (per-channel entries, symmetric offsets, 16-bit and float sites);
//   - bad input: an existing directory without --force, an unfinished run, a run without a
//     model, a preset a format cannot express (naming the site), an edited or truncated file
//     (the loader names it) — and no partial directory is ever left behind.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/export/aimet_encodings.h"
#include "mobilequant/export/export_reader.h"
#include "mobilequant/export/reference_files.h"
#include "tests/export/export_fixture.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

/// Entries of `dir` (names only), to prove that nothing partial was left beside an export.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

/// Bitwise equality of two fp32 tensors (compared as int32 words).
bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() &&
         torch::equal(a.contiguous().view(torch::kInt32), b.contiguous().view(torch::kInt32));
}

}  // namespace

TEST_CASE("export: the exported files rebuild the fake-quant model bit for bit", "[unit]") {
  for (const std::string model : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << model);
    auto s = mq::test::make_export_subject("roundtrip_" + model, model, "w4a8");
    torch::NoGradGuard no_grad;
    const torch::Tensor want = s.qm->forward(s.windows);  // [4, 16, V], folded model
    const auto out = s.root / "export";
    mq::export_model(s.model_dir.string(), out.string(), mq::test::test_export_options());
    CHECK(mq::check_export(out.string()).empty());
    auto loaded = mq::load_export(out.string());
    const torch::Tensor got = loaded.model->forward(s.windows);
    INFO(mq::test::describe_max_diff(got, want));
    REQUIRE(bitwise_equal(got, want));
    mq::remove_tree(s.root.string());
  }
}

TEST_CASE("export: hf/ loads with our loader and gives the folded float logits bit for bit",
          "[unit]") {
  auto s = mq::test::make_export_subject("hf_logits");
  torch::NoGradGuard no_grad;
  const auto out = s.root / "export";
  mq::ExportOptions opts = mq::test::test_export_options();
  opts.formats = {mq::ExportFormat::kHf};
  mq::export_model(s.model_dir.string(), out.string(), opts);
  REQUIRE(fs::is_regular_file(out / "hf" / "config.json"));
  REQUIRE_FALSE(fs::exists(out / "aimet"));
  auto exported = mq::load_model((out / "hf").string());
  auto folded = mq::load_model(s.model_dir.string());  // the saved folded float model
  const torch::Tensor got = exported.model->forward(s.windows);
  const torch::Tensor want = folded.model->forward(s.windows);
  INFO(mq::test::describe_max_diff(got, want));
  REQUIRE(bitwise_equal(got, want));
  // The in-memory wrapper with quantization off computes the same float model (its hooks take
  // the explicit attention path, so equal within rounding, not bitwise).
  s.qm->set_quantization(false);
  REQUIRE_ALLCLOSE(s.qm->forward(s.windows), want, 1e-4);
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: AIMET encodings are exactly consistent and follow the preset", "[unit]") {
  for (const std::string preset : {"w4a8", "w8a8", "w4a8-sym"}) {
    INFO("preset " << preset);
    auto s = mq::test::make_export_subject("aimet_" + preset, "tiny-llama", preset);
    const auto out = s.root / "export";
    const auto m =
        mq::export_model(s.model_dir.string(), out.string(), mq::test::test_export_options());
    auto zero_inside = [&](const std::string& name) {
      return std::find(m.ranges_excluding_zero.begin(), m.ranges_excluding_zero.end(), name) ==
             m.ranges_excluding_zero.end();
    };
    const auto v061 = mq::test::read_json_file(out / "aimet" / mq::kAimet061File);
    const auto v100 = mq::test::read_json_file(out / "aimet" / mq::kAimet100File);
    REQUIRE(v061["version"] == "0.6.1");
    REQUIRE(v100["version"] == "1.0.0");
    const auto quant = s.qm->quant_config();
    const auto state = s.qm->quant_state();
    auto check_enc = [&](const nlohmann::json& e, const mq::QuantSpec& spec, bool zero_in) {
      REQUIRE(e["dtype"] == "int");
      REQUIRE(e["bitwidth"] == spec.bits);
      const double sc = e["scale"], mn = e["min"], mx = e["max"];
      const int64_t off = e["offset"];
      REQUIRE(sc > 0);
      // Exact, not approximately: min = offset * scale, max = min + scale * (2^b - 1).
      REQUIRE(mn == static_cast<double>(off) * sc);
      REQUIRE(mx == mn + sc * (std::ldexp(1.0, static_cast<int>(spec.bits)) - 1));
      if (spec.symmetric) REQUIRE(off == -(int64_t{1} << (spec.bits - 1)));
      if (zero_in) {  // zero is a code: the AIMET convention offset = round(min/scale) <= 0
        REQUIRE(off <= 0);
        REQUIRE(off >= -((int64_t{1} << spec.bits) - 1));
      }
    };
    const int64_t layers = s.lm.model->config().num_hidden_layers;
    for (int64_t layer = 0; layer < layers; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      // Activations: the learned fp32 scale, exactly; 16-bit sites where the preset says.
      for (const mq::ActSite site : {mq::ActSite::kQkBmmIn2, mq::ActSite::kQkBmmOut,
                                     mq::ActSite::kDownIn, mq::ActSite::kActIn2}) {
        const auto [module, field] = mq::split_site_name(site);
        const auto [io, index] = mq::aimet_io_slot(field);
        const auto& e = v061["activation_encodings"][p + module][io][index];
        check_enc(e, quant.act(site), zero_inside(p + mq::to_string(site)));
        const float want = state.at(p + mq::to_string(site) + "_quantizer.scale").item<float>();
        REQUIRE(e["scale"].get<double>() == static_cast<double>(want));
      }
      CHECK(v061["activation_encodings"][p + "self_attn.qk_bmm"]["output"]["0"]["bitwidth"] == 16);
      // resid_add_1 is no reference site and float in every preset here: no entry.
      CHECK_FALSE(v061["activation_encodings"].contains(p + "resid_add_1"));
      // Weights: one entry per output row where per channel.
      for (const mq::WeightSite site : mq::EnumValues<mq::WeightSite>::values()) {
        const mq::QuantSpec& spec = quant.weight(site);
        const auto& list = v061["param_encodings"][p + mq::to_string(site) + ".weight"];
        const auto w = s.lm.model->named_parameters()[p + mq::hf_module_name(site) + ".weight"];
        const int64_t want_n = spec.granularity == mq::Granularity::kPerChannel ? w.size(0) : 1;
        REQUIRE(static_cast<int64_t>(list.size()) == want_n);
        for (const auto& e : list)
          check_enc(e, spec, zero_inside(p + mq::to_string(site) + ".weight"));
      }
    }
    // 1.0.0 mirrors 0.6.1 entry for entry.
    for (const auto& e : v100["param_encodings"]) {
      const auto& old = v061["param_encodings"][e["name"].get<std::string>()];
      REQUIRE(e["scale"].size() == old.size());
      for (size_t i = 0; i < old.size(); ++i) {
        REQUIRE(e["scale"][i] == old[i]["scale"]);
        REQUIRE(e["offset"][i] == old[i]["offset"]);
      }
      REQUIRE(e["enc_type"] == (old.size() > 1 ? "PER_CHANNEL" : "PER_TENSOR"));
    }
    REQUIRE(mq::check_export(out.string()).empty());
    mq::remove_tree(s.root.string());
  }
}

TEST_CASE("export: float sites get float entries; learned off-integer offsets are rounded",
          "[unit]") {
  auto s = mq::test::make_export_subject("float_sites", "tiny-llama", "w8a8");
  // Turn one reference site off and drift a learned offset off the integer grid, then save.
  mq::QuantConfig q = s.qm->quant_config();
  const auto state = s.qm->quant_state();
  q.activations[static_cast<size_t>(mq::ActSite::kVProjOut)].enabled = false;
  mq::TensorMap kept;
  for (const auto& kv : state)
    if (kv.first.find("v_proj.output_quantizer") == std::string::npos) kept[kv.first] = kv.second;
  const std::string site = "model.layers.1.mlp.w1.output_quantizer.offset";
  kept[site] = kept.at(site) + 0.375;
  mq::test::save_with_quant_state(s, q, kept, s.root / "model2");
  const auto out = s.root / "export";
  const auto m = mq::export_model((s.root / "model2").string(), out.string(),
                                  mq::test::test_export_options());
  // Notes: the rounded offset, and the integer model left out (v_proj.output is float).
  REQUIRE(m.notes.size() == 2);
  CHECK_THAT(m.notes[0], Contains("rounded") && Contains("model.layers.1.mlp.w1.output"));
  CHECK_THAT(m.notes[1], Contains("format 'int' left out") && Contains("v_proj.output"));
  const auto v061 = mq::test::read_json_file(out / "aimet" / mq::kAimet061File);
  const auto& f = v061["activation_encodings"]["model.layers.0.self_attn.v_proj"]["output"]["0"];
  CHECK(f["dtype"] == "float");
  CHECK(f["bitwidth"] == 32);
  const double want = -std::nearbyint(kept.at(site).item<double>());
  CHECK(v061["activation_encodings"]["model.layers.1.mlp.w1"]["output"]["0"]["offset"] == want);
  const auto act = mq::test::read_json_file(out / "reference" / mq::kActDictFile);
  CHECK_FALSE(act["model.layers.0.self_attn.v_proj"].contains("output"));
  const auto qcfg = mq::test::read_json_file(out / "reference" / mq::kDefaultQcfgFile);
  CHECK(qcfg["model.layers.0.self_attn.v_proj"]["output"]["bitwidth"] == "32");
  CHECK(mq::check_export(out.string()).empty());
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: a learned activation scale below the reference's clamp is kept, with a note",
          "[unit]") {
  // Range learning does not clamp the scale (reference §3.2); choose_qparams' clamp to
  // [1e-5, 1e6] applies only when a scale is derived from a range. The export's readers must
  // give back the learned scale, not the clamped one.
  auto s = mq::test::make_export_subject("scale_clamp", "tiny-llama", "w4a8");
  mq::TensorMap state = s.qm->quant_state();
  const std::string site = "model.layers.1.self_attn.pv_bmm.input";
  const float learned = 0.6e-5f;  // probabilities clipped at 0.6e-5 * 65535 = 0.39
  state.at(site + "_quantizer.scale").fill_(learned);
  mq::QuantizedModel qm =
      mq::test::save_with_quant_state(s, s.qm->quant_config(), state, s.root / "model2");
  const auto out = s.root / "export";
  const auto m = mq::export_model((s.root / "model2").string(), out.string(),
                                  mq::test::test_export_options());
  REQUIRE(m.notes.size() == 1);
  CHECK_THAT(m.notes[0], Contains("1 learned activation scale(s) lie outside the reference's "
                                  "clamp") && Contains(site));
  CHECK(mq::check_export(out.string()).empty());
  torch::NoGradGuard no_grad;
  auto loaded = mq::load_export(out.string());
  const torch::Tensor got = loaded.model->forward(s.windows);  // [4, 16, V]
  const torch::Tensor want = qm->forward(s.windows);            // [4, 16, V]
  INFO(mq::test::describe_max_diff(got, want));
  REQUIRE(bitwise_equal(got, want));
  const auto im = mq::test::read_json_file(out / "int" / "manifest.json");
  CHECK(im["activations"][site]["scale"].get<double>() == static_cast<double>(learned));
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: an existing directory is refused without --force and replaced with it",
          "[unit]") {
  auto s = mq::test::make_export_subject("force");
  const auto out = s.root / "export";
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "old";
  auto opts = mq::test::test_export_options();
  REQUIRE_THROWS_WITH(mq::export_model(s.model_dir.string(), out.string(), opts),
                      Contains("already exists") && Contains("--force"));
  REQUIRE(fs::exists(out / "keep.txt"));  // untouched
  opts.force = true;
  mq::export_model(s.model_dir.string(), out.string(), opts);
  REQUIRE_FALSE(fs::exists(out / "keep.txt"));
  REQUIRE(fs::exists(out / mq::kExportManifestFile));
  // Nothing beside it: no .partial-* or .old-* directory.
  REQUIRE(entries(s.root) == std::vector<std::string>{"export", "model"});
  // The output may not be the source.
  REQUIRE_THROWS_WITH(mq::export_model(s.model_dir.string(), s.model_dir.string(), opts),
                      Contains("source"));
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: a failed export leaves no partial directory behind", "[unit]") {
  auto s = mq::test::make_export_subject("partial");
  // A quantizers file that does not fit the model fails after the partial directory exists.
  mq::TensorMap bad{{"model.layers.0.bogus_quantizer.scale", torch::ones({})}};
  mq::write_safetensors((s.model_dir / "quantizers.safetensors").string(), bad);
  REQUIRE_THROWS_WITH(mq::export_model(s.model_dir.string(), (s.root / "export").string(),
                                       mq::test::test_export_options()),
                      Contains("bogus_quantizer"));
  REQUIRE(entries(s.root) == std::vector<std::string>{"model"});
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: runs that did not finish or have no model are refused", "[unit]") {
  auto s = mq::test::make_export_subject("runs");
  const auto run = s.root / "run";
  fs::create_directories(run);
  std::ofstream(run / "config.json") << "{}";
  std::ofstream(run / "env.json") << "{}";
  fs::rename(s.model_dir, run / "model");
  const auto opts = mq::test::test_export_options();
  REQUIRE_THROWS_WITH(mq::export_model(run.string(), (s.root / "e").string(), opts),
                      Contains("did not finish") && Contains("results.json"));
  std::ofstream(run / "results.json") << R"({"model_dir": "", "config": {}})";
  REQUIRE_THROWS_WITH(mq::export_model(run.string(), (s.root / "e").string(), opts),
                      Contains("no quantized model"));
  std::ofstream(run / "results.json", std::ios::trunc)
      << R"({"model_dir": ")" << (run / "model").string() << R"(", "config": {}})";
  const auto src = mq::resolve_export_source(run.string());
  REQUIRE(src.is_run);
  REQUIRE(mq::default_export_dir(src) == fs::absolute(run / "export").string());
  const auto m = mq::export_model(run.string(), mq::default_export_dir(src), opts);
  CHECK(m.source["kind"] == "run");
  CHECK(mq::check_export((run / "export").string()).empty());
  // results.json names a model, but model/ is gone.
  fs::rename(run / "model", s.root / "moved");
  REQUIRE_THROWS_WITH(mq::export_model(run.string(), (s.root / "e").string(), opts),
                      Contains("model") && Contains("is missing"));
  REQUIRE_THROWS_WITH(mq::resolve_export_source((s.root / "e_missing").string()),
                      Contains("not a directory"));
  fs::create_directories(s.root / "empty");
  REQUIRE_THROWS_WITH(mq::resolve_export_source((s.root / "empty").string()),
                      Contains("neither a run directory"));
  REQUIRE_FALSE(fs::exists(s.root / "e"));
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: presets a format cannot express are refused, naming the site", "[unit]") {
  auto s = mq::test::make_export_subject("inexpressible");
  mq::QuantConfig q = s.qm->quant_config();
  // The reference has no quantizer at q_proj's input.
  mq::QuantConfig extra = q;
  extra.activations[static_cast<size_t>(mq::ActSite::kQProjIn)].enabled = true;
  REQUIRE_THROWS_WITH(mq::check_reference_expressible(extra),
                      Contains("self_attn.q_proj.input") && Contains("reference"));
  mq::check_aimet_expressible(extra);  // AIMET can hold it
  // AIMET holds 4..32 bits and no per-group weights.
  mq::QuantConfig three = q;
  three.weights[static_cast<size_t>(mq::WeightSite::kDown)].bits = 3;
  REQUIRE_THROWS_WITH(mq::check_aimet_expressible(three),
                      Contains("weights.mlp.w2") && Contains("3-bit"));
  mq::QuantConfig grouped = q;
  auto& g = grouped.weights[static_cast<size_t>(mq::WeightSite::kUp)];
  g.granularity = mq::Granularity::kPerGroup;
  g.group_size = 16;
  REQUIRE_THROWS_WITH(mq::check_aimet_expressible(grouped),
                      Contains("weights.mlp.w3") && Contains("per_group"));
  mq::check_reference_expressible(grouped);  // default_qcfg has group_size
  // End to end: the export refuses before writing anything.
  auto lm = mq::load_model(s.model_dir.string());
  mq::QuantizedModel qm(lm.model, mq::QuantizedModelOptions(three));
  qm->set_act_ranges(mq::collect_act_stats(lm.model, s.windows, 4));
  mq::QuantizedManifest manifest;
  save_quantized_model((s.root / "three").string(), *qm, manifest);
  REQUIRE_THROWS_WITH(mq::export_model((s.root / "three").string(), (s.root / "e").string(),
                                       mq::test::test_export_options()),
                      Contains("weights.mlp.w2") && Contains("AIMET"));
  REQUIRE_FALSE(fs::exists(s.root / "e"));
  auto opts = mq::test::test_export_options();
  opts.formats = {mq::ExportFormat::kHf, mq::ExportFormat::kReference};
  mq::export_model((s.root / "three").string(), (s.root / "e").string(), opts);
  CHECK(mq::check_export((s.root / "e").string()).empty());
  mq::remove_tree(s.root.string());
}

TEST_CASE("export: the loader names an edited or truncated file", "[unit]") {
  const auto edited = mq::test::export_copy("loader_edit");
  {
    auto j = mq::test::read_json_file(edited / "reference" / mq::kActDictFile);
    j["model.layers.0.mlp.w2"]["input"][1] = 123.0;
    mq::test::write_json_file(edited / "reference" / mq::kActDictFile, j);
  }
  REQUIRE_THROWS_WITH(mq::load_export(edited.string()),
                      Contains("reference/act_dict.json") && Contains("edited"));
  const auto cut = mq::test::export_copy("loader_cut");
  fs::resize_file(cut / "hf" / "model.safetensors", 100);
  REQUIRE_THROWS_WITH(mq::load_export(cut.string()),
                      Contains("hf/model.safetensors") && Contains("truncated"));
  mq::remove_tree(edited.parent_path().string());
  mq::remove_tree(cut.parent_path().string());
}

TEST_CASE("export: --format parses comma lists and names the allowed set", "[unit]") {
  using F = mq::ExportFormat;
  CHECK(mq::parse_export_formats("aimet,hf", "f") == std::vector<F>{F::kHf, F::kAimet});
  CHECK(mq::parse_export_formats("all", "f").size() == 5);
  CHECK(mq::parse_export_formats("", "f").size() == 5);
  REQUIRE_THROWS_WITH(mq::parse_export_formats("hf,tflite", "--format"),
                      Contains("--format") && Contains("tflite") &&
                          Contains("[hf, reference, aimet, int, onnx]"));
  REQUIRE_THROWS_WITH(mq::parse_export_formats("hf,hf", "--format"), Contains("twice"));
  mq::ExportOptions o;
  o.float_bits = 8;
  REQUIRE_THROWS_WITH(o.validate(), Contains("--float-bits") && Contains("8"));
}

TEST_CASE("export: every preset of configs/quant exports every format and lints clean", "[unit]") {
  const auto presets =
      mq::list_quant_presets((mq::test::source_dir() / "configs" / "quant").string());
  REQUIRE(presets.size() >= 7);
  for (const std::string& preset : presets) {
    INFO("preset " << preset);
    auto s = mq::test::make_export_subject("preset_" + preset, "tiny-llama", preset);
    const auto out = s.root / "export";
    const auto m =
        mq::export_model(s.model_dir.string(), out.string(), mq::test::test_export_options());
    // hf, reference, aimet: 6 files; int (2) and onnx (1) where they can express the preset.
    size_t want = 6;
    for (const auto f : m.formats)
      want += f == mq::ExportFormat::kInt ? 2 : f == mq::ExportFormat::kOnnx ? 1 : 0;
    CHECK(m.files.size() == want);
    if (preset != "fp") CHECK(m.formats.size() >= 4);  // int is expressible for every other preset
    const auto findings = mq::check_export(out.string());
    INFO(mq::format_findings(findings));
    CHECK(findings.empty());
    if (preset == "fp") {  // nothing quantized: every described site is a float entry
      const auto v100 = mq::test::read_json_file(out / "aimet" / mq::kAimet100File);
      for (const auto& e : v100["param_encodings"]) CHECK(e["dtype"] == "FLOAT");
      for (const auto& e : v100["activation_encodings"]) CHECK(e["dtype"] == "FLOAT");
    }
    mq::remove_tree(s.root.string());
  }
}

// tests/export/export_fixture.h
// The export tests' subjects: a golden tiny model calibrated at a preset, with every
// equivalent-transform scale and every LWC bound set to random non-trivial values (so that
// folding really changes the weights), saved as a quantized model directory; and helpers to
// copy an export, edit one of its JSON files and re-stamp the manifest's checksums (so that
// only the rule under test fires).
#pragma once

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/config/quantize_config.h"
#include "mobilequant/export/encoding_table.h"
#include "mobilequant/export/export_check.h"
#include "mobilequant/export/export_manifest.h"
#include "mobilequant/export/export_writer.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/transforms/quantized_checkpoint.h"
#include "mobilequant/transforms/quantized_model.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace mq::test {

/// A saved quantized model and the in-memory model it was saved from (folded by the save).
struct ExportSubject {
  std::filesystem::path root;       ///< scratch directory holding everything
  std::filesystem::path model_dir;  ///< root/model: the quantized model directory
  LoadedModel lm;                   ///< the float model inside qm
  QuantizedModel qm{nullptr};       ///< folded after the save
  torch::Tensor windows;            ///< [4, 16] int64 token ids
};

/// Calibrates golden model `model` at `preset` with every LET pair, randomises the LET scales
/// (0.5..2) and LWC bounds (1..4), and saves it to <scratch>/model (which folds it).
inline ExportSubject make_export_subject(const std::string& tag,
                                         const std::string& model = "tiny-llama",
                                         const std::string& preset = "w4a8") {
  ExportSubject s;
  s.root = scratch_dir("export_" + tag);
  s.model_dir = s.root / "model";
  s.lm = load_model((golden_dir() / model).string());
  auto gen = at::detail::createCPUGenerator(7);
  s.windows = torch::randint(0, s.lm.model->config().vocab_size, {4, 16}, gen);
  auto stats = collect_act_stats(s.lm.model, s.windows, 4);
  const auto quant = load_quant_config(preset, (source_dir() / "configs" / "quant").string());
  s.qm = QuantizedModel(s.lm.model, QuantizedModelOptions(quant).let(LetPairs{}));
  s.qm->set_act_ranges(stats);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : s.qm->let_parameters()) p.uniform_(0.5, 2.0, gen);
    s.qm->enable_lwc();
    for (auto& p : s.qm->lwc_parameters()) p.uniform_(1.0, 4.0, gen);
  }
  QuantizedManifest manifest;
  manifest.base_model = (golden_dir() / model).string();
  manifest.method = "test";
  save_quantized_model(s.model_dir.string(), *s.qm, manifest);
  return s;
}

/// Saves s's folded model again under `dir`, with quantization config `quant` and quantizer
/// state `state` (an edited copy of s.qm->quant_state()), and returns that model.
inline QuantizedModel save_with_quant_state(const ExportSubject& s, const QuantConfig& quant,
                                            const TensorMap& state,
                                            const std::filesystem::path& dir) {
  LoadedModel lm = load_model(s.model_dir.string());
  QuantizedModel qm(lm.model, QuantizedModelOptions(quant).let(LetPairs{}));
  qm->load_quant_state(state, "test");
  QuantizedManifest manifest;
  manifest.method = "test";
  save_quantized_model(dir.string(), *qm, manifest);
  return qm;
}

/// A folded model as training leaves one, for the exporters' fidelity tests.
struct DeployedSubject {
  LoadedModel lm;           ///< the float model inside qm
  QuantizedModel qm{nullptr};  ///< folded; activation offsets rounded as the export rounds them
  EncodingTable table;      ///< the export's encodings (taken before the offsets were rounded)
};

/// `model_path` calibrated at `quant` (LET on) on random windows, every LET scale drawn from
/// [0.8, 1.25] and every LWC bound from [2, 4], activation offsets pushed off the integers by up
/// to 0.4 (as range learning leaves them), folded; then its encoding table is built and its
/// offsets rounded, so that qm is the simulated model the export describes.
inline DeployedSubject make_deployed_subject(const std::string& model_path,
                                             const QuantConfig& quant, uint64_t seed) {
  DeployedSubject s;
  s.lm = load_model(model_path);
  auto gen = at::detail::createCPUGenerator(seed);
  const auto windows = torch::randint(0, s.lm.model->config().vocab_size, {8, 64}, gen);  // [8, 64]
  auto stats = collect_act_stats(s.lm.model, windows, 4);
  s.qm = QuantizedModel(s.lm.model, QuantizedModelOptions(quant));
  s.qm->set_act_ranges(stats);
  torch::NoGradGuard no_grad;
  for (auto& p : s.qm->let_parameters()) p.uniform_(0.8, 1.25, gen);
  s.qm->enable_lwc();
  for (auto& p : s.qm->lwc_parameters()) p.uniform_(2.0, 4.0, gen);
  for (auto& m : s.qm->modules(false))
    if (auto* q = m->as<ActFakeQuantizerImpl>(); q != nullptr && q->initialized())
      q->offset.add_(torch::rand(q->offset.sizes(), gen).sub_(0.5).mul_(0.8));
  s.qm->fold();
  s.table = build_encoding_table(*s.qm);
  for (auto& m : s.qm->modules(false))
    if (auto* q = m->as<ActFakeQuantizerImpl>(); q != nullptr && q->initialized())
      q->offset.round_();
  s.qm->invalidate_weight_cache();
  return s;
}

/// Export options of the tests (every format).
inline ExportOptions test_export_options() {
  ExportOptions o;
  o.provenance = {{"git_revision", "test"}, {"command_line", "mq_tests"}};
  return o;
}

/// A valid w4a8 export of the tiny llama, written once per process (removed at exit); tests
/// copy it.
inline const std::filesystem::path& valid_export() {
  struct Holder {
    std::filesystem::path root, dir;
    ~Holder() { remove_tree(root.string()); }
  };
  static const Holder h = [] {
    ExportSubject s = make_export_subject("valid");
    const auto out = s.root / "export";
    export_model(s.model_dir.string(), out.string(), test_export_options());
    return Holder{s.root, out};
  }();
  return h.dir;
}

/// Reads a JSON file.
inline nlohmann::json read_json_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// Writes a JSON file (2-space indent).
inline void write_json_file(const std::filesystem::path& p, const nlohmann::json& j) {
  std::ofstream out(p, std::ios::trunc);
  out << j.dump(2) << "\n";
}

/// Records the current sizes and checksums in the export's manifest.
inline void restamp(const std::filesystem::path& dir) {
  ExportManifest m = read_export_manifest(dir.string());
  stamp_checksums(dir.string(), m);
  write_export_manifest(dir.string(), m);
}

/// A fresh copy of valid_export() named `name`.
inline std::filesystem::path export_copy(const std::string& name) {
  const auto dst = scratch_dir("export_copy_" + name) / "export";
  std::filesystem::copy(valid_export(), dst, std::filesystem::copy_options::recursive);
  return dst;
}

/// A copy of valid_export() with `rel` (a JSON file) edited by `edit`, checksums re-stamped.
inline std::filesystem::path broken_export(const std::string& name, const std::string& rel,
                                           const std::function<void(nlohmann::json&)>& edit) {
  const auto dir = export_copy(name);
  nlohmann::json j = read_json_file(dir / rel);
  edit(j);
  write_json_file(dir / rel, j);
  restamp(dir);
  return dir;
}

/// True if some finding has `rule`, names `file` and has `key_part` in its key.
inline bool has_finding(const std::vector<CheckFinding>& fs, CheckRule rule,
                        const std::string& file, const std::string& key_part = "") {
  for (const auto& f : fs)
    if (f.rule == rule && f.file == file && f.key.find(key_part) != std::string::npos) return true;
  return false;
}

}  // namespace mq::test

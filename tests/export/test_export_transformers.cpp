// tests/export/test_export_transformers.cpp
// The exported hf/ directory in `transformers` (tests/oracle/hf_logits.py): AutoModelForCausalLM
// loads it with every weight matched and computes the logits our loader computes from it, for
// each golden tiny family exported at w4a8 (folded transforms and clipping included).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mobilequant/core/file_util.h"
#include "mobilequant/io/safetensors_reader.h"
#include "tests/export/export_fixture.h"

namespace fs = std::filesystem;

namespace {

/// Largest |logit - transformers' logit| accepted (fp32 vs fp32; the golden parity is ~1e-5).
constexpr double kLogitTolerance = 1e-4;
/// Exit status of hf_logits.py when a Python package is missing.
constexpr int kOracleMissingPackage = 3;

}  // namespace

TEST_CASE("export: transformers loads hf/ and computes our logits", "[model]") {
  const fs::path py = mq::test::python();
  if (py.has_parent_path() && !fs::exists(py)) MQ_SKIP("no Python oracle at " << py.string());
  for (const std::string model : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << model);
    auto s = mq::test::make_export_subject("transformers_" + model, model, "w4a8");
    const auto out = s.root / "export";
    mq::ExportOptions opts = mq::test::test_export_options();
    opts.formats = {mq::ExportFormat::kHf};
    mq::export_model(s.model_dir.string(), out.string(), opts);
    {
      std::ofstream ids(s.root / "ids.txt");
      for (int64_t r = 0; r < s.windows.size(0); ++r) {
        for (int64_t t = 0; t < s.windows.size(1); ++t)
          ids << (t ? " " : "") << s.windows[r][t].item<int64_t>();
        ids << "\n";
      }
    }
    const auto script = mq::test::source_dir() / "tests" / "oracle" / "hf_logits.py";
    const std::string cmd = "'" + py.string() + "' '" + script.string() + "' '" +
                            (out / "hf").string() + "' '" + (s.root / "ids.txt").string() +
                            "' '" + (s.root / "logits.safetensors").string() + "' > '" +
                            (s.root / "oracle.log").string() + "' 2>&1";
    const int status = std::system(cmd.c_str());
    std::stringstream log;
    log << std::ifstream(s.root / "oracle.log").rdbuf();
    if (WIFEXITED(status) && WEXITSTATUS(status) == kOracleMissingPackage)
      MQ_SKIP("hf_logits.py: " << log.str());
    if (status != 0) FAIL("oracle failed: " << cmd << "\n" << log.str());
    const auto oracle = mq::read_safetensors((s.root / "logits.safetensors").string(), true);
    auto ours = mq::load_model((out / "hf").string());
    torch::NoGradGuard no_grad;
    const torch::Tensor got = ours.model->forward(s.windows);  // [4, 16, V]
    for (int64_t r = 0; r < s.windows.size(0); ++r) {
      const auto& want = oracle.at("logits." + std::to_string(r));  // [16, V]
      std::cout << "  " << model << " window " << r << ": max|diff| vs transformers = "
                << mq::test::max_abs_diff(got[r], want) << std::endl;
      REQUIRE_ALLCLOSE(got[r], want, kLogitTolerance);
    }
    mq::remove_tree(s.root.string());
  }
}

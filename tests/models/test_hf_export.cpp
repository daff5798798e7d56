// tests/models/test_hf_export.cpp
// mq::write_hf_directory (models/hf_export.cpp):
//   (a) the golden tiny models (llama, gemma, stablelm) survive read -> write -> read with
//       every ModelConfig field and every tensor bit unchanged;
//   (b) configs transformers cannot express are refused, naming the field;
//   (c) stories260K (llama2.c .bin, q/k rows un-permuted by our reader) written as a Hugging
//       Face directory gives, in transformers (tests/oracle/hf_logits.py), the logits that our
//       decoder computes from the .bin: the llama2.c path is transformers-exact.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/hf_export.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/golden.h"
#include "mobilequant/core/file_util.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

/// Largest |logit - transformers' logit| accepted on the exported stories260K (fp32 vs fp32).
constexpr double kLogitTolerance = 1e-4;

/// Exit status of tests/oracle/hf_logits.py when a Python package is missing.
constexpr int kOracleMissingPackage = 3;

/// TinyStories-style prompts for stories260K (encoded as BOS + encode(text)).
const char* const kStoriesPrompts[] = {
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "The dog ran to the park. He saw a big red ball and wanted to play with it.",
};

fs::path stories_dir() { return mq::test::shared_dir() / "models" / "stories260K"; }

/// Checks every field of ModelConfig; INFO names the one that differs.
void check_same_config(const mq::ModelConfig& a, const mq::ModelConfig& b) {
#define CHECK_FIELD(f) \
  do {                 \
    INFO("field " #f); \
    CHECK(a.f == b.f); \
  } while (0)
  CHECK_FIELD(arch);
  CHECK_FIELD(vocab_size);
  CHECK_FIELD(hidden_size);
  CHECK_FIELD(intermediate_size);
  CHECK_FIELD(num_hidden_layers);
  CHECK_FIELD(num_attention_heads);
  CHECK_FIELD(num_key_value_heads);
  CHECK_FIELD(head_dim);
  CHECK_FIELD(max_position_embeddings);
  CHECK_FIELD(rope_theta);
  CHECK_FIELD(partial_rotary_factor);
  CHECK_FIELD(norm_eps);
  CHECK_FIELD(norm);
  CHECK_FIELD(hidden_act);
  CHECK_FIELD(attention_bias);
  CHECK_FIELD(o_proj_bias);
  CHECK_FIELD(mlp_bias);
  CHECK_FIELD(tie_word_embeddings);
  CHECK_FIELD(scale_embeddings);
  CHECK_FIELD(bos_token_id);
  CHECK_FIELD(eos_token_id);
#undef CHECK_FIELD
}

/// Checks that both maps hold the same names, shapes, dtypes and bits.
void check_same_tensors(const mq::TensorMap& a, const mq::TensorMap& b) {
  std::vector<std::string> names_a, names_b;
  for (const auto& kv : a) names_a.push_back(kv.first);
  for (const auto& kv : b) names_b.push_back(kv.first);
  REQUIRE(names_a == names_b);
  for (const auto& [name, t] : a) {
    INFO("tensor " << name);
    const torch::Tensor& u = b.at(name);
    REQUIRE(t.scalar_type() == torch::kFloat32);
    REQUIRE(u.scalar_type() == torch::kFloat32);
    REQUIRE(t.sizes() == u.sizes());
    INFO(mq::test::describe_max_diff(t, u));
    // Bitwise: compare the fp32 words as integers (NaN == NaN, -0 != +0).
    REQUIRE(torch::equal(t.contiguous().view(torch::kInt32), u.contiguous().view(torch::kInt32)));
  }
}

/// Why tests/oracle/hf_logits.py cannot run here, or "" when it can.
std::string oracle_unavailable() {
  const fs::path py = mq::test::python();
  // A bare name ("python3") is looked up on PATH by the shell; a path must exist.
  if (py.has_parent_path() && !fs::exists(py))
    return "no Python oracle at " + py.string() + " (run scripts/setup.sh or set MQ_PYTHON)";
  const std::string probe =
      "'" + py.string() + "' -c 'import transformers, safetensors.torch' > /dev/null 2>&1";
  if (std::system(probe.c_str()) != 0)
    return py.string() + " cannot import transformers and safetensors (run scripts/setup.sh)";
  return "";
}

/// Result of one oracle run: "" and the logits, or why it did not run.
struct OracleRun {
  std::string skip;     ///< non-empty: a Python package is missing (the test should skip)
  std::string failure;  ///< non-empty: the command and its log (the test should fail)
  mq::TensorMap out;    ///< logits.<k> [T_k, V] fp32, input_ids.<k> [T_k] int64
};

/// Writes `sequences` to `work`/ids.txt and runs tests/oracle/hf_logits.py on `model_dir`.
OracleRun run_hf_logits(const fs::path& model_dir,
                        const std::vector<std::vector<int64_t>>& sequences, const fs::path& work) {
  {
    std::ofstream ids(work / "ids.txt");
    for (const auto& seq : sequences) {
      for (size_t i = 0; i < seq.size(); ++i) ids << (i ? " " : "") << seq[i];
      ids << "\n";
    }
  }
  const auto script = mq::test::source_dir() / "tests" / "oracle" / "hf_logits.py";
  const auto out_path = work / "logits.safetensors";
  const auto log_path = work / "oracle.log";
  const std::string cmd = "'" + mq::test::python().string() + "' '" + script.string() + "' '" +
                          model_dir.string() + "' '" + (work / "ids.txt").string() + "' '" +
                          out_path.string() + "' > '" + log_path.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  OracleRun run;
  if (status == 0) {
    run.out = mq::read_safetensors(out_path.string(), /*keep_dtype=*/true);
    return run;
  }
  std::ifstream log(log_path);
  std::stringstream ss;
  ss << log.rdbuf();
  if (WIFEXITED(status) && WEXITSTATUS(status) == kOracleMissingPackage) {
    run.skip = ss.str();
  } else {
    run.failure = cmd + "\n" + ss.str();
  }
  return run;
}

}  // namespace

TEST_CASE("hf export: golden tiny models round-trip config and tensors bitwise", "[unit]") {
  for (const std::string name : {"tiny-llama", "tiny-gemma", "tiny-stablelm"}) {
    INFO("model " << name);
    const mq::Checkpoint first = mq::read_checkpoint((mq::test::golden_dir() / name).string());
    const auto dir = mq::test::scratch_dir("hf_export_" + name);
    mq::write_hf_directory(dir.string(), first.config, first.tensors);
    REQUIRE(fs::is_regular_file(dir / "config.json"));
    REQUIRE(fs::is_regular_file(dir / "model.safetensors"));
    REQUIRE_FALSE(fs::exists(dir / "config.json.tmp"));
    const mq::Checkpoint second = mq::read_checkpoint(dir.string());
    CHECK(second.format == "hf");
    check_same_config(first.config, second.config);
    check_same_tensors(first.tensors, second.tensors);
    mq::remove_tree(dir.string());
  }
}

TEST_CASE("hf export: configs transformers cannot express are refused, naming the field",
          "[unit]") {
  mq::ModelConfig c = mq::read_checkpoint((mq::test::golden_dir() / "tiny-llama").string()).config;
  // A missing special token is written as null, which the reader maps back to -1.
  c.eos_token_id = -1;
  CHECK(mq::hf_config_json(c)["eos_token_id"].is_null());

  mq::ModelConfig o_proj_only = c;
  o_proj_only.o_proj_bias = true;
  REQUIRE_THROWS_WITH(mq::hf_config_json(o_proj_only),
                      Contains("llama") && Contains("o_proj_bias") && Contains("attention_bias"));

  mq::ModelConfig erf_gemma =
      mq::read_checkpoint((mq::test::golden_dir() / "tiny-gemma").string()).config;
  erf_gemma.hidden_act = mq::Activation::kGeluErf;
  REQUIRE_THROWS_WITH(mq::hf_config_json(erf_gemma),
                      Contains("gemma") && Contains("hidden_act") && Contains("tanh"));

  mq::ModelConfig wide_stablelm =
      mq::read_checkpoint((mq::test::golden_dir() / "tiny-stablelm").string()).config;
  wide_stablelm.head_dim *= 2;
  REQUIRE_THROWS_WITH(mq::hf_config_json(wide_stablelm),
                      Contains("stablelm") && Contains("head_dim"));
}

TEST_CASE("hf export: stories260K (llama2.c) logits equal transformers' on the exported dir",
          "[model]") {
  const auto bin = stories_dir() / "stories260K.bin";
  if (!fs::exists(bin)) MQ_SKIP("no " << bin << " (set MQ_SHARED_DIR to the shared folder)");
  const std::string unavailable = oracle_unavailable();
  if (!unavailable.empty()) MQ_SKIP(unavailable);

  const mq::Checkpoint ckpt = mq::read_checkpoint(bin.string());
  REQUIRE(ckpt.format == "llama2c");
  REQUIRE(ckpt.tokenizer != nullptr);
  const auto work = mq::test::scratch_dir("hf_export_stories");
  const auto hf_dir = work / "stories260K-hf";
  mq::write_hf_directory(hf_dir.string(), ckpt.config, ckpt.tensors);

  std::vector<std::vector<int64_t>> sequences;
  for (const char* prompt : kStoriesPrompts) {
    std::vector<int64_t> ids = {ckpt.tokenizer->bos_id()};
    for (int64_t id : ckpt.tokenizer->encode(prompt)) ids.push_back(id);
    sequences.push_back(ids);
  }
  const OracleRun oracle = run_hf_logits(hf_dir, sequences, work);
  if (!oracle.skip.empty()) MQ_SKIP("hf_logits.py: " << oracle.skip);
  if (!oracle.failure.empty()) FAIL("oracle failed: " << oracle.failure);

  mq::LoadedModel ours = mq::build_model(ckpt);
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < sequences.size(); ++k) {
    INFO("prompt " << k << ": \"" << kStoriesPrompts[k] << "\"");
    const auto& ids = sequences[k];
    const auto& oracle_ids = oracle.out.at("input_ids." + std::to_string(k));  // [T]
    REQUIRE(torch::equal(oracle_ids, torch::tensor(ids, torch::kInt64)));
    const auto& want = oracle.out.at("logits." + std::to_string(k));           // [T, V]
    auto input = torch::tensor(ids, torch::kInt64).unsqueeze(0);               // [1, T]
    auto got = ours.model->forward(input)[0];                                   // [T, V]
    REQUIRE(got.sizes() == want.sizes());
    std::cout << "  stories260K prompt " << k << " (" << ids.size()
              << " tokens): max|diff| vs transformers = " << mq::test::max_abs_diff(got, want)
              << std::endl;
    REQUIRE_ALLCLOSE(got, want, kLogitTolerance);
    CHECK(torch::equal(got.argmax(-1), want.argmax(-1)));
  }
  mq::remove_tree(work.string());
}

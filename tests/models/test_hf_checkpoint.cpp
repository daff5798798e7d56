// tests/models/test_hf_checkpoint.cpp
// read_hf_checkpoint and the per-family config.json readers: how transformers' keys and
// defaults map onto ModelConfig, and every broken directory (built in a scratch dir from
// the golden tiny models) on its message.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/models/gemma.h"
#include "mobilequant/models/llama.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/models/stablelm.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;
using nlohmann::json;

namespace {

fs::path golden(const std::string& name) {
  return mq::test::source_dir() / "tests" / "golden" / name;
}

/// A writable copy of golden model `name` under a fresh scratch dir.
fs::path copy_golden(const std::string& name, const std::string& tag) {
  auto dst = mq::test::scratch_dir("hf_" + tag) / name;
  fs::copy(golden(name), dst, fs::copy_options::recursive);
  return dst;
}

json read_config(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  return json::parse(in);
}

void write_config(const fs::path& dir, const json& j) {
  std::ofstream(dir / "config.json", std::ios::trunc) << j.dump(2);
}

/// Applies `edit` to model.safetensors' tensors in place.
template <typename Edit>
void edit_tensors(const fs::path& dir, Edit edit) {
  const auto path = (dir / "model.safetensors").string();
  auto t = mq::read_safetensors(path);
  edit(t);
  mq::write_safetensors(path, t);
}

}  // namespace

TEST_CASE("HF config: llama keys and defaults as transformers reads them", "[unit]") {
  auto c = mq::read_hf_checkpoint(golden("tiny-llama").string(), "").config;
  CHECK(c.arch == mq::Arch::kLlama);
  CHECK(c.num_attention_heads == 8);
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 8);
  CHECK(c.rotary_dim() == 8);
  CHECK(c.norm == mq::NormKind::kRms);
  CHECK(c.hidden_act == mq::Activation::kSilu);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.scale_embeddings);
  CHECK(c.norm_eps == 1e-5);
  CHECK(c.rope_theta == 10000.0);

  // Absent keys take LlamaConfig's defaults; null head_dim / kv heads mean "derive".
  auto d = mq::llama_config_from_hf(
      json{{"hidden_size", 64}, {"num_attention_heads", 4}, {"num_key_value_heads", nullptr},
           {"head_dim", nullptr}, {"vocab_size", 10}, {"intermediate_size", 8},
           {"num_hidden_layers", 1}, {"attention_bias", true}, {"eos_token_id", {7, 8}},
           {"rope_scaling", nullptr}, {"rope_theta", 500000.0}},
      "cfg.json");
  CHECK(d.num_key_value_heads == 4);
  CHECK(d.head_dim == 16);
  CHECK(d.norm_eps == 1e-6);
  CHECK(d.attention_bias);
  CHECK(d.o_proj_bias);  // LlamaAttention's o_proj follows attention_bias
  CHECK(d.eos_token_id == 7);
  CHECK(d.rope_theta == 500000.0);
  // rope_parameters (transformers 5 spelling) wins over the top-level key.
  auto e = mq::llama_config_from_hf(
      json{{"hidden_size", 64}, {"num_attention_heads", 4}, {"vocab_size", 10},
           {"intermediate_size", 8}, {"num_hidden_layers", 1}, {"rope_theta", 1.0},
           {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 20000.0}}}},
      "cfg.json");
  CHECK(e.rope_theta == 20000.0);
}

TEST_CASE("HF config: gemma quirks (gelu means tanh, (1+w) norm, sqrt(d) scale, tied)",
          "[unit]") {
  auto dir = golden("tiny-gemma");
  REQUIRE(read_config(dir)["hidden_act"] == "gelu");
  auto c = mq::read_hf_checkpoint(dir.string(), "").config;
  CHECK(c.arch == mq::Arch::kGemma);
  CHECK(c.hidden_act == mq::Activation::kGeluTanh);
  CHECK(c.norm == mq::NormKind::kRmsOnePlus);
  CHECK(c.scale_embeddings);
  CHECK(c.tie_word_embeddings);
  CHECK(c.num_key_value_heads == 1);
  CHECK(c.head_dim == 24);
  CHECK(c.norm_eps == 1e-6);
  // tie_word_embeddings defaults to true for gemma, head_dim to 256.
  auto d = mq::gemma_config_from_hf(
      json{{"hidden_size", 64}, {"num_attention_heads", 1}, {"num_key_value_heads", 1},
           {"vocab_size", 10}, {"intermediate_size", 8}, {"num_hidden_layers", 1}},
      "cfg.json");
  CHECK(d.tie_word_embeddings);
  CHECK(d.head_dim == 256);
  CHECK(d.bos_token_id == 2);
  CHECK(d.eos_token_id == 1);
}

TEST_CASE("HF config: stablelm quirks (LayerNorm, partial rotary, qkv bias)", "[unit]") {
  auto c = mq::read_hf_checkpoint(golden("tiny-stablelm").string(), "").config;
  CHECK(c.arch == mq::Arch::kStableLm);
  CHECK(c.norm == mq::NormKind::kLayerNorm);
  CHECK(c.norm_eps == 1e-5);
  CHECK(c.partial_rotary_factor == 0.25);
  CHECK(c.rotary_dim() == 4);
  CHECK(c.attention_bias);
  CHECK_FALSE(c.o_proj_bias);
  CHECK_FALSE(c.mlp_bias);
  CHECK_FALSE(c.tie_word_embeddings);
  // The legacy top-level spelling of the fp16 copy reads the same.
  auto legacy = mq::read_hf_checkpoint(golden("tiny-stablelm-fp16").string(), "").config;
  REQUIRE(read_config(golden("tiny-stablelm-fp16")).contains("partial_rotary_factor"));
  CHECK(legacy.rotary_dim() == 4);
  // partial_rotary_factor defaults to 0.25.
  auto d = mq::stablelm_config_from_hf(
      json{{"hidden_size", 64}, {"num_attention_heads", 4}, {"num_key_value_heads", 4},
           {"vocab_size", 10}, {"intermediate_size", 8}, {"num_hidden_layers", 1}},
      "cfg.json");
  CHECK(d.partial_rotary_factor == 0.25);
  CHECK_FALSE(d.attention_bias);
}

TEST_CASE("HF config: ill-typed and unsupported keys are errors naming the key", "[unit]") {
  const json base = read_config(golden("tiny-llama"));
  auto with = [&](const char* key, const json& v) {
    json j = base;
    j[key] = v;
    return j;
  };
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("hidden_size", "576"), "x/config.json"),
                      Contains("x/config.json") && Contains("'hidden_size' must be an integer") &&
                          Contains("\"576\""));
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("hidden_size", 64.5), "c"),
                      Contains("'hidden_size' must be an integer") && Contains("64.5"));
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("tie_word_embeddings", "yes"), "c"),
                      Contains("'tie_word_embeddings' must be true or false"));
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("rms_norm_eps", "1e-5"), "c"),
                      Contains("'rms_norm_eps' must be a number"));
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("hidden_act", "relu2"), "c"),
                      Contains("unsupported activation 'relu2'"));
  REQUIRE_THROWS_WITH(
      mq::llama_config_from_hf(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "c"),
      Contains("rope_scaling.rope_type = 'linear' is unsupported"));
  REQUIRE_THROWS_WITH(
      mq::llama_config_from_hf(
          with("rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 5e5}}), "c"),
      Contains("rope_parameters.rope_type = 'llama3' is unsupported"));
  REQUIRE_THROWS_WITH(mq::llama_config_from_hf(with("num_key_value_heads", 3), "c"),
                      Contains("multiple of num_key_value_heads (3)"));

  const json st = read_config(golden("tiny-stablelm"));
  auto st_with = [&](const char* key, const json& v) {
    json j = st;
    j[key] = v;
    return j;
  };
  REQUIRE_THROWS_WITH(mq::stablelm_config_from_hf(st_with("qk_layernorm", true), "c"),
                      Contains("qk_layernorm = true is unsupported"));
  REQUIRE_THROWS_WITH(mq::stablelm_config_from_hf(st_with("use_parallel_residual", true), "c"),
                      Contains("use_parallel_residual = true is unsupported"));
  json gm = read_config(golden("tiny-gemma"));
  gm["use_bidirectional_attention"] = true;
  REQUIRE_THROWS_WITH(mq::gemma_config_from_hf(gm, "c"),
                      Contains("use_bidirectional_attention = true is unsupported"));
}

TEST_CASE("HF checkpoint: broken directories are errors naming the file and tensor", "[unit]") {
  SECTION("not a directory with config.json") {
    auto dir = mq::test::scratch_dir("hf_empty");
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains(dir.string()) && Contains("no config.json"));
  }
  SECTION("unknown model_type") {
    auto dir = copy_golden("tiny-llama", "arch");
    auto j = read_config(dir);
    j["model_type"] = "gpt2";
    write_config(dir, j);
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("config.json") && Contains("unsupported architecture 'gpt2'"));
  }
  SECTION("no model_type") {
    auto dir = copy_golden("tiny-llama", "notype");
    auto j = read_config(dir);
    j.erase("model_type");
    write_config(dir, j);
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()), Contains("no 'model_type' key"));
  }
  SECTION("malformed config.json") {
    auto dir = copy_golden("tiny-llama", "badjson");
    std::ofstream(dir / "config.json", std::ios::trunc) << "{\"model_type\": ";
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("config.json") && Contains("malformed JSON"));
  }
  SECTION("ill-typed key") {
    auto dir = copy_golden("tiny-llama", "type");
    auto j = read_config(dir);
    j["hidden_size"] = "576";
    write_config(dir, j);
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("config.json") && Contains("'hidden_size' must be an integer") &&
                            Contains("\"576\" (string)"));
  }
  SECTION("no weights") {
    auto dir = copy_golden("tiny-llama", "noweights");
    fs::remove(dir / "model.safetensors");
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("neither model.safetensors nor model.safetensors.index.json"));
  }
  SECTION("truncated model.safetensors") {
    auto dir = copy_golden("tiny-llama", "trunc");
    fs::resize_file(dir / "model.safetensors", 5000);
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("model.safetensors") && Contains("file truncated?"));
  }
  SECTION("missing tensor") {
    auto dir = copy_golden("tiny-llama", "missing");
    edit_tensors(dir, [](mq::TensorMap& t) { t.erase("model.layers.1.mlp.up_proj.weight"); });
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("tensor 'model.layers.1.mlp.up_proj.weight' not found") &&
                            Contains("[96, 64]"));
  }
  SECTION("misshapen tensor") {
    auto dir = copy_golden("tiny-llama", "shape");
    edit_tensors(dir, [](mq::TensorMap& t) {
      t["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({64, 64});
    });
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("tensor 'model.layers.0.self_attn.k_proj.weight' has shape "
                                 "[64, 64], expected [16, 64]"));
  }
  SECTION("extra unexpected tensor") {
    auto dir = copy_golden("tiny-llama", "extra");
    edit_tensors(dir, [](mq::TensorMap& t) {
      t["model.layers.0.self_attn.q_norm.weight"] = torch::ones({8});
    });
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"));
  }
  SECTION("missing shard") {
    auto dir = copy_golden("tiny-gemma-sharded", "shard");
    fs::remove(dir / "model-00002-of-00002.safetensors");
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("model.safetensors.index.json") &&
                            Contains("shard 'model-00002-of-00002.safetensors'") &&
                            Contains("not found"));
  }
  SECTION("tensor listed in the index but absent from its shard") {
    auto dir = copy_golden("tiny-gemma-sharded", "listed");
    const auto index_path = dir / "model.safetensors.index.json";
    std::ifstream index_in(index_path);
    json index = json::parse(index_in);
    index_in.close();
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors";
    std::ofstream(index_path, std::ios::trunc) << index.dump();
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()),
                        Contains("tensor 'model.layers.9.mlp.up_proj.weight' is listed in shard "
                                 "'model-00001-of-00002.safetensors'") &&
                            Contains("does not contain it"));
  }
  SECTION("index without weight_map") {
    auto dir = copy_golden("tiny-gemma-sharded", "nomap");
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << "{\"metadata\": {}}";
    REQUIRE_THROWS_WITH(mq::load_model(dir.string()), Contains("'weight_map'"));
  }
}

TEST_CASE("HF checkpoint: tokenizer.model beside the model or given explicitly", "[unit]") {
  REQUIRE(mq::read_hf_checkpoint(golden("tiny-llama").string(), "").tokenizer == nullptr);
  REQUIRE_THROWS_WITH(mq::read_hf_checkpoint(golden("tiny-llama").string(), "/nonexistent.model"),
                      Contains("tokenizer '/nonexistent.model': no such file"));
  const auto spm = mq::test::shared_dir() / "models" / "llama2-tokenizer" / "tokenizer.model";
  if (!fs::exists(spm)) MQ_SKIP("no " << spm.string());
  auto explicit_tok = mq::read_hf_checkpoint(golden("tiny-llama").string(), spm.string());
  REQUIRE(explicit_tok.tokenizer != nullptr);
  REQUIRE(explicit_tok.tokenizer->encode("Once upon a time,") ==
          std::vector<int64_t>{9038, 2501, 263, 931, 29892});
  auto dir = copy_golden("tiny-llama", "tok");
  fs::create_symlink(spm, dir / "tokenizer.model");
  auto beside = mq::read_hf_checkpoint(dir.string(), "");
  REQUIRE(beside.tokenizer != nullptr);
  REQUIRE(beside.tokenizer->bos_id() == 1);
  REQUIRE(beside.tokenizer->adds_bos());
}

// mobilequant/models/hf_export.cpp
#include "mobilequant/models/hf_export.h"

#include <filesystem>
#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"

namespace mq {

namespace fs = std::filesystem;

nlohmann::json hf_config_json(const ModelConfig& c) {
  nlohmann::json j;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["hidden_act"] = to_string(c.hidden_act);
  j["torch_dtype"] = "float32";
  switch (c.arch) {
    case Arch::kLlama:
      j["model_type"] = "llama";
      j["architectures"] = {"LlamaForCausalLM"};
      j["rms_norm_eps"] = c.norm_eps;
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = c.mlp_bias;
      break;
    case Arch::kGemma:
      j["model_type"] = "gemma";
      j["architectures"] = {"GemmaForCausalLM"};
      j["rms_norm_eps"] = c.norm_eps;
      j["attention_bias"] = c.attention_bias;
      break;
    case Arch::kStableLm:
      j["model_type"] = "stablelm";
      j["architectures"] = {"StableLmForCausalLM"};
      j["layer_norm_eps"] = c.norm_eps;
      j["partial_rotary_factor"] = c.partial_rotary_factor;
      j["use_qkv_bias"] = c.attention_bias;
      j["qk_layernorm"] = false;
      j["use_parallel_residual"] = false;
      break;
  }
  return j;
}

void write_hf_directory(const std::string& dir, const ModelConfig& cfg, const TensorMap& tensors) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  MQ_CHECK(!ec, "write_hf_directory: cannot create '", dir, "': ", ec.message());
  TensorMap out;
  for (const auto& kv : tensors) {
    if (cfg.tie_word_embeddings && kv.first == "lm_head.weight") continue;
    out[kv.first] = kv.second.to(torch::kFloat32).contiguous();
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  const auto path = fs::path(dir) / "config.json";
  const auto tmp = fs::path(dir) / "config.json.tmp";
  {
    std::ofstream f(tmp);
    MQ_CHECK(f.good(), "write_hf_directory: cannot write '", tmp.string(), "'");
    f << hf_config_json(cfg).dump(2) << "\n";
    MQ_CHECK(f.good(), "write_hf_directory: write to '", tmp.string(), "' failed");
  }
  fs::rename(tmp, path);
}

}  // namespace mq

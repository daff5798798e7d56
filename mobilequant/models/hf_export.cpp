// mobilequant/models/hf_export.cpp
// ModelConfig -> config.json per family (the keys each family's reader in llama.cpp,
// gemma.cpp and stablelm.cpp reads back), and the directory writer. A config that the
// family's transformers class cannot express is refused rather than silently changed.
#include "mobilequant/models/hf_export.h"

#include <filesystem>
#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

/// Throws unless `cond`: `field` of the config has a value transformers' `family` config
/// cannot express, so the exported directory would be a different model.
void require_expressible(bool cond, const char* family, const char* field,
                         const std::string& actual, const std::string& why) {
  MQ_CHECK(cond, "hf_config_json: ", family, " config with ", field, " = ", actual,
           " cannot be written as a Hugging Face config.json (", why, ")");
}

/// A special-token id as config.json spells it: -1 (none) becomes null.
nlohmann::json token_id_json(int64_t id) {
  return id < 0 ? nlohmann::json(nullptr) : nlohmann::json(id);
}

}  // namespace

nlohmann::json hf_config_json(const ModelConfig& c) {
  c.validate("hf_config_json");
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
  j["bos_token_id"] = token_id_json(c.bos_token_id);
  j["eos_token_id"] = token_id_json(c.eos_token_id);
  j["hidden_act"] = to_string(c.hidden_act);
  j["torch_dtype"] = "float32";
  switch (c.arch) {
    case Arch::kLlama:
      require_expressible(c.norm == NormKind::kRms, "llama", "norm", "non-RMS",
                          "LlamaRMSNorm is fixed");
      require_expressible(!c.scale_embeddings, "llama", "scale_embeddings", "true",
                          "llama does not scale its embeddings");
      require_expressible(c.o_proj_bias == c.attention_bias, "llama", "o_proj_bias",
                          c.o_proj_bias ? "true" : "false",
                          "attention_bias sets the q/k/v and o_proj biases together");
      require_expressible(c.partial_rotary_factor == 1.0, "llama", "partial_rotary_factor",
                          std::to_string(c.partial_rotary_factor),
                          "llama's default RoPE rotates the whole head");
      j["model_type"] = "llama";
      j["architectures"] = {"LlamaForCausalLM"};
      j["rms_norm_eps"] = c.norm_eps;
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = c.mlp_bias;
      break;
    case Arch::kGemma:
      require_expressible(c.norm == NormKind::kRmsOnePlus, "gemma", "norm", "not (1+w) RMS",
                          "GemmaRMSNorm is fixed");
      require_expressible(c.scale_embeddings, "gemma", "scale_embeddings", "false",
                          "gemma always scales its embeddings by sqrt(hidden_size)");
      require_expressible(c.hidden_act != Activation::kGeluErf, "gemma", "hidden_act", "gelu",
                          "GemmaConfig reads 'gelu' as the tanh approximation");
      require_expressible(!c.mlp_bias && c.o_proj_bias == c.attention_bias, "gemma",
                          "mlp_bias/o_proj_bias", c.mlp_bias ? "mlp_bias true" : "o_proj_bias",
                          "gemma has no MLP bias and attention_bias covers o_proj");
      require_expressible(c.partial_rotary_factor == 1.0, "gemma", "partial_rotary_factor",
                          std::to_string(c.partial_rotary_factor),
                          "gemma's default RoPE rotates the whole head");
      j["model_type"] = "gemma";
      j["architectures"] = {"GemmaForCausalLM"};
      j["rms_norm_eps"] = c.norm_eps;
      j["attention_bias"] = c.attention_bias;
      break;
    case Arch::kStableLm:
      require_expressible(c.norm == NormKind::kLayerNorm, "stablelm", "norm", "not LayerNorm",
                          "StableLM uses LayerNorm with bias");
      require_expressible(!c.scale_embeddings, "stablelm", "scale_embeddings", "true",
                          "stablelm does not scale its embeddings");
      require_expressible(!c.mlp_bias && !c.o_proj_bias, "stablelm", "mlp_bias/o_proj_bias",
                          "true", "stablelm has neither");
      require_expressible(c.head_dim * c.num_attention_heads == c.hidden_size, "stablelm",
                          "head_dim", std::to_string(c.head_dim),
                          "stablelm's head width is hidden_size / num_attention_heads");
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

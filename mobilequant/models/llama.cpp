// mobilequant/models/llama.cpp
// LlamaConfig (transformers/models/llama/configuration_llama.py) -> ModelConfig.
#include "mobilequant/models/llama.h"

#include "mobilequant/core/error.h"
#include "mobilequant/models/hf_config_keys.h"

namespace mq {

ModelConfig llama_config_from_hf(const nlohmann::json& config, const std::string& where) {
  const HfConfigKeys k(config, where);
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.vocab_size = k.integer("vocab_size", 32000);
  c.hidden_size = k.integer("hidden_size", 4096);
  c.intermediate_size = k.integer("intermediate_size", 11008);
  c.num_hidden_layers = k.integer("num_hidden_layers", 32);
  c.num_attention_heads = k.integer("num_attention_heads", 32);
  MQ_CHECK(c.num_attention_heads > 0, where, ": key 'num_attention_heads' must be positive, found ",
           c.num_attention_heads);
  MQ_CHECK(c.hidden_size % c.num_attention_heads == 0, where, ": hidden_size (", c.hidden_size,
           ") must be a multiple of num_attention_heads (", c.num_attention_heads, ")");
  c.num_key_value_heads = k.integer("num_key_value_heads", c.num_attention_heads, true);
  c.head_dim = k.integer("head_dim", c.hidden_size / c.num_attention_heads, true);
  c.hidden_act = parse_activation(k.string("hidden_act", "silu"), where + ": hidden_act");
  c.max_position_embeddings = k.integer("max_position_embeddings", 2048);
  c.norm_eps = k.number("rms_norm_eps", 1e-6);
  c.norm = NormKind::kRms;
  c.tie_word_embeddings = k.boolean("tie_word_embeddings", false);
  c.attention_bias = k.boolean("attention_bias", false);
  c.o_proj_bias = c.attention_bias;  // LlamaAttention gives o_proj bias=attention_bias too
  c.mlp_bias = k.boolean("mlp_bias", false);
  c.scale_embeddings = false;
  c.bos_token_id = k.token_id("bos_token_id", 1);
  c.eos_token_id = k.token_id("eos_token_id", 2);
  c.rope_theta = k.rope().theta;
  c.partial_rotary_factor = 1.0;  // llama's default rope init rotates the whole head
  c.validate(where);
  return c;
}

}  // namespace mq

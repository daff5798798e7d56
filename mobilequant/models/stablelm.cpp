// mobilequant/models/stablelm.cpp
// StableLmConfig (transformers/models/stablelm/configuration_stablelm.py) -> ModelConfig.
#include "mobilequant/models/stablelm.h"

#include "mobilequant/core/error.h"
#include "mobilequant/models/hf_config_keys.h"

namespace mq {

ModelConfig stablelm_config_from_hf(const nlohmann::json& config, const std::string& where) {
  const HfConfigKeys k(config, where);
  ModelConfig c;
  c.arch = Arch::kStableLm;
  c.vocab_size = k.integer("vocab_size", 50304);
  c.intermediate_size = k.integer("intermediate_size", 6912);
  c.hidden_size = k.integer("hidden_size", 2560);
  c.num_hidden_layers = k.integer("num_hidden_layers", 32);
  c.num_attention_heads = k.integer("num_attention_heads", 32);
  c.num_key_value_heads = k.integer("num_key_value_heads", 32);
  MQ_CHECK(c.num_attention_heads > 0, where, ": key 'num_attention_heads' must be positive, found ",
           c.num_attention_heads);
  MQ_CHECK(c.hidden_size % c.num_attention_heads == 0, where, ": hidden_size (", c.hidden_size,
           ") must be a multiple of num_attention_heads (", c.num_attention_heads, ")");
  // StableLmAttention always uses hidden/heads; a different head_dim key would desynchronise
  // transformers' own rotary tables from its attention, so it is refused.
  c.head_dim = c.hidden_size / c.num_attention_heads;
  k.require_supported(!k.has("head_dim") || k.integer("head_dim", c.head_dim) == c.head_dim,
                      "head_dim", "stablelm's head width is hidden_size / num_attention_heads = " +
                                      std::to_string(c.head_dim));
  c.hidden_act = parse_activation(k.string("hidden_act", "silu"), where + ": hidden_act");
  c.max_position_embeddings = k.integer("max_position_embeddings", 4096);
  c.norm_eps = k.number("layer_norm_eps", 1e-5);
  c.norm = NormKind::kLayerNorm;
  c.scale_embeddings = false;
  c.tie_word_embeddings = k.boolean("tie_word_embeddings", false);
  c.attention_bias = k.boolean("use_qkv_bias", false);
  c.o_proj_bias = false;
  c.mlp_bias = false;
  k.require_supported(!k.boolean("qk_layernorm", false), "qk_layernorm",
                      "per-head q/k LayerNorm is not implemented");
  k.require_supported(!k.boolean("use_parallel_residual", false), "use_parallel_residual",
                      "only the sequential pre-norm block is implemented");
  c.bos_token_id = k.token_id("bos_token_id", 0);
  c.eos_token_id = k.token_id("eos_token_id", 0);
  const auto rope = k.rope(/*default_partial=*/0.25);
  c.rope_theta = rope.theta;
  c.partial_rotary_factor = rope.partial_rotary_factor.value_or(0.25);
  c.validate(where);
  return c;
}

}  // namespace mq

// mobilequant/models/gemma.cpp
// GemmaConfig (transformers/models/gemma/configuration_gemma.py) -> ModelConfig.
#include "mobilequant/models/gemma.h"

#include "mobilequant/core/error.h"
#include "mobilequant/models/hf_config_keys.h"

namespace mq {

ModelConfig gemma_config_from_hf(const nlohmann::json& config, const std::string& where) {
  const HfConfigKeys k(config, where);
  ModelConfig c;
  c.arch = Arch::kGemma;
  c.vocab_size = k.integer("vocab_size", 256000);
  c.hidden_size = k.integer("hidden_size", 3072);
  c.intermediate_size = k.integer("intermediate_size", 24576);
  c.num_hidden_layers = k.integer("num_hidden_layers", 28);
  c.num_attention_heads = k.integer("num_attention_heads", 16);
  c.num_key_value_heads = k.integer("num_key_value_heads", 16);
  c.head_dim = k.integer("head_dim", 256);
  // GemmaConfig.__post_init__: the released configs say "gelu" but mean the tanh approximation.
  std::string act = k.string("hidden_act", "gelu_pytorch_tanh");
  if (act == "gelu") act = "gelu_pytorch_tanh";
  c.hidden_act = parse_activation(act, where + ": hidden_act");
  c.max_position_embeddings = k.integer("max_position_embeddings", 8192);
  c.norm_eps = k.number("rms_norm_eps", 1e-6);
  c.norm = NormKind::kRmsOnePlus;
  c.scale_embeddings = true;
  c.tie_word_embeddings = k.boolean("tie_word_embeddings", true);
  c.attention_bias = k.boolean("attention_bias", false);
  c.o_proj_bias = c.attention_bias;  // GemmaAttention gives o_proj bias=attention_bias too
  c.mlp_bias = false;
  c.bos_token_id = k.token_id("bos_token_id", 2);
  c.eos_token_id = k.token_id("eos_token_id", 1);
  k.require_supported(!k.has("use_bidirectional_attention") ||
                          !k.boolean("use_bidirectional_attention", false),
                      "use_bidirectional_attention", "only causal attention is implemented");
  c.rope_theta = k.rope().theta;
  c.partial_rotary_factor = 1.0;  // gemma's default rope init rotates the whole head
  c.validate(where);
  return c;
}

}  // namespace mq

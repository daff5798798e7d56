// mobilequant/config/model_config.cpp
#include "mobilequant/config/model_config.h"

#include "mobilequant/core/error.h"

namespace mq {

const char* to_string(Arch arch) {
  switch (arch) {
    case Arch::kLlama: return "llama";
    case Arch::kGemma: return "gemma";
    case Arch::kStableLm: return "stablelm";
  }
  return "?";
}

Arch parse_arch(const std::string& name, const std::string& where) {
  if (name == "llama" || name == "mistral") return Arch::kLlama;
  if (name == "gemma") return Arch::kGemma;
  if (name == "stablelm") return Arch::kStableLm;
  throw make_error(where, ": unsupported architecture '", name,
                   "', expected one of [llama, gemma, stablelm]");
}

const char* to_string(Activation act) {
  switch (act) {
    case Activation::kSilu: return "silu";
    case Activation::kGeluTanh: return "gelu_pytorch_tanh";
    case Activation::kGeluErf: return "gelu";
  }
  return "?";
}

Activation parse_activation(const std::string& name, const std::string& where) {
  if (name == "silu" || name == "swish") return Activation::kSilu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast")
    return Activation::kGeluTanh;
  if (name == "gelu") return Activation::kGeluErf;
  throw make_error(where, ": unsupported activation '", name,
                   "', expected one of [silu, gelu, gelu_pytorch_tanh, gelu_new]");
}

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](int64_t v, const char* key) {
    MQ_CHECK(v > 0, where, ": '", key, "' must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  MQ_CHECK(num_attention_heads % num_key_value_heads == 0, where,
           ": num_attention_heads (", num_attention_heads,
           ") must be a multiple of num_key_value_heads (", num_key_value_heads, ")");
  MQ_CHECK(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0, where,
           ": partial_rotary_factor must be in (0, 1], got ", partial_rotary_factor);
  MQ_CHECK(rotary_dim() % 2 == 0, where, ": rotary dimension head_dim*partial_rotary_factor = ",
           rotary_dim(), " must be even");
  MQ_CHECK(rope_theta > 0.0, where, ": rope_theta must be positive, got ", rope_theta);
  MQ_CHECK(norm_eps > 0.0, where, ": norm eps must be positive, got ", norm_eps);
}

}  // namespace mq

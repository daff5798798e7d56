// mobilequant/models/llama.h
// The llama family as Hugging Face `transformers` (5.x) defines it: LlamaConfig's keys
// and defaults turned into a ModelConfig (RMSNorm, SwiGLU, rotary over the whole head,
// optional q/k/v/o and MLP biases, untied classifier by default). TinyLlama and
// Mistral-style checkpoints load through here.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "mobilequant/config/model_config.h"

namespace mq {

/// ModelConfig of a Hugging Face `model_type: "llama"` config.json (LlamaConfig semantics:
/// head_dim defaults to hidden/heads, num_key_value_heads to the head count, attention_bias
/// covers q/k/v/o). `where` names the file in errors.
ModelConfig llama_config_from_hf(const nlohmann::json& config, const std::string& where);

}  // namespace mq

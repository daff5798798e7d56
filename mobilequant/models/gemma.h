// mobilequant/models/gemma.h
// The gemma (v1) family as Hugging Face `transformers` (5.x) defines it: RMSNorm that
// scales by (1 + w), embeddings multiplied by sqrt(hidden_size), GeGLU with the tanh
// GELU (the legacy config value "gelu" means gelu_pytorch_tanh), head_dim independent of
// hidden/heads (256 in the real models), multi-query attention in Gemma-2B, and the
// classifier tied to the embeddings by default.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "mobilequant/config/model_config.h"

namespace mq {

/// ModelConfig of a Hugging Face `model_type: "gemma"` config.json (GemmaConfig semantics);
/// use_bidirectional_attention=true is rejected as unsupported. `where` names the file.
ModelConfig gemma_config_from_hf(const nlohmann::json& config, const std::string& where);

}  // namespace mq

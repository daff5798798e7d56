// mobilequant/models/stablelm.h
// The stablelm family (StableLM-2, StableLM-3B-4E1T) as Hugging Face `transformers` (5.x)
// defines it: LayerNorm with bias (layer_norm_eps), rotary over the first
// partial_rotary_factor of each head (default 0.25), optional q/k/v bias (use_qkv_bias),
// no o_proj/MLP bias, head_dim = hidden/heads, untied classifier by default. The per-head
// q/k LayerNorm (qk_layernorm) and the parallel residual are not implemented and rejected.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "mobilequant/config/model_config.h"

namespace mq {

/// ModelConfig of a Hugging Face `model_type: "stablelm"` config.json (StableLmConfig
/// semantics); qk_layernorm or use_parallel_residual true is an "unsupported" error.
ModelConfig stablelm_config_from_hf(const nlohmann::json& config, const std::string& where);

}  // namespace mq

// mobilequant/models/hf_export.h
// Writes a model as a Hugging Face directory (config.json + model.safetensors) that
// `transformers` loads: used to hand any checkpoint we read (GGUF, llama2.c) to the
// Python oracles with exactly our weights, and later by `mobilequant export`.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "mobilequant/config/model_config.h"
#include "mobilequant/core/tensor_map.h"

namespace mq {

/// The config.json that makes transformers build the model `cfg` describes; read back by
/// read_hf_checkpoint it gives `cfg` again, field for field. Throws mq::Error naming the field
/// when the family's transformers config cannot express `cfg` (e.g. a llama o_proj bias
/// without q/k/v biases), instead of writing a different model.
nlohmann::json hf_config_json(const ModelConfig& cfg);

/// Writes `dir`/config.json and `dir`/model.safetensors (fp32, HF names). Creates `dir`;
/// each file is written atomically. A tied lm_head.weight is left out, as HF saves it.
void write_hf_directory(const std::string& dir, const ModelConfig& cfg, const TensorMap& tensors);

}  // namespace mq

// mobilequant/models/model_loader.h
// One entry point that turns a path into a ready CausalLm and its tokenizer:
//   - a Hugging Face directory (config.json + model.safetensors or a sharded index),
//   - a GGUF v3 file (*.gguf),
//   - a llama2.c legacy checkpoint (*.bin) with its tokenizer.bin.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "mobilequant/models/checkpoint.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// How to load a model.
struct LoadOptions {
  std::string tokenizer_path;                   ///< overrides the tokenizer found beside the model
  torch::Dtype dtype = torch::kFloat32;         ///< parameter dtype after loading
  torch::Device device = torch::kCPU;           ///< where the parameters live
};

/// A loaded model, in eval mode, with its tokenizer.
struct LoadedModel {
  CausalLm model{nullptr};
  std::shared_ptr<Tokenizer> tokenizer;  ///< null if none was found (then eval needs --tokenizer)
  std::string source;                    ///< the path it came from
  std::string format;                    ///< "hf", "gguf" or "llama2c"
};

/// Reads a checkpoint of any supported format (by path: directory -> hf, .gguf, .bin).
Checkpoint read_checkpoint(const std::string& path, const std::string& tokenizer_path = "");
/// Builds a CausalLm from a checkpoint, checking every tensor's name and shape.
LoadedModel build_model(const Checkpoint& ckpt, const LoadOptions& opts = {});
/// read_checkpoint + build_model.
LoadedModel load_model(const std::string& path, const LoadOptions& opts = {});

// The per-format readers (one file each under models/).
/// Hugging Face directory: config.json + (sharded) safetensors; tokenizer.model if present.
Checkpoint read_hf_checkpoint(const std::string& dir, const std::string& tokenizer_path);
/// GGUF v3: hyperparameters, tensors (dequantized) and tokenizer from the file.
Checkpoint read_gguf_checkpoint(const std::string& path, const std::string& tokenizer_path);
/// llama2.c legacy .bin; tokenizer.bin from tokenizer_path or beside the model.
Checkpoint read_llama2c_checkpoint(const std::string& path, const std::string& tokenizer_path);

}  // namespace mq

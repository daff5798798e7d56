// mobilequant/models/checkpoint.h
// What every checkpoint reader returns: the model's hyperparameters, its tensors
// under Hugging Face names (already in HF's layout: llama2.c's and GGUF's
// interleaved q/k rows are un-permuted by their readers), and its tokenizer.
#pragma once

#include <memory>
#include <string>

#include "mobilequant/config/model_config.h"
#include "mobilequant/core/tensor_map.h"
#include "mobilequant/io/tokenizer.h"

namespace mq {

/// A model as read from disk, before it is turned into a CausalLm.
struct Checkpoint {
  ModelConfig config;                    ///< hyperparameters
  TensorMap tensors;                     ///< HF names -> fp32 tensors, HF layout
  std::shared_ptr<Tokenizer> tokenizer;  ///< null when the checkpoint carries none
  std::string source;                    ///< path, for messages
  std::string format;                    ///< "hf", "gguf" or "llama2c"
};

/// Meta's interleaved rotary row order -> Hugging Face's half-split order, for a q or k
/// weight [n_heads*head_dim, C] (or bias [n_heads*head_dim]); the inverse of the permute
/// that llama.cpp's and llama2.c's converters apply.
torch::Tensor unpermute_rotary_rows(const torch::Tensor& w, int64_t n_heads);

}  // namespace mq

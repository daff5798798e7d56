// mobilequant/config/model_config.h
// The hyperparameters of a decoder-only LLaMA-family model, as one plain struct.
// Every checkpoint reader (Hugging Face config.json, GGUF metadata, llama2.c
// header) fills this struct; the decoder reads nothing else. Field names follow
// Hugging Face `transformers` where one exists.
#pragma once

#include <cstdint>
#include <string>

namespace mq {

/// Model families, one file each under models/ (as `transformers` defines them).
enum class Arch { kLlama, kGemma, kStableLm };

/// Normalisation layer of every block and of the final norm.
enum class NormKind {
  kRms,         ///< x / rms(x) * w                      (llama)
  kRmsOnePlus,  ///< x / rms(x) * (1 + w)                (gemma)
  kLayerNorm,   ///< (x - mean) / std * w + b            (stablelm)
};

/// The activation of the gated MLP: act(gate(x)) * up(x).
enum class Activation {
  kSilu,      ///< SwiGLU (llama, stablelm)
  kGeluTanh,  ///< GeGLU with the tanh approximation (gemma's gelu_pytorch_tanh)
  kGeluErf,   ///< GeGLU with exact erf GELU (gemma's "gelu" config value)
};

/// Returns "llama", "gemma" or "stablelm".
const char* to_string(Arch arch);
/// Parses a Hugging Face `model_type`; throws mq::Error naming `where` and the allowed set.
Arch parse_arch(const std::string& name, const std::string& where);
/// Returns the Hugging Face activation name ("silu", "gelu_pytorch_tanh", "gelu").
const char* to_string(Activation act);
/// Parses a Hugging Face `hidden_act`/`hidden_activation`; throws naming `where` and the allowed set.
Activation parse_activation(const std::string& name, const std::string& where);

/// Hyperparameters of one decoder-only model.
struct ModelConfig {
  Arch arch = Arch::kLlama;               ///< model family
  int64_t vocab_size = 0;                 ///< rows of the embedding and the classifier
  int64_t hidden_size = 0;                ///< residual stream width
  int64_t intermediate_size = 0;          ///< MLP inner width
  int64_t num_hidden_layers = 0;          ///< decoder blocks
  int64_t num_attention_heads = 0;        ///< query heads
  int64_t num_key_value_heads = 0;        ///< key/value heads (GQA/MQA when fewer than query heads)
  int64_t head_dim = 0;                   ///< width of one head (hidden/heads unless the config says)
  int64_t max_position_embeddings = 2048; ///< longest sequence the model was trained for
  double rope_theta = 10000.0;            ///< RoPE base
  double partial_rotary_factor = 1.0;     ///< fraction of head_dim that is rotated (stablelm: 0.25)
  double norm_eps = 1e-5;                 ///< rms_norm_eps / layer_norm_eps
  NormKind norm = NormKind::kRms;         ///< normalisation kind
  Activation hidden_act = Activation::kSilu;  ///< MLP activation
  bool attention_bias = false;            ///< q/k/v projections carry a bias (stablelm: use_qkv_bias)
  bool o_proj_bias = false;               ///< o_proj carries a bias
  bool mlp_bias = false;                  ///< gate/up/down carry biases
  bool tie_word_embeddings = false;       ///< lm_head shares embed_tokens' weight
  bool scale_embeddings = false;          ///< multiply embeddings by sqrt(hidden) (gemma)
  int64_t bos_token_id = 1;               ///< begin-of-sequence id
  int64_t eos_token_id = 2;               ///< end-of-sequence id

  /// Number of rotated dimensions of each head: head_dim * partial_rotary_factor.
  int64_t rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }
  /// Throws mq::Error naming the field if the numbers are inconsistent; `where` names the source.
  void validate(const std::string& where) const;
};

}  // namespace mq
